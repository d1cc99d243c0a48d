"""`make bench-quality`: the quality-cost frontier of the students (docs/bench_quality.md).

Stages (each resumable; figures in ``var/bench/quality.duckdb``, schema ``bench``):

- ``label``: the default teacher (Qwen2.5-Coder-1.5B, choice mode, so every answer has a label
  distribution) answers prefixes of each corpus's seeded pool order; answers are kept, so a larger
  budget or a later session asks only what is missing.
- ``students``: for every corpus x budget x strategy, the product's own student code
  (``llambert.student``) trains on the teacher's labels and is scored on the corpus's fixed test slice:
  accuracy, macro-F1, training seconds and labeling docs/s, measured in the same run, and its label for every
  test review (the default's are paired with the teacher's on the same reviews). Strategies with rows are
  skipped; ``--rerun`` trains and records them again.
- ``teacher``: the teacher alone on a fixed, class-balanced ``--teacher-n`` (1,000) of each corpus's test slice
  (the first reviews of each class in the slice's seeded order), the same backend and decoding as ``label``;
  its answers join the same cache (corpus ``<name>-test``), so the figure travels with the repository.
- ``fresh``: one students run's checkpoints (``--fresh-tag``) scored on the ~23,000 IMDb test reviews outside the
  test slice and the pool, nothing retrained (benchmarks/quality_fresh.py): claims drawn from the slice, checked
  on reviews that did not suggest them.
- ``report``: the markdown table and the plot from the tables (``plot``: the plot alone).

Run with ``nice -n 10`` on a shared machine: one heavy job at a time.
"""

from __future__ import annotations

import argparse

import polars as pl

from benchmarks.common import logger
from benchmarks.quality_data import Teacher, connect, export_answers, load_corpus, save_selection, uncertainty_selection

TEACHER = "qwen2.5-coder-1.5b-instruct"
# (corpus, budget) in the order the teacher labels them: small budgets of every corpus first, so a
# stopped run leaves usable rows everywhere.
LABEL_PLAN = [("imdb", 250), ("short", 300), ("short_skew", 300), ("imdb", 500), ("imdb", 1000), ("imdb", 2000)]
# sample.strategy uncertainty on IMDb: its rounds' extra answers are paid at these budgets (the seed round
# is the random prefix, already cached).
UNCERTAINTY_BUDGETS = [500, 1000, 2000]


log = logger("bench-quality")
TEACHER_CORPORA = ("imdb", "short", "short_skew")


def teacher_slice(test: pl.DataFrame, n: int) -> pl.DataFrame:
    """The first reviews of each class in the test slice's seeded order, in the slice's class shares (a
    balanced slice gives n/2 of each; the skewed one its 20% positive), kept in slice order."""
    share = test["gold"].mean()
    n_pos = round(n * share)
    keys = pl.concat([test.filter(pl.col("gold") == 1).head(n_pos), test.filter(pl.col("gold") == 0).head(n - n_pos)])[
        "doc_key"
    ]
    return test.filter(pl.col("doc_key").is_in(keys.implode()))


def teacher_on_test(con, teacher: Teacher, n: int, corpora=TEACHER_CORPORA, ask: bool = False) -> pl.DataFrame:
    """The teacher alone on ``teacher_slice`` of each corpus: accuracy and macro-F1 (a missing answer counts as
    wrong), share positive and prompts/s from the answers' own seconds. ``ask``: pay for the missing answers
    (resumable, exported after each corpus); otherwise only what is cached counts, and ``answered`` says how
    many that is."""
    from llambert.metrics import classification_metrics

    rows = []
    for name in corpora:
        sub = teacher_slice(load_corpus(name).test, n)
        if ask:
            log(f"teacher {teacher.model_name}: {name} test slice, {sub.height} reviews")
            got = teacher.answers(f"{name}-test", sub)
            export_answers(con)
        else:
            got = teacher.cached(sub)
        got = sub.join(got, on="doc_key", how="left")
        answered = got.filter(pl.col("p_pos").is_not_null())
        pred = [-1 if p is None else int(p > 0.5) for p in got["p_pos"].to_list()]
        m = classification_metrics(got["gold"].to_list(), pred, [0, 1])
        secs = answered["seconds"].drop_nulls().to_list()
        rows.append(
            {
                "corpus": name,
                "n": sub.height,
                "answered": answered.height,
                "accuracy": m["accuracy"],
                "macro_f1": m["macro_f1"],
                "share_positive": (answered["p_pos"] > 0.5).mean() if answered.height else None,
                "prompts_per_s": len(secs) / sum(secs) if secs else None,
            }
        )
    return pl.DataFrame(rows)


def stage_teacher(model: str, n: int, corpora=TEACHER_CORPORA) -> None:
    con = connect()
    out = teacher_on_test(con, Teacher(model, con), n, corpora, ask=True)
    for r in out.iter_rows(named=True):
        log(
            f"teacher alone on {r['corpus']} test ({r['answered']}/{r['n']} answered): accuracy {r['accuracy']:.4f}, "
            f"macro-F1 {r['macro_f1']:.4f}, share positive {r['share_positive']:.3f}, {r['prompts_per_s']:.2f} prompts/s"
        )


