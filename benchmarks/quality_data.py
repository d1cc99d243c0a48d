"""The corpora, slices and teacher answers of `make bench-quality` (resumable: answers live in DuckDB).

Three corpora that behave like users' data: ``imdb`` (full reviews; pool = train + unsup, never test),
``short`` (the first two sentences of each review, with the review's gold label) and ``short_skew``
(the short train texts subsampled to ~20% positive). Each has a seeded random pool order (budgets are
its prefixes, so a larger budget keeps every smaller budget's answers), a gold probe held out of the pool,
and a fixed balanced (or skewed) test slice. Teacher answers are cached by (model, decoding, prompt).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl

from benchmarks.common import BENCH_VAR, connect_bench, imdb_dir
from llambert.config import PROJECT_ROOT

DB = BENCH_VAR / "quality.duckdb"
_SENT = re.compile(r"(?<=[.!?])\s+")
_TAG = re.compile(r"<br\s*/?>|<[^>]{1,20}>")


def shorten(text: str, n: int = 2) -> str:
    """The first n sentences (markup removed), at least 20 characters when the review has them."""
    parts = _SENT.split(_TAG.sub(" ", text).strip())
    out = " ".join(parts[:n]).strip()
    k = n
    while len(out) < 20 and k < len(parts):
        k += 1
        out = " ".join(parts[:k]).strip()
    return re.sub(r"\s+", " ", out)


@dataclass
class Corpus:
    name: str
    pool: pl.DataFrame  # doc_key, text, gold (nullable): what the teacher may label, in seeded random order
    probe: pl.DataFrame  # doc_key, text, gold: held out of the pool, scores candidates (the product's gold probe)
    test: pl.DataFrame  # doc_key, text, gold: the fixed test slice (never seen by teacher-for-training or student)


def _frame(df: pl.DataFrame, split: str, short: bool) -> pl.DataFrame:
    text = df["text"].map_elements(shorten, return_dtype=pl.Utf8) if short else df["text"]
    return pl.DataFrame(
        {
            "doc_key": [f"{split}:{i}" for i in df["id"].to_list()],
            "text": text,
            "gold": df["label"].cast(pl.Int64) if split != "unsup" else pl.Series([None] * len(df), dtype=pl.Int64),
        }
    )


def _balanced(df: pl.DataFrame, n: int, seed: int, pos_share: float = 0.5) -> pl.DataFrame:
    n_pos = int(round(n * pos_share))
    pos = df.filter(pl.col("gold") == 1).sample(n_pos, seed=seed)
    neg = df.filter(pl.col("gold") == 0).sample(n - n_pos, seed=seed)
    return pl.concat([pos, neg]).sample(fraction=1.0, shuffle=True, seed=seed)


def answer_texts(answers: pl.DataFrame, own: pl.DataFrame | None = None) -> pl.DataFrame:
    """``answers`` (corpus, doc_key, ...) with the text each answer's prompt was built from: the whole review for
    the IMDb corpora (``imdb``, ``imdb-test``), its first sentences for the short ones. An answer is stored once per
    prompt under the first document that asked it, so a review is matched to its answer by text, never by key:
    IMDb repeats reviews across splits, and a short review is the same text in every corpus. ``own``: a corpus's
    frames (doc_key, text, short), used as they are (and alone where the IMDb files are absent)."""
    d = imdb_dir()
    keys = list(set(answers["doc_key"].to_list()))
    parts = [own.select("doc_key", "text", "short")] if own is not None else []
    splits = [split for split in ("train", "test", "unsup") if (d / f"{split}.parquet").exists()]
    if splits:
        raw = pl.concat(
            [
                pl.read_parquet(d / f"{split}.parquet", columns=["id", "text"]).select(
                    doc_key=pl.lit(f"{split}:") + pl.col("id").cast(pl.Utf8), text=pl.col("text")
                )
                for split in splits
            ]
        ).filter(pl.col("doc_key").is_in(keys))
        short = raw.with_columns(text=pl.col("text").map_elements(shorten, return_dtype=pl.Utf8))
        parts += [raw.with_columns(short=pl.lit(False)), short.with_columns(short=pl.lit(True))]
    texts = pl.concat(parts).unique(["short", "doc_key"], keep="first")
    return answers.with_columns(short=~pl.col("corpus").str.starts_with("imdb")).join(texts, on=["short", "doc_key"])


def load_corpus(name: str, test_n: int = 2000, probe_n: int = 500, seed: int = 0) -> Corpus:
    """Build a corpus deterministically from the IMDb parquet files (nothing is copied)."""
    d = imdb_dir()
    short = name != "imdb"
    train = _frame(pl.read_parquet(d / "train.parquet"), "train", short)
    test = _frame(pl.read_parquet(d / "test.parquet"), "test", short)
    if short:
        train = train.filter(pl.col("text").str.len_chars() >= 10)
        test = test.filter(pl.col("text").str.len_chars() >= 10)
    pos_share = 0.2 if name == "short_skew" else 0.5
    probe = _balanced(train, probe_n, seed + 1, pos_share)
    rest = train.filter(~pl.col("doc_key").is_in(probe["doc_key"].implode()))
    if name == "short_skew":
        n_pos = int(rest.filter(pl.col("gold") == 0).height * 0.25)  # 20% positive
        rest = pl.concat([rest.filter(pl.col("gold") == 0), rest.filter(pl.col("gold") == 1).sample(n_pos, seed=seed)])
    if name == "imdb":
        rest = pl.concat([rest, _frame(pl.read_parquet(d / "unsup.parquet"), "unsup", False)])
    if name == "short":
        rest = pl.concat(
            [
                rest,
                _frame(pl.read_parquet(d / "unsup.parquet"), "unsup", True).filter(
                    pl.col("text").str.len_chars() >= 10
                ),
            ]
        )
    order = np.random.default_rng(seed).permutation(rest.height)
    pool = rest[order.tolist()]
    return Corpus(name, pool, probe, _balanced(test, test_n, seed + 2, pos_share))


# -- teacher answers -----------------------------------------------------------------------------
DDL = """
CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE IF NOT EXISTS bench.quality_answers (
    model VARCHAR, decoding VARCHAR, prompt_sha VARCHAR, corpus VARCHAR, doc_key VARCHAR,
    label_probs VARCHAR, raw_text VARCHAR, prompt_tokens INTEGER, seconds DOUBLE, answered_at TIMESTAMP,
    PRIMARY KEY (model, decoding, prompt_sha));
