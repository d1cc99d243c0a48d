"""The students of one bench run scored on IMDb test reviews that no earlier figure used.

Why: the champion rule and the choice among candidates were argued from the fixed 2,000-review test slice; a
claim drawn from those reviews (e.g. "an ensemble is at least as good as its encoder") has to be checked on
reviews that did not suggest it. The fresh set is every IMDb test review outside that slice whose text is not in
the run's pool (train and unlabeled reviews: a few test reviews repeat there), about 23,000. Nothing is
retrained: each base checkpoint of ``--fresh-tag`` (encoder, linear, distilled encoder) reads every fresh review
once, and each ensemble folder is scored from its members' cached log-probabilities through the product's own
``EnsembleStudent`` (weights, temperatures and routing exactly as saved). Writes ``bench.quality_fresh`` (one
row per candidate and review) and ``bench.quality_fresh_summary`` (exported to
benchmarks/data/quality_fresh.parquet), and prints a markdown table with paired differences.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.common import imdb_dir, logger
from benchmarks.quality_data import _frame, load_corpus
from benchmarks.quality_students import CKPT, RUN_ID, connect
from llambert.config import PROJECT_ROOT

log = logger("bench-quality")
FRESH_EXPORT = PROJECT_ROOT / "benchmarks" / "data" / "quality_fresh.parquet"
FRESH_DDL = """
CREATE TABLE IF NOT EXISTS bench.quality_fresh (
    run_id VARCHAR, tag VARCHAR, candidate VARCHAR, doc_key VARCHAR, gold INTEGER, label INTEGER, p_top DOUBLE);
CREATE TABLE IF NOT EXISTS bench.quality_fresh_summary (
    run_id VARCHAR, measured_at TIMESTAMP DEFAULT current_timestamp, tag VARCHAR, candidate VARCHAR, n INTEGER,
    accuracy DOUBLE, macro_f1 DOUBLE, share_positive DOUBLE, docs_per_s DOUBLE, load_1m DOUBLE);
"""


def fresh_reviews(corpus_name: str = "imdb", seed: int = 0) -> pl.DataFrame:
    """IMDb test reviews outside the corpus's 2,000 test slice and not repeated in its pool (by text)."""
    corpus = load_corpus(corpus_name, seed=seed)
    test = _frame(pl.read_parquet(imdb_dir() / "test.parquet"), "test", corpus_name != "imdb")
    used = set(corpus.test["doc_key"].to_list())
    pooled = set(corpus.pool["text"].to_list()) | set(corpus.probe["text"].to_list())
    return test.filter(~pl.col("doc_key").is_in(list(used)) & ~pl.col("text").is_in(list(pooled)))


class _Cached:
    """A member whose log-probabilities were computed once for every fresh review, looked up by text."""

    def __init__(self, label_ids: list[int], rows: dict[str, np.ndarray]) -> None:
        self.label_ids = label_ids
        self.rows = rows

    def log_probs(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.rows[t] for t in texts])


