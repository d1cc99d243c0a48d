"""Labeling a set of documents with a teacher: never pay twice, survive a crash, account for it.

Each answer is stored in ``labeling.llm_cache`` under a key made of the model identity (with a
weights hash), the decoding parameters and the rendered prompt. Only documents whose key is
missing are sent to the model, in length-sorted batches, and answers are committed every
``commit_every`` documents: a run killed mid-way loses at most one uncommitted batch, and the
next run starts where it stopped. In the pipeline the write connection is opened for each commit
and closed before the model is asked (``llambert.warehouse.Warehouse``), so `llambert sql` and
`llambert status` can read the warehouse while the teacher works. When the backend raises, the answers already received are
committed first (the buffer, and the failed batch's answers that a backend attaches to its error
as ``partial_answers``, aligned with the prompts, ``None`` where there is none), then the error
propagates: an answer paid for is never asked for again.

Every run is accounted in ``labeling.llm_runs``, killed ones included: its row is written when the
run starts (status 'running'), and before each batch is sent one transaction commits the answers
due and the run's counts with that batch already counted as asked. After a kill -9 the row says how
many prompts were asked (a batch lost in flight included), how many answers were kept and the tokens
of every answer received; the next run marks it 'killed'. A run that raises ends 'failed'.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

from llambert.progress import progress
from llambert.teacher.base import TeacherBackend, cache_key, sha256
from llambert.warehouse import Warehouse, run_model, sessions, transaction


@dataclass
class TeacherRunStats:
    run_id: str
    requested: int
    cached: int
    prompts: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    role: str = "teacher"

    @property
    def prompts_per_s(self) -> float | None:
        return self.prompts / self.seconds if self.seconds > 0 and self.prompts else None


def register_requests(
    con: duckdb.DuckDBPyConnection,
    backend: TeacherBackend,
    docs: pl.DataFrame,
    prompt_version: str,
) -> pl.DataFrame:
    """Render prompts for ``docs`` (doc_id, text) and record their cache keys; returns the keys."""
    prepared = backend.prepare(docs["text"].to_list())
    decoding = backend.decoding.key()
    keys = pl.DataFrame(
        {
            "doc_id": docs["doc_id"],
            "cache_key": [cache_key(backend.model_identity, decoding, p) for p in prepared],
            "model_identity": backend.model_identity,
            "prompt_version": prompt_version,
            "prompt_hash": [sha256(p)[:16] for p in prepared],
            "decoding": decoding,
            "prepared": prepared,
        }
    )
    run_model(con, "labeling.llm_requests", frames={"staged_requests": keys.drop("prepared")}, atomic=False)
    return keys


def label_documents(
    con: duckdb.DuckDBPyConnection | Warehouse,
    backend: TeacherBackend,
    docs: pl.DataFrame,
    prompt_version: str,
    batch_size: int = 8,
    commit_every: int = 32,
    run_id: str | None = None,
    show_progress: bool = True,
    role: str = "teacher",
    cascade_threshold: float | None = None,
) -> TeacherRunStats:
    """Make sure every document in ``docs`` has a cached answer; ask the model only for the rest.

    ``con`` is a :class:`~llambert.warehouse.Warehouse` (the pipeline: a write connection is open only
    while a batch's intent and the answers due are committed, never while the model thinks, so readers
    get in between) or an open connection (held throughout). ``role`` ('teacher' or 'cascade_small') and
    ``cascade_threshold`` are recorded in the run's labeling.llm_runs row (a cascade runs both models).
    """
    session = sessions(con)
    run_id = run_id or uuid.uuid4().hex[:12]
    started = datetime.now(UTC).replace(tzinfo=None)
    t0 = time.perf_counter()
    with session() as c:
        todo, acct = _plan(c, backend, docs, prompt_version, run_id, started, t0, role, cascade_threshold)
    decoding = backend.decoding.key()
    mode = backend.decoding.mode
    buffer: list[dict] = []
    try:
        with progress(
            total=todo.height,
            desc=f"teacher {backend.name}/{mode}",
            unit="prompt",
            weights=todo["_len"].to_list(),
            weight_unit="prompt chars",
        ) as bar:
            for start in range(0, todo.height, batch_size):
                chunk = todo.slice(start, batch_size)
                # Commit the intent before sending: the answers due and this batch counted as asked.
                due = buffer if len(buffer) >= commit_every else []
                acct.asked += chunk.height
                with session() as c:
                    _commit(c, due, acct)
                if due:
                    buffer = []
                try:  # no connection is open while the model works
                    answers = backend.answer(chunk["prepared"].to_list())
                except BaseException as e:
                    partial = getattr(e, "partial_answers", None) or []
                    for key, p_hash, ans in zip(chunk["cache_key"], chunk["prompt_hash"], partial):
                        if ans is not None:
                            buffer.append(_row(backend, mode, decoding, run_id, key, p_hash, ans))
                            acct.received(ans)
                    raise
                for key, p_hash, ans in zip(chunk["cache_key"], chunk["prompt_hash"], answers):
                    buffer.append(_row(backend, mode, decoding, run_id, key, p_hash, ans))
                    acct.received(ans)
                bar.update(len(answers), weight=sum(chunk["_len"].to_list()[: len(answers)]))
    except BaseException as e:
        _ACTIVE_RUNS.discard(run_id)
        acct.status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        with session() as c:
            _commit(c, buffer, acct)  # answers already received are never asked for again
        raise
    _ACTIVE_RUNS.discard(run_id)
    acct.status = "done"
    with session() as c:
        _commit(c, buffer, acct)
    return TeacherRunStats(
        run_id=run_id,
        requested=acct.requested,
        cached=acct.cached,
        prompts=acct.asked,
        prompt_tokens=acct.prompt_tokens,
        completion_tokens=acct.completion_tokens,
        seconds=acct.seconds,
        role=role,
    )


def _plan(
    con: duckdb.DuckDBPyConnection,
    backend: TeacherBackend,
    docs: pl.DataFrame,
    prompt_version: str,
    run_id: str,
    started: datetime,
    t0: float,
    role: str = "teacher",
    cascade_threshold: float | None = None,
) -> tuple[pl.DataFrame, _RunAccount]:
    """Record the requests, find the ones without a cached answer (longest first) and write the run's row."""
    mark_dead_runs(con)
    keys = register_requests(con, backend, docs, prompt_version)
    # Flush the WAL before the long part: DuckDB 1.5.6 cannot replay a WAL that holds the views
    # created when the warehouse was opened ("GetDefaultDatabase with no default database set"),
    # so a kill -9 during labeling would leave a warehouse that no longer opens. After this, the
    # WAL holds only committed answer batches, which replay fine.
    try:
        con.execute("CHECKPOINT")
    except duckdb.Error:  # another transaction in this process is open: carry on without it
        pass
    con.register("staged_keys", keys.select("cache_key"))
    have = set(
        r[0]
        for r in con.execute(
            "SELECT cache_key FROM labeling.llm_cache WHERE cache_key IN (SELECT cache_key FROM staged_keys)"
        ).fetchall()
    )
    con.unregister("staged_keys")
    todo = keys.filter(~pl.col("cache_key").is_in(list(have))).unique("cache_key", keep="first")
    # Length-sorted: batches of similar length waste little compute on padding.
    todo = todo.with_columns(_len=pl.col("prepared").str.len_bytes()).sort("_len", descending=True)
    acct = _RunAccount(run_id, requested=keys.height, cached=keys.height - todo.height, t0=t0)
    start = pl.DataFrame(
        [
            {
                "run_id": run_id,
                "model_identity": backend.model_identity,
                "backend": backend.name,
                "mode": backend.decoding.mode,
                "requested": acct.requested,
                "cached": acct.cached,
                "started_at": started,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "role": role,
                "cascade_threshold": cascade_threshold,
            }
        ],
        schema={
            "run_id": pl.Utf8,
            "model_identity": pl.Utf8,
            "backend": pl.Utf8,
            "mode": pl.Utf8,
            "requested": pl.Int64,
            "cached": pl.Int64,
            "started_at": pl.Datetime("us"),
            "pid": pl.Int64,
            "host": pl.Utf8,
            "role": pl.Utf8,
            "cascade_threshold": pl.Float64,
        },
    )
    run_model(con, "labeling.llm_runs", frames={"staged_llm_run": start}, atomic=False)
    _ACTIVE_RUNS.add(run_id)
    return todo, acct


