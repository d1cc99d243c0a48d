"""New reviews arrive as files in an inbox folder; each distinct file becomes a batch (partition).

Why the layout below: a partition must be re-readable long after it arrived (re-runs, backfills),
and deciding "have we seen this file?" must not need the DuckDB warehouse, which allows a single
writing process (the runs) -- so the sensor keeps its registry on the file system:

    <inbox>/review_drop.parquet                 waiting (the sensor takes it once it stops changing)
    <inbox>/.batches/<partition>/<file>         claimed: moved here, never changed again
    <inbox>/.batches/<partition>/manifest.json  sha256, original name, size, when it was claimed
    <inbox>/.duplicates/<time>-<file>           same bytes as a claimed file: nothing to do

The partition key is ``<file stem>-<first 12 hex of sha256>``: stable (the same file always maps
to the same key), readable in the UI, and a valid Dagster partition key. Identical bytes under
another name are a duplicate; other files that repeat known texts become a batch whose
raw.corpus share is only the texts that are new (doc_id = md5(text)). The ingest run then records
the batch in ``raw.inbox_files`` (see :func:`register_batch`).

Nothing here imports Dagster: the sensor (``dagster_project/sensors.py``) and
``llambert ingest --now`` both call :func:`scan_inbox` / :func:`claim_file`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

from llambert.config import CorpusSource, Settings
from llambert.results import InboxBatchResult
from llambert.warehouse import run_model

INBOX_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
BATCHES_DIR = ".batches"
DUPLICATES_DIR = ".duplicates"
MANIFEST = "manifest.json"
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


class InboxError(ValueError):
    """An inbox file or batch cannot be used; the message names it and says what to do."""


@dataclass
class InboxBatch:
    """One claimed inbox file: the partition it became and where its bytes now live."""

    partition: str
    file_name: str
    sha256: str
    bytes: int
    stored_path: str
    original_path: str
    detected_at: str


@dataclass
class ScanResult:
    """What one look at the inbox found."""

    claimed: list[InboxBatch] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (file name, partition it repeats)
    waiting: list[str] = field(default_factory=list)  # still changing, or over max_files_per_tick
    ignored: list[str] = field(default_factory=list)  # not a parquet / CSV / JSONL file
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file name, why): e.g. gzip bytes named .csv


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def partition_key(file_name: str, sha256: str) -> str:
    """``reviews 2024-05.csv`` + hash -> ``reviews_2024-05-1a2b3c4d5e6f`` (stable, Dagster-valid)."""
    stem = _KEY_CHARS.sub("_", Path(file_name).stem).strip("_-")[:40] or "file"
    return f"{stem}-{sha256[:12]}"


def batches_dir(settings: Settings) -> Path:
    return settings.inbox_dir / BATCHES_DIR


def is_inbox_file(path: Path) -> bool:
    """Files the sensor takes: visible, regular, and of a format the readers know."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in INBOX_FORMATS


def read_manifest(settings: Settings, batch: str) -> InboxBatch:
    folder = batches_dir(settings) / batch
    manifest = folder / MANIFEST
    if not manifest.exists():
        raise InboxError(
            f"batch '{batch}': no {manifest}. Batches other than 'initial' come through the inbox "
            f"({settings.inbox_dir}); drop the file there or run `llambert ingest FILE --now`."
        )
    return InboxBatch(**json.loads(manifest.read_text()))


def known_batches(settings: Settings) -> dict[str, InboxBatch]:
    """Every claimed file by content hash (the sensor's registry)."""
    out: dict[str, InboxBatch] = {}
    root = batches_dir(settings)
    if root.is_dir():
        for manifest in sorted(root.glob(f"*/{MANIFEST}")):
            b = InboxBatch(**json.loads(manifest.read_text()))
            out.setdefault(b.sha256, b)
    return out


def _source_for(settings: Settings, path: Path) -> CorpusSource:
    """How an inbox file is read: the ``inbox`` settings (columns, split), its format from its extension."""
    cfg = settings.inbox
    return CorpusSource(
        name="inbox",
        path=str(path),
        format=INBOX_FORMATS.get(path.suffix.lower(), "auto"),
        split=cfg.split,
        text_column=cfg.text_column,
        id_column=cfg.id_column,
        label_column=cfg.label_column,
    )


def inbox_source(settings: Settings, batch: str) -> tuple[CorpusSource, Path]:
    """The file behind a batch and how to read it (``pipeline.batch_sources`` calls this)."""
    b = read_manifest(settings, batch)
    path = batches_dir(settings) / batch / b.file_name  # not b.stored_path: the home folder may have moved
    if not path.exists():
        raise InboxError(f"batch '{batch}': its file {path} is gone; restore it to re-run the batch")
    return _source_for(settings, path), path


_held_locks = threading.local()