"""


# The teacher's answers travel with the repository (labels and probabilities only, no review text: a few
# hundred KB), so a fresh clone re-runs the students stage without paying the teacher again.
ANSWERS = PROJECT_ROOT / "benchmarks" / "data" / "quality_answers.parquet"


def connect() -> duckdb.DuckDBPyConnection:
    con = connect_bench(DB, DDL)
    if ANSWERS.exists():
        con.execute(f"INSERT OR IGNORE INTO bench.quality_answers SELECT * FROM read_parquet('{ANSWERS}')")
    return con


SELECTIONS = PROJECT_ROOT / "benchmarks" / "data" / "quality_selections.parquet"


def save_selection(budget: int, selection: pl.DataFrame) -> None:
    """The uncertainty rounds the label stage paid for, kept beside the answers: the students stage trains on
    exactly these documents. (Re-deriving them is not enough: the floor's margins differ in the last bits
    between processes and thread counts, so a near-tie at a round's boundary can pick another document, and
    every later round then drifts.)"""
    rows = (
        selection.select("doc_key", "round", "picked_by")
        .with_row_index("pick_order")
        .with_columns(budget=pl.lit(budget, dtype=pl.Int64))
    )
    old = pl.read_parquet(SELECTIONS).filter(pl.col("budget") != budget) if SELECTIONS.exists() else None
    out = rows if old is None else pl.concat([old, rows.select(old.columns)])
    out.sort("budget", "pick_order").write_parquet(SELECTIONS, compression="zstd")


def saved_selection(corpus: Corpus, budget: int) -> pl.DataFrame | None:
    """``save_selection``'s documents for ``budget`` with their text and gold label, in pick order
    (None: none saved)."""
    if not SELECTIONS.exists():
        return None
    sel = pl.read_parquet(SELECTIONS).filter(pl.col("budget") == budget)
    if sel.is_empty():
        return None
    return (
        sel.join(corpus.pool, on="doc_key", how="left", maintain_order="left")
        .sort("pick_order")
        .select(corpus.pool.columns + ["round", "picked_by"])
    )


def export_answers(con: duckdb.DuckDBPyConnection) -> None:
    ANSWERS.parent.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"COPY (SELECT * FROM bench.quality_answers ORDER BY corpus, doc_key) TO '{ANSWERS}' "
        "(FORMAT parquet, COMPRESSION zstd)"
    )


class Teacher:
    """The product's teacher backend (make_teacher) in choice mode, with a resumable answer table."""

    def __init__(self, model: str, con: duckdb.DuckDBPyConnection) -> None:
        from llambert.config import Settings
        from llambert.tasks import load_task

        # What every cached answer was asked with (the whole review up to a 640-token prompt): pinned, so a later
        # change of the product's truncation defaults does not turn the cache into a fresh bill.
        read = {"max_prompt_tokens": 640, "truncation": "head", "max_document_tokens": None}
        self.settings = Settings(teacher={"model": model, "mode": "choice", "batch_size": 1, **read})
        self.task = load_task(self.settings.task)
        self.model_name = model
        self.con = con
        self._backend = None

    @property
    def backend(self):
        if self._backend is None:
            from llambert.teacher import make_teacher

            self._backend = make_teacher(self.settings, self.task)
        return self._backend

    def answers(self, corpus: str, docs: pl.DataFrame, chunk: int = 8, log_every: float = 30.0) -> pl.DataFrame:
        """doc_key -> p_pos (probability of label id 1) for every doc, asking the teacher only what is missing."""
        prompts = self.backend.prepare(docs["text"].to_list())
        sha = [hashlib.sha256(p.encode()).hexdigest() for p in prompts]
        dkey = self.backend.decoding.key()
        ident = self.backend.model_identity
        have = self.con.execute(
            "SELECT prompt_sha FROM bench.quality_answers WHERE model = ? AND decoding = ?", [ident, dkey]
        ).fetchall()
        have = {r[0] for r in have}
        todo = [i for i, s in enumerate(sha) if s not in have]
        t0, last = time.perf_counter(), time.perf_counter()
        keys = docs["doc_key"].to_list()
        for start in range(0, len(todo), chunk):
            idx = todo[start : start + chunk]
            rows = []
            for i in idx:
                t = time.perf_counter()
                a = self.backend.answer([prompts[i]])[0]
                rows.append(
                    (
                        ident,
                        dkey,
                        sha[i],
                        corpus,
                        keys[i],
                        json.dumps(a.label_probs),
                        a.raw_text,
                        a.prompt_tokens,
                        time.perf_counter() - t,
                    )
                )
            self.con.executemany("INSERT OR IGNORE INTO bench.quality_answers VALUES (?,?,?,?,?,?,?,?,?, now())", rows)
            if time.perf_counter() - last > log_every or start + chunk >= len(todo):
                done = min(start + chunk, len(todo))
                rate = done / (time.perf_counter() - t0)
                print(
                    f"[teacher {self.model_name}] {corpus}: {done}/{len(todo)} new answers, {rate:.2f} prompts/s, "
                    f"~{(len(todo) - done) / max(rate, 1e-9) / 60:.1f} min left",
                    flush=True,
                )
                last = time.perf_counter()
        return self.cached(docs)

    def cached(self, docs: pl.DataFrame) -> pl.DataFrame:
        """doc_key -> p_pos and the answer's measured seconds (batch 1), for the cached answers only (both null
        where the teacher was not asked). One prompt rendering and one query, however many columns a caller reads."""
        prompts = self.backend.prepare(docs["text"].to_list())
        sha = [hashlib.sha256(p.encode()).hexdigest() for p in prompts]
        got = self.con.execute(
            "SELECT prompt_sha, label_probs, seconds FROM bench.quality_answers WHERE model = ? AND decoding = ?",
            [self.backend.model_identity, self.backend.decoding.key()],
        ).fetchall()
        by_sha = {r[0]: (r[1], r[2]) for r in got}
        pos_name = self.task.label_by_id(1).name
        p_pos, secs = [], []
        for s in sha:
            probs, seconds = by_sha.get(s, (None, None))
            lp = json.loads(probs) if probs else None
            p_pos.append(None if not lp else float(lp.get(pos_name, 0.0)) / max(sum(lp.values()), 1e-12))
            secs.append(seconds if lp else None)
        return pl.DataFrame(
            {
                "doc_key": docs["doc_key"],
                "p_pos": pl.Series(p_pos, dtype=pl.Float64),
                "seconds": pl.Series(secs, dtype=pl.Float64),
            }
        )

    def labels_of(self, docs: pl.DataFrame) -> dict[str, int]:
        """doc_key -> the teacher's label id (argmax; ties go to the first label, as the students stage reads them)."""
        got = self.answers("imdb", docs)
        return {k: int(p > 0.5) for k, p in zip(got["doc_key"].to_list(), got["p_pos"].to_list()) if p is not None}