# Runs in progress in this process. A run holds the write lock only while it commits, so another process
# may open the warehouse mid-run: a 'running' row is dead when its process is (same host, pid gone or a
# zombie), or when it is this process's and not one of these. A row from another host is taken for dead
# (a DuckDB file is written from one machine).
_ACTIVE_RUNS: set[str] = set()


def _alive(pid: int | None, host: str | None) -> bool:
    if pid is None or host != socket.gethostname():
        return False
    if pid == os.getpid():
        return False  # this process: alive only if active (checked by run_id)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def mark_dead_runs(con: duckdb.DuckDBPyConnection) -> int:
    """Mark 'running' rows of dead processes 'killed'; returns how many."""
    rows = con.execute("SELECT run_id, pid, host FROM labeling.llm_runs WHERE status = 'running'").fetchall()
    dead = [r for r, pid, host in rows if r not in _ACTIVE_RUNS and not _alive(pid, host)]
    if dead:
        run_model(con, "labeling.llm_runs", {"dead_runs": dead}, section="killed", atomic=False)
    return len(dead)


@dataclass
class _RunAccount:
    """A run's figures as they are committed to its labeling.llm_runs row."""

    run_id: str
    requested: int
    cached: int
    t0: float
    asked: int = 0
    answered: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    status: str = "running"
    _received: int = 0

    def received(self, ans) -> None:
        self._received += 1
        self.prompt_tokens += ans.prompt_tokens
        self.completion_tokens += ans.completion_tokens