def stage_label(max_budget: int, teacher: str, max_uncertainty: int = 500) -> None:
    con = connect()
    t = Teacher(teacher, con)
    corpora = {}
    for name, budget in LABEL_PLAN:
        if name == "imdb" and budget > max_budget:  # the short corpora always take their 300
            continue
        c = corpora.setdefault(name, load_corpus(name))
        log(f"teacher {teacher}: {name} pool prefix {budget}")
        t.answers(name, c.pool.head(budget))
        export_answers(con)
    for budget in UNCERTAINTY_BUDGETS:
        if budget > max_uncertainty:
            continue
        log(f"teacher {teacher}: imdb uncertainty selection at {budget}")
        sel = uncertainty_selection(corpora.setdefault("imdb", load_corpus("imdb")), budget, t.labels_of)
        export_answers(con)
        save_selection(budget, sel)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stages", nargs="*", default=["label", "teacher", "students", "routing", "report"])
    ap.add_argument("--max-budget", type=int, default=1000, help="largest IMDb LLM budget to label and train on")
    ap.add_argument("--teacher", default=TEACHER)
    ap.add_argument("--teacher-n", type=int, default=1000, help="teacher stage: reviews of each test slice")
    ap.add_argument(
        "--teacher-corpora", nargs="+", default=list(TEACHER_CORPORA), help="teacher stage: which corpora's slices"
    )
    ap.add_argument(
        "--max-uncertainty",
        type=int,
        default=500,
        help="largest IMDb budget labeled with sample.strategy uncertainty (0: none)",
    )
    ap.add_argument(
        "--variants-at",
        type=int,
        default=None,
        help="IMDb budget at which encoder_hard and encoder_512 also run (default: the largest)",
    )
    ap.add_argument(
        "--self-distill",
        type=int,
        default=0,
        help="students stage: also train student.self_distill's distilled encoder on this many pool documents",
    )
    ap.add_argument(
        "--distill-at",
        nargs="+",
        default=["1000", "uncertainty:1000"],
        help="budgets where --self-distill runs: IMDb by number (1000), uncertainty:N for sample.strategy "
        "uncertainty, short:300 or short_skew:300 for the reshaped corpora",
    )
    ap.add_argument(
        "--distill-from",
        choices=["base", "encoder"],
        default=None,
        help="students stage: student.distill_from for the distilled encoder (default: the product's); "
        "encoder's rows are named distilled_cont, distilled_cont_ensemble, default+distill_cont",
    )
    ap.add_argument(
        "--only",
        nargs="+",
        default=None,
        help="students stage: only these corpus-budget tags (imdb-1000, imdb-1000-uncertainty, short-300, ...)",
    )
    ap.add_argument(
        "--encoders",
        nargs="+",
        default=None,
        help="students stage: only these encoder recipes at random budgets (paper, encoder, ...); without "
        "encoder, the ensemble and self-distillation are skipped",
    )
    ap.add_argument(
        "--rerun",
        action="store_true",
        help="students stage: train and record again the strategies that have rows already (a new run with their "
        "per-review test predictions, for rows measured before those were kept)",
    )
    ap.add_argument(
        "--force-report",
        action="store_true",
        help="report stage: write docs/bench_quality.md even when some corpus has no rows in the results table",
    )
    ap.add_argument(
        "--fresh-tag",
        default=None,
        help="fresh stage: the students run (checkpoint folder) to score on the IMDb test reviews outside the "
        "test slice (default imdb-1000-uncertainty)",
    )
    ap.add_argument(
        "--fresh-from-table",
        action="store_true",
        help="fresh stage: print the table (with its two fixed halves) from bench.quality_fresh, running no model",
    )
    ap.add_argument(
        "--run-warehouse",
        default=None,
        help="product stage: a finished `make run` warehouse whose champion labels are paired with the teacher "
        "(default var/warehouse.duckdb)",
    )
    ap.add_argument(
        "--product-candidates",
        action="store_true",
        help="product stage: also re-read every candidate of the run on the teacher's test reviews (loads models)",
    )
    ap.add_argument("--full-at", type=int, default=None, help="fulltest stage: the IMDb budget (default 1000)")
    ap.add_argument(
        "--full-strategies",
        nargs="+",
        default=None,
        help="fulltest stage: bench strategies to score on all 25,000 IMDb test reviews "
        "(default: uncertainty:default+distill_cont uncertainty:linear paper)",
    )
    ap.add_argument("--routing-rounds", type=int, default=2, help="routing stage: unrouted/routed pass pairs")
    ap.add_argument(
        "--ratio-strategy",
        default="default",
        help="ratio stage: the bench row whose champion is the new default (e.g. uncertainty:default+distill)",
    )
    ap.add_argument("--ratio-at", type=int, default=None, help="ratio stage: the IMDb budget (default 1000)")
    ap.add_argument(
        "--ratio-paper-at",
        type=int,
        default=None,
        help="ratio stage: the paper recipe's budget, i.e. today's default sample.size (default: --ratio-at)",
    )
    ap.add_argument(
        "--teacher-prompts-per-s",
        type=float,
        default=0.57,
        help="ratio stage: the teacher stage's rate, the same in both runs (docs/bench_teacher.md)",
    )
    ap.add_argument(
        "--teacher-from-then-now",
        action="store_true",
        help="ratio stage: each side's own teacher rate, the issue's path vs today's default, from "
        "`python -m benchmarks.teacher_then_now` on this machine (instead of --teacher-prompts-per-s for both)",
    )
    args = ap.parse_args(argv)
    for stage in args.stages:
        if stage == "label":
            stage_label(args.max_budget, args.teacher, args.max_uncertainty)
        elif stage == "teacher":
            stage_teacher(args.teacher, args.teacher_n, args.teacher_corpora)
        elif stage == "product":
            from benchmarks.quality_product import stage_product

            stage_product(args)
        elif stage == "fresh":
            from benchmarks.quality_fresh import stage_fresh

            stage_fresh(args)
        else:
            from benchmarks import quality_students

            getattr(quality_students, f"stage_{stage}")(args)


if __name__ == "__main__":
    main()