def uncertainty_selection(
    corpus: Corpus,
    budget: int,
    label_of,
    round_size: int = 250,
    random_share: float = 0.2,
    score_pool: int = 20000,
    seed: int = 0,
) -> pl.DataFrame:
    """The documents ``sample.strategy: uncertainty`` sends the teacher at ``budget`` (llambert.sampling's rounds).

    ``label_of(docs)`` -> {doc_key: label id} for the teacher's usable answers (the label stage asks the
    teacher; the students stage reads the cache). Returns doc_key, text, gold, round, picked_by in order.
    """
    from llambert.sampling import next_round, plan_round, seed_size

    pool = corpus.pool
    chosen = pool.head(seed_size(budget, "uncertainty", round_size)).with_columns(
        round=pl.lit(0), picked_by=pl.lit("random")
    )
    labels = dict(label_of(chosen))
    r = 1
    while (plan := plan_round(r, chosen.height, budget, round_size, random_share)) is not None:
        # maintain_order: polars joins do not keep row order by default, and the pool's seeded order decides
        # which score_pool documents are scored (the label and students stages must pick the same rounds).
        cand = pool.join(chosen.select("doc_key"), on="doc_key", how="anti", maintain_order="left").head(score_pool)
        if cand.is_empty():
            break
        have = chosen.filter(pl.col("doc_key").is_in(list(labels)))
        picks = next_round(
            have["text"].to_list(),
            [labels[k] for k in have["doc_key"].to_list()],
            [0, 1],
            cand.rename({"doc_key": "doc_id"}),
            plan,
            seed,
        )
        new = (
            cand.join(picks.select(pl.col("doc_id").alias("doc_key"), "picked_by", "pick_order"), on="doc_key")
            .sort("pick_order")
            .drop("pick_order")
            .with_columns(round=pl.lit(r))
        )
        labels |= label_of(new)
        chosen = pl.concat([chosen, new.select(chosen.columns)])
        print(
            f"[uncertainty {corpus.name} {budget}] round {r}: {new.height} picked "
            f"({plan.n_uncertain} least sure, {plan.n_random} random) from {cand.height} scored",
            flush=True,
        )
        r += 1
    return chosen
