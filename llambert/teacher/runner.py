"""Labeling a set of documents with a teacher: never pay twice, survive a crash, account for it.

Each answer is stored in ``labeling.llm_cache`` under a key made of the model identity (with a
weights hash), the decoding parameters and the rendered prompt. Only documents whose key is
missing are sent to the model, in length-sorted batches, and answers are committed every
``commit_every`` documents: a run killed mid-way loses at most one uncommitted batch, and the
next run starts where it stopped. When the backend raises, the answers already received are
committed first (the buffer, and the failed batch's answers that a backend attaches to its error
as ``partial_answers``, aligned with the prompts, ``None`` where there is none), then the error
propagates: an answer paid for is never asked for again.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb
import polars as pl

from llambert.progress import progress
from llambert.teacher.base import TeacherBackend, cache_key, sha256
from llambert.warehouse import transaction


@dataclass
class TeacherRunStats:
    run_id: str
    requested: int
    cached: int
    prompts: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float

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
    con.register("staged_requests", keys.drop("prepared"))
    con.execute("INSERT OR IGNORE INTO labeling.llm_requests SELECT * FROM staged_requests")
    con.unregister("staged_requests")
    return keys


def label_documents(
    con: duckdb.DuckDBPyConnection,
    backend: TeacherBackend,
    docs: pl.DataFrame,
    prompt_version: str,
    batch_size: int = 8,
    commit_every: int = 32,
    run_id: str | None = None,
    show_progress: bool = True,
) -> TeacherRunStats:
    """Make sure every document in ``docs`` has a cached answer; ask the model only for the rest."""
    run_id = run_id or uuid.uuid4().hex[:12]
    started = datetime.now(timezone.utc).replace(tzinfo=None)
    t0 = time.perf_counter()
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
    prompt_tok = completion_tok = 0
    done = 0
    buffer: list[dict] = []
    decoding = backend.decoding.key()
    mode = backend.decoding.mode
    with progress(total=todo.height, desc=f"teacher {backend.name}/{mode}", unit="prompt") as bar:
        for start in range(0, todo.height, batch_size):
            chunk = todo.slice(start, batch_size)
            try:
                answers = backend.answer(chunk["prepared"].to_list())
            except BaseException as e:
                partial = getattr(e, "partial_answers", None) or []
                buffer.extend(
                    _row(backend, mode, decoding, run_id, key, p_hash, ans)
                    for key, p_hash, ans in zip(chunk["cache_key"], chunk["prompt_hash"], partial)
                    if ans is not None
                )
                if buffer:
                    _commit(con, buffer)
                raise
            for key, p_hash, ans in zip(chunk["cache_key"], chunk["prompt_hash"], answers):
                buffer.append(_row(backend, mode, decoding, run_id, key, p_hash, ans))
                prompt_tok += ans.prompt_tokens
                completion_tok += ans.completion_tokens
            done += len(answers)
            bar.update(len(answers))
            if len(buffer) >= commit_every:
                _commit(con, buffer)
                buffer = []
        if buffer:
            _commit(con, buffer)
    stats = TeacherRunStats(
        run_id=run_id,
        requested=keys.height,
        cached=keys.height - todo.height,
        prompts=done,
        prompt_tokens=prompt_tok,
        completion_tokens=completion_tok,
        seconds=time.perf_counter() - t0,
    )
    con.execute(
        "INSERT INTO labeling.llm_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, current_timestamp)",
        [
            run_id, backend.model_identity, backend.name, mode, stats.requested, stats.cached, stats.prompts,
            stats.prompt_tokens, stats.completion_tokens, stats.seconds, stats.prompts_per_s, started,
        ],
    )
    return stats


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


def _commit(con: duckdb.DuckDBPyConnection, rows: list[dict]) -> None:
    """One transaction per batch: a crash loses at most this batch, never half of it."""
    frame = _frame([dict(r) for r in rows])
    con.register("staged_answers", frame)
    try:
        with transaction(con):
            con.execute(
                """INSERT OR IGNORE INTO labeling.llm_cache
                   (cache_key, model_identity, backend, mode, decoding, prompt_hash, raw_text, label_probs,
                    prompt_tokens, completion_tokens, latency_s, run_id)
                   SELECT cache_key, model_identity, backend, mode, decoding, prompt_hash, raw_text,
                          CASE WHEN probs_keys IS NULL THEN NULL ELSE map(probs_keys, probs_values) END,
                          prompt_tokens, completion_tokens, latency_s, run_id
                   FROM staged_answers"""
            )
    finally:
        con.unregister("staged_answers")


def _frame(rows: list[dict]) -> pl.DataFrame:
    probs = [r.pop("label_probs") for r in rows]
    frame = pl.DataFrame(rows, infer_schema_length=None)
    return frame.with_columns(
        probs_keys=pl.Series([list(p) if p else None for p in probs], dtype=pl.List(pl.Utf8)),
        probs_values=pl.Series([list(p.values()) if p else None for p in probs], dtype=pl.List(pl.Float64)),
    )