class FolderScorer:
    """Checkpoint folders scored on one fixed list of texts, each base model reading every text once: an
    ensemble is scored from its members' cached log-probabilities through the product's own ``EnsembleStudent``
    (weights, temperatures and routing exactly as saved)."""

    def __init__(self, texts: list[str], what: str = "fresh", cfg=None) -> None:
        """``cfg``: the StudentConfig whose infer_max_length, infer_batch_size and truncation the folders are read
        with (default: today's defaults, what the bench trains with)."""
        from llambert.config import StudentConfig

        self.texts, self.what, self.cfg = texts, what, cfg or StudentConfig()
        self.cache: dict[str, _Cached] = {}
        self.speed: dict[str, float] = {}

    def _member(self, path: str | Path) -> _Cached:
        from llambert.student.predict import load_predictor

        key, texts, cfg = str(Path(path).resolve()), self.texts, self.cfg
        if key not in self.cache:
            pred = load_predictor(path, cfg.infer_max_length, cfg.infer_batch_size, cfg.truncation, threads=2)
            t0, out = time.perf_counter(), []
            for start in range(0, len(texts), 2500):
                out.append(pred.log_probs(texts[start : start + 2500]))
                log(f"{self.what} {Path(path).name}: {start + len(out[-1]):,}/{len(texts):,}")
            self.speed[key] = len(texts) / (time.perf_counter() - t0)
            self.cache[key] = _Cached([int(i) for i in pred.label_ids], dict(zip(texts, np.concatenate(out))))
        return self.cache[key]

    def log_probs(self, path: str | Path) -> tuple[np.ndarray, np.ndarray, float]:
        """(log-probabilities per text, label ids, docs/s): an ensemble's rate counts every member on every text
        (routing's saving is not counted here)."""
        from llambert.student.ensemble import EnsembleStudent
        from llambert.student.predict import student_kind

        n = len(self.texts)
        if student_kind(Path(path)) == "ensemble":
            ens = EnsembleStudent.load(Path(path), load_member=lambda p, *_a: self._member(p))
            secs = sum(n / self.speed[str(Path(p).resolve())] for p in ens.member_paths)
            return ens.log_probs(self.texts), np.array(ens.label_ids), n / secs
        member = self._member(path)
        return member.log_probs(self.texts), np.array(member.label_ids), self.speed[str(Path(path).resolve())]


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mean of a - b over reviews (1 = right) and its 95% interval."""
    d = a.astype(float) - b.astype(float)
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def stage_fresh(args) -> None:
    import torch

    from llambert.metrics import classification_metrics
    from llambert.student.predict import student_kind

    torch.set_num_threads(2)
    tag = getattr(args, "fresh_tag", None) or "imdb-1000-uncertainty"
    if getattr(args, "fresh_from_table", False):
        print("\n".join(table_lines(connect(), tag)))
        return
    folder = CKPT / tag
    if not folder.is_dir():
        raise SystemExit(f"fresh: no checkpoints in {folder}; run the students stage for {tag} first")
    docs = fresh_reviews(tag.split("-")[0])
    texts, gold = docs["text"].to_list(), np.array(docs["gold"].to_list())
    log(f"fresh: {len(texts):,} IMDb test reviews outside the test slice and the pool; checkpoints of {tag}")
    scorer = FolderScorer(texts, "fresh")
    con = connect()
    con.execute(FRESH_DDL)
    results: dict[str, np.ndarray] = {}
    kinds = {p.name: student_kind(p) for p in sorted(folder.iterdir()) if p.is_dir()}
    for name in sorted(kinds, key=lambda n: kinds[n] == "ensemble"):  # members first
        lp, ids, rate = scorer.log_probs(folder / name)
        labels = ids[lp.argmax(axis=1)]
        results[name] = labels == gold
        m = classification_metrics(gold.tolist(), labels.tolist(), sorted(set(ids.tolist())))
        con.execute("DELETE FROM bench.quality_fresh WHERE tag = ? AND candidate = ?", [tag, name])
        con.register(
            "f",
            pl.DataFrame(
                {
                    "doc_key": docs["doc_key"],
                    "gold": gold,
                    "label": labels,
                    "p_top": np.exp(lp.max(axis=1)),
                }
            ),
        )
        con.execute(
            f"INSERT INTO bench.quality_fresh SELECT '{RUN_ID}', ?, ?, doc_key, gold, label, p_top FROM f", [tag, name]
        )
        con.unregister("f")
        con.execute(
            "INSERT INTO bench.quality_fresh_summary VALUES (?, DEFAULT, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                RUN_ID,
                tag,
                name,
                len(texts),
                m["accuracy"],
                m["macro_f1"],
                float(labels.mean()),
                rate,
                os.getloadavg()[0],
            ],
        )
        log(f"fresh {name}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}")
    FRESH_EXPORT.parent.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"COPY (SELECT * FROM bench.quality_fresh_summary ORDER BY measured_at) TO '{FRESH_EXPORT}' "
        "(FORMAT parquet, COMPRESSION zstd)"
    )
    print("\n".join(fresh_lines(results, len(texts), half_of(docs["doc_key"].to_list()))))


def half_of(doc_keys: list[str]) -> np.ndarray:
    """0 or 1 per review, from the md5 of its key: two fixed halves of the fresh set, so a choice made looking at
    one half (half 0) can be checked on reviews that did not suggest it (half 1)."""
    import hashlib

    return np.array([int(hashlib.md5(k.encode()).hexdigest(), 16) % 2 for k in doc_keys])


def table_lines(con, tag: str) -> list[str]:
    """``fresh_lines`` from the rows a fresh run stored (``--fresh-from-table``: no model is run)."""
    rows = con.execute(
        "SELECT candidate, doc_key, (label = gold)::INTEGER FROM bench.quality_fresh WHERE tag = ? "
        "ORDER BY candidate, doc_key",
        [tag],
    ).pl()
    if rows.is_empty():
        raise SystemExit(f"fresh: no rows for {tag} in bench.quality_fresh; run the fresh stage first")
    results = {
        name: part.get_column(part.columns[2]).to_numpy()
        for (name,), part in rows.partition_by("candidate", as_dict=True).items()
    }
    keys = rows.filter(pl.col("candidate") == rows["candidate"][0])["doc_key"].to_list()
    return fresh_lines(results, len(keys), half_of(keys))


def fresh_lines(results: dict[str, np.ndarray], n: int, halves: np.ndarray | None = None) -> list[str]:
    """Accuracy per candidate (and per fixed half, ``half_of``) and each candidate paired against the encoder on
    the same fresh reviews."""
    split = halves is not None
    lines = [
        f"| candidate | accuracy on {n:,} fresh reviews |"
        + (" half 0 | half 1 |" if split else "")
        + " Δ vs encoder (95%) |",
        "|---|---|" + ("---|---|" if split else "") + "---|",
    ]
    base = results.get("encoder")
    for name, right in sorted(results.items(), key=lambda kv: -kv[1].mean()):
        diff = "–"
        if base is not None and name != "encoder":
            d, lo, hi = paired(right, base)
            diff = f"{100 * d:+.2f} pt ({100 * lo:+.2f} to {100 * hi:+.2f})"
        cells = "".join(f" {100 * right[halves == h].mean():.2f}% |" for h in (0, 1)) if split else ""
        lines.append(f"| {name} | {100 * right.mean():.2f}% |{cells} {diff} |")
    return lines