@contextlib.contextmanager
def inbox_lock(settings: Settings) -> Iterator[None]:
    """One claimer at a time (the sensor and `llambert ingest --now` may race for a file).

    Re-entrant within a thread, so a caller can hold it across a claim and what must go with it:
    ``llambert ingest --now`` adds the claimed file's partition before the sensor can look, and the
    sensor decides which claimed batches lack a partition while it holds the lock.
    """
    settings.inbox_dir.mkdir(parents=True, exist_ok=True)
    key = str(settings.inbox_dir.resolve())
    held = getattr(_held_locks, "depth", None)
    if held is None:
        held = _held_locks.depth = {}
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    with open(settings.inbox_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        held[key] = 1
        try:
            yield
        finally:
            held[key] = 0
            fcntl.flock(f, fcntl.LOCK_UN)


def _now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _claim(settings: Settings, path: Path, move: bool, known: dict[str, InboxBatch]) -> tuple[InboxBatch, bool]:
    digest = file_sha256(path)
    if digest in known:
        if move:
            dup = settings.inbox_dir / DUPLICATES_DIR
            dup.mkdir(parents=True, exist_ok=True)
            os.replace(path, dup / f"{time.strftime('%Y%m%dT%H%M%S')}-{path.name}")
        return known[digest], False
    key = partition_key(path.name, digest)
    root = batches_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    staging = root / f".{key}.{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    target = staging / path.name
    if move:
        try:
            os.replace(path, target)  # atomic on one file system
        except OSError:
            shutil.copy2(path, target)
            path.unlink()
    else:
        shutil.copy2(path, target)
    batch = InboxBatch(
        partition=key,
        file_name=path.name,
        sha256=digest,
        bytes=target.stat().st_size,
        stored_path=str((final / path.name).resolve()),
        original_path=str(path.resolve()),
        detected_at=_now(),
    )
    (staging / MANIFEST).write_text(json.dumps(asdict(batch), indent=2))
    os.replace(staging, final)  # the batch appears whole, or not at all
    known[digest] = batch
    return batch, True


def inbox_file_problem(settings: Settings, path: Path) -> str | None:
    """Why ``path`` cannot be a batch at all, or None: only what makes the whole file unusable.

    The file type (gzip bytes named .csv), a parquet footer that cannot be read, a CSV header that
    repeats a column the inbox reads, no text column. Nothing here parses rows: invalid UTF-8,
    ragged rows, an unbalanced quote, a garbage JSON line or a value of the wrong type are the
    rows' problems, which the batch's reader rejects into raw.rejected one by one (the same
    quarantine as the initial corpus). See :func:`llambert.corpus.readers.preflight`.
    """
    from llambert.corpus.readers import ReaderError, preflight

    source = _source_for(settings, path)
    try:
        columns = preflight(source, path)
    except ReaderError as e:
        return str(e).removeprefix(f"{path}: ")
    if columns is not None and source.text_column not in columns:
        return f"no text column '{source.text_column}' (columns: {columns}); set inbox.text_column in llambert.yaml"
    return None


def check_inbox_file(settings: Settings, path: str | Path) -> None:
    """Fail early, naming the file and the setting, if ``path`` cannot be a batch (see :func:`inbox_file_problem`)."""
    path = Path(path)
    if path.is_dir():
        raise InboxError(f"{path}: is a directory, not a file; name the parquet/CSV/JSONL files in it")
    if not path.exists():
        raise InboxError(f"{path}: no such file")
    if not path.is_file():
        raise InboxError(f"{path}: not a regular file (a pipe or a device?); copy the data into a file")
    if INBOX_FORMATS.get(path.suffix.lower()) is None:
        raise InboxError(f"{path}: unsupported file type '{path.suffix}'; use .parquet, .csv or .jsonl")
    problem = inbox_file_problem(settings, path)
    if problem:
        raise InboxError(f"{path}: {problem}")


def claim_file(settings: Settings, path: str | Path, move: bool = False) -> tuple[InboxBatch, bool]:
    """Make ``path`` a batch (copied, or moved with ``move``); returns (batch, is_new).

    A file whose bytes were claimed before returns that earlier batch and ``False``.
    """
    path = Path(path)
    check_inbox_file(settings, path)
    with inbox_lock(settings):
        return _claim(settings, path, move, known_batches(settings))


def queue_file(settings: Settings, path: str | Path) -> Path:
    """Copy ``path`` into the inbox for the sensor, atomically (it never sees half a file)."""
    path = Path(path)
    check_inbox_file(settings, path)
    settings.inbox_dir.mkdir(parents=True, exist_ok=True)
    target = settings.inbox_dir / path.name
    if target.exists():
        raise InboxError(f"{target} is already waiting in the inbox; rename your file or wait for the sensor")
    tmp = settings.inbox_dir / f".{path.name}.{uuid.uuid4().hex[:8]}.part"
    shutil.copy2(path, tmp)
    os.utime(tmp)  # settle time counts from the copy, not from the original's mtime
    os.replace(tmp, target)
    return target


def pending_files(settings: Settings) -> list[Path]:
    """Files waiting in the inbox for the sensor."""
    d = settings.inbox_dir
    return sorted(p for p in d.iterdir() if is_inbox_file(p)) if d.is_dir() else []


def scan_inbox(settings: Settings, now: float | None = None) -> ScanResult:
    """Claim every settled new file in the inbox (the sensor's work, without Dagster)."""
    now = time.time() if now is None else now
    cfg = settings.inbox
    result = ScanResult()
    d = settings.inbox_dir
    if not d.is_dir():
        return result
    with inbox_lock(settings):
        known = known_batches(settings)
        for p in sorted(d.iterdir(), key=lambda q: q.name):
            if p.name.startswith(".") or not p.is_file():
                continue
            if p.suffix.lower() not in INBOX_FORMATS:
                result.ignored.append(p.name)
                continue
            try:
                st = p.stat()
            except FileNotFoundError:  # taken meanwhile
                continue
            if now - st.st_mtime < cfg.settle_seconds or len(result.claimed) >= cfg.max_files_per_tick:
                result.waiting.append(p.name)
                continue
            problem = inbox_file_problem(settings, p)  # left in the inbox: no batch, no partition, no failing run
            if problem:
                result.refused.append((p.name, problem))
                continue
            batch, new = _claim(settings, p, move=True, known=known)
            if new:
                result.claimed.append(batch)
            else:
                result.duplicates.append((p.name, batch.partition))
    return result


def register_batch(con: duckdb.DuckDBPyConnection, settings: Settings, batch: str) -> InboxBatchResult:
    """Record an ingested inbox batch in raw.inbox_files (replacing its row on a re-run)."""
    b = read_manifest(settings, batch)
    manifest = pl.DataFrame(
        [
            {
                "batch": batch,
                "file_sha256": b.sha256,
                "file_name": b.file_name,
                "stored_path": b.stored_path,
                "bytes": b.bytes,
                "detected_at": b.detected_at,
            }
        ],
        schema={
            "batch": pl.Utf8,
            "file_sha256": pl.Utf8,
            "file_name": pl.Utf8,
            "stored_path": pl.Utf8,
            "bytes": pl.Int64,
            "detected_at": pl.Utf8,
        },
    )
    run_model(con, "raw.inbox_files", frames={"staged_inbox_file": manifest}, atomic=False)
    input_rows, rejected, new_docs, known_docs = con.execute(
        "SELECT input_rows, rejected_rows, new_documents, known_documents FROM raw.inbox_files WHERE batch = ?", [batch]
    ).fetchone()
    return InboxBatchResult(
        batch=batch,
        file=b.file_name,
        sha256=b.sha256,
        input_rows=input_rows,
        rejected_rows=rejected,
        new_documents=new_docs,
        known_documents=known_docs,
    )


def unfinished_batches(
    con: duckdb.DuckDBPyConnection, settings: Settings, batches: Iterable[str] | None = None
) -> dict[str, str]:
    """Claimed inbox batches whose last run did not get through ingesting and labeling: {batch: why}.

    Decided from what the runs write: ``ingest_batch`` records an 'ingest' row in ops.stage_runs,
    the raw.inbox_files asset then the batch's row, and ``predict_batch`` a 'predict' row. A batch
    with no raw.inbox_files row or no 'ingest' row never got through ingesting; one whose latest
    'predict' is older than its latest 'ingest' stopped before its documents were labeled. Either
    its run was killed or failed, or it is still going (the warehouse cannot tell; Dagster can).
    ``batches`` defaults to every claimed batch (the inbox's manifests).
    """
    wanted = sorted(b.partition for b in known_batches(settings).values()) if batches is None else sorted(batches)
    if not wanted:
        return {}
    rows = con.execute(
        """SELECT c.batch, f.batch IS NOT NULL,
                  max(s.finished_at) FILTER (WHERE s.stage = 'ingest'),
                  max(s.finished_at) FILTER (WHERE s.stage = 'predict')
           FROM (SELECT unnest(?::VARCHAR[]) AS batch) c
           LEFT JOIN raw.inbox_files f USING (batch)
           LEFT JOIN ops.stage_runs s ON s.partition = c.batch
           GROUP BY ALL""",
        [wanted],
    ).fetchall()
    out = {}
    for batch, registered, ingested, predicted in rows:
        if not registered or ingested is None:
            out[batch] = "not ingested"
        elif predicted is None or predicted < ingested:
            out[batch] = "ingested, not labeled by the champion"
    return dict(sorted(out.items()))
