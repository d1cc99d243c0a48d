"""A `make run` warehouse's product labels paired with the teacher on the teacher's own test reviews.

Why: the quality bench trains students from its own cached answers (choice mode, the whole review); what a user
gets is the product's `make run`, with its own teacher settings, sample and checkpoints. This stage reads a
finished run's warehouse (read-only, no model is loaded): the champion's labels of every IMDb test review
(``predictions.labels``), their accuracy against the gold labels, and, on the fixed 1,000 test reviews the
``teacher`` stage answered (``teacher_labeled``), the paired difference to the teacher, review by review.
``python -m benchmarks.quality product --run-warehouse var/warehouse.duckdb``
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl

from benchmarks.common import logger
from benchmarks.quality_students import paired_frame, paired_text, teacher_labeled

log = logger("bench-quality")


def product_labels(warehouse: Path) -> tuple[pl.DataFrame, dict]:
    """The champion's label for every IMDb test review of the warehouse (doc_key as the bench names it, gold,
    student) and what produced them (champion kind, teacher model, mode and decoding)."""
    if not Path(warehouse).exists():
        raise SystemExit(f"product: no warehouse at {warehouse}; run `make run` (or pass --run-warehouse) first")
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        champ = con.execute("SELECT checkpoint_id, kind FROM students.champion").fetchone()
        if champ is None:
            raise SystemExit(
                f"product: {warehouse} has no champion (students.champion is empty): the run did not finish"
            )
        frame = con.execute(
            "SELECT DISTINCT 'test:' || o.source_id AS doc_key, o.gold_label AS gold, p.label AS student "
            "FROM predictions.labels p JOIN raw.occurrences o USING (doc_id) "
            "WHERE o.split = 'test' AND o.source = 'imdb' AND p.checkpoint_id = ? AND o.gold_label IS NOT NULL",
            [champ[0]],
        ).pl()
        teacher = con.execute(
            "SELECT any_value(model_identity), any_value(mode), any_value(decoding::VARCHAR), count(*) "
            "FROM labeling.llm_responses"
        ).fetchone()
    finally:
        con.close()
    return frame, {
        "champion": champ[0],
        "kind": champ[1],
        "teacher": teacher[0],
        "mode": teacher[1],
        "decoding": teacher[2],
        "answers": teacher[3],
    }


def stage_product(args) -> None:
    warehouse = Path(getattr(args, "run_warehouse", None) or "var/warehouse.duckdb")
    frame, meta = product_labels(warehouse)
    if frame.is_empty():
        raise SystemExit(f"product: {warehouse} holds no champion labels of IMDb test reviews")
    acc = float((frame["student"] == frame["gold"]).mean())
    lines = [
        f"product run {warehouse}: champion {meta['kind']} ({meta['champion']}), teacher {meta['teacher']} in "
        f"{meta['mode']} mode ({meta['answers']:,} answers; decoding {meta['decoding']})",
        f"- all {frame.height:,} IMDb test reviews: student accuracy {acc:.2%}",
    ]
    sub = teacher_labeled("imdb")
    if sub is None:
        lines.append("- the teacher stage's 1,000 test reviews are not all answered: no paired comparison")
        if getattr(args, "product_candidates", False):
            lines.append("  (--product-candidates reads the candidates on those reviews: run the teacher stage first)")
    elif (p := paired_frame(sub, frame.select("doc_key", "student"))) is None:
        lines.append("- some of the teacher's 1,000 test reviews have no product label: no paired comparison")
    else:
        lines.append(f"- {paired_text(p)} (the teacher: the `teacher` stage's answers, choice mode, the whole review)")
        if getattr(args, "product_candidates", False):
            lines += candidate_lines(warehouse, sub)
    print("\n".join(lines))


def candidate_lines(warehouse: Path, sub: pl.DataFrame) -> list[str]:
    """Every candidate of the run (``students.candidates``, folders still on disk) re-read on the teacher's test
    reviews and paired with the teacher there: what the champion rule's choice cost or saved on reviews that no
    score used. Loads each base model once (``FolderScorer``)."""
    from benchmarks.quality_fresh import FolderScorer
    from llambert.config import StudentConfig

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        # Read as the run labeled its corpus: the student settings of its newest checkpoint (a run's settings).
        stored = con.execute(
            "SELECT training_config FROM students.checkpoints ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
        cands = con.execute(
            "SELECT c.checkpoint_id, c.kind, c.path, c.score, c.docs_per_s, c.verdict, "
            "c.checkpoint_id = h.checkpoint_id AS champion "
            "FROM students.candidates c CROSS JOIN students.champion h ORDER BY c.score DESC NULLS LAST"
        ).fetchall()
    finally:
        con.close()
    # only what reading needs: a stored config may hold settings of an older version
    keys = ("infer_max_length", "infer_batch_size", "truncation")
    run_cfg = json.loads(stored[0]) if stored and stored[0] else {}
    cfg = StudentConfig(**{k: run_cfg[k] for k in keys if k in run_cfg})
    scorer = FolderScorer(sub["text"].to_list(), "product candidates", cfg)
    out = [
        "",
        f"| candidate | probe score | docs/s (run) | verdict | on the teacher's {sub.height:,} | Δ vs teacher (95%) "
        "| won/lost |",
        "|---|---|---|---|---|---|---|",
    ]
    order = sorted(cands, key=lambda r: "ensemble" in r[1])  # members first: ensembles reuse their log-probs
    rows = {}
    for cid, kind, path, score, rate, verdict, champ in order:
        score = "–" if score is None else f"{score:.4f}"  # a candidate not scored on the current probe
        rate = "–" if rate is None else f"{rate:.0f}"
        if not Path(path).is_dir():
            rows[cid] = f"| {kind} | {score} | {rate} | {verdict} | folder gone | | |"
            continue
        lp, ids, _ = scorer.log_probs(path)
        pred = sub.select("doc_key").with_columns(student=pl.Series(ids[lp.argmax(axis=1)].tolist(), dtype=pl.Int64))
        p = paired_frame(sub, pred)
        name = f"**{kind}** (champion)" if champ else kind
        rows[cid] = (
            f"| {name} | {score} | {rate} | {verdict} | {p['student_accuracy']:.2%} | "
            f"{p['diff_pt']:+.1f} pt ({p['diff_lo_pt']:+.1f} to {p['diff_hi_pt']:+.1f}) | {p['won']}/{p['lost']} |"
        )
        log(f"product candidate {kind}: {p['student_accuracy']:.2%} on the teacher's reviews")
    return out + [rows[c[0]] for c in cands]