def _row(backend: TeacherBackend, mode: str, decoding: str, run_id: str, key: str, p_hash: str, ans) -> dict:
    return {
        "cache_key": key,
        "model_identity": backend.model_identity,
        "backend": backend.name,
        "mode": mode,
        "decoding": decoding,
        "prompt_hash": p_hash,
        "raw_text": ans.raw_text,
        "label_probs": ans.label_probs,
        "prompt_tokens": ans.prompt_tokens,
        "completion_tokens": ans.completion_tokens,
        "latency_s": ans.latency_s,
        "run_id": run_id,
    }


def _commit(con: duckdb.DuckDBPyConnection, rows: list[dict], acct: _RunAccount) -> None:
    """One transaction: these answers (all or none) and the run's row, so the row never counts an answer
    that was lost, nor misses a prompt that was sent."""
    acct.seconds = time.perf_counter() - acct.t0
    answered = acct.answered + len(rows)
    progress_row = pl.DataFrame(
        [
            {
                "run_id": acct.run_id,
                "prompts": acct.asked,
                "answered": answered,
                "prompt_tokens": acct.prompt_tokens,
                "completion_tokens": acct.completion_tokens,
                "seconds": acct.seconds,
                "prompts_per_s": acct._received / acct.seconds if acct.seconds > 0 and acct._received else None,
                "status": acct.status,
            }
        ],
        schema={
            "run_id": pl.Utf8,
            "prompts": pl.Int64,
            "answered": pl.Int64,
            "prompt_tokens": pl.Int64,
            "completion_tokens": pl.Int64,
            "seconds": pl.Float64,
            "prompts_per_s": pl.Float64,
            "status": pl.Utf8,
        },
    )
    with transaction(con):
        if rows:
            run_model(
                con, "labeling.llm_cache", frames={"staged_answers": _frame([dict(r) for r in rows])}, atomic=False
            )
        run_model(con, "labeling.llm_runs", section="progress", frames={"staged_llm_run": progress_row}, atomic=False)
    acct.answered = answered


def _frame(rows: list[dict]) -> pl.DataFrame:
    probs = [r.pop("label_probs") for r in rows]
    frame = pl.DataFrame(rows, infer_schema_length=None)
    return frame.with_columns(
        probs_keys=pl.Series([list(p) if p else None for p in probs], dtype=pl.List(pl.Utf8)),
        probs_values=pl.Series([list(p.values()) if p else None for p in probs], dtype=pl.List(pl.Float64)),
    )
