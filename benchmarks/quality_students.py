"""The ``students`` and ``report`` stages of `make bench-quality` (see benchmarks/quality.py).

Every strategy is the product's own code (llambert.student.*) on the teacher's cached answers:

- ``paper``: the paper's recipe as this project shipped it before the students issue: MiniLM fine-tuned
  on hard labels, head-only 256 tokens, 3 epochs at 5e-5, no class weights;
- ``linear``: the floor, TF-IDF word 1-2-grams + logistic regression (C by CV);
- ``encoder``: today's encoder defaults (head+tail 256, soft labels, balanced classes, at least
  ``min_train_steps`` steps, early stopping on the validation split);
- ``encoder_hard`` (largest budget only): the same with hard labels, to isolate soft labels;
- ``encoder_512`` (largest budget only): the same at 512 tokens;
- ``ensemble``: encoder + linear, calibrated and weighted on the validation split;
- ``default``: what the champion rule picks among linear / encoder / ensemble on the gold probe;
- ``distilled`` / ``distilled_ensemble`` (``--self-distill N``, at ``--distill-at`` budgets): student.self_distill,
  the ensemble soft-labels the first N pool documents the teacher never saw and a fresh encoder trains on the
  teacher's labels plus those (llambert.student.family.pseudo_phase / with_pseudo); ``default+distill`` is the
  champion rule's pick among all five.

Each row: accuracy and macro-F1 on the corpus's fixed test slice, training seconds, labeling docs/s
on that slice, all measured in the same run (load average recorded beside them). Each row's label for every test
review is kept too (``bench.quality_test_predictions``), so a student is compared with its teacher review by
review on the same 1,000 (``paired_vs_teacher``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from benchmarks.common import BENCH_VAR, DOCS, connect_bench, logger
from benchmarks.quality_data import ANSWERS, Corpus, answer_texts, load_corpus
from llambert.config import PROJECT_ROOT

DOC = DOCS / "bench_quality.md"
PLOT = DOCS / "bench_quality.png"
NOTES = DOCS / "bench_quality_notes.md"
CKPT = BENCH_VAR / "quality_checkpoints"
RESULTS_DDL = """
CREATE TABLE IF NOT EXISTS bench.quality_results (
    run_id VARCHAR, measured_at TIMESTAMP DEFAULT current_timestamp, corpus VARCHAR, budget INTEGER,
    strategy VARCHAR, n_train INTEGER, teacher_label_accuracy DOUBLE, test_n INTEGER, test_accuracy DOUBLE,
    test_f1 DOUBLE, probe_accuracy DOUBLE, train_seconds DOUBLE, docs_per_s DOUBLE, load_1m DOUBLE, details JSON);
CREATE TABLE IF NOT EXISTS bench.quality_test_predictions (
    run_id VARCHAR, corpus VARCHAR, budget INTEGER, strategy VARCHAR, doc_key VARCHAR, label INTEGER,
    measured_at TIMESTAMP DEFAULT current_timestamp);
"""
PLAN = {"imdb": [250, 500, 1000, 2000], "short": [300], "short_skew": [300]}
RUN_ID = time.strftime("%Y%m%dT%H%M%S")
# Results have their own file: the label stage holds quality.duckdb's one write lock while it runs, and the
# students stage reads the teacher's answers from their parquet export, so both may run at once.
RESULTS_DB = BENCH_VAR / "quality_results.duckdb"


# The results travel with the repository too (var/ does not): every row written is exported here, and a new
# checkout's first connect imports them, so a later session's report still has the earlier sessions' rows.
RESULTS_EXPORT = PROJECT_ROOT / "benchmarks" / "data" / "quality_results.parquet"
RESULT_COLUMNS = (
    "run_id, measured_at, corpus, budget, strategy, n_train, teacher_label_accuracy, test_n, test_accuracy, "
    "test_f1, probe_accuracy, train_seconds, docs_per_s, load_1m, details"
)
# Every row's label for each test review travels the same way (a few KB per row: the keys repeat, zstd).
PREDICTIONS_EXPORT = PROJECT_ROOT / "benchmarks" / "data" / "quality_test_predictions.parquet"
PREDICTION_COLUMNS = "run_id, corpus, budget, strategy, doc_key, label, measured_at"


def connect() -> duckdb.DuckDBPyConnection:
    con = connect_bench(RESULTS_DB, RESULTS_DDL)
    if RESULTS_EXPORT.exists():
        con.execute(
            f"INSERT INTO bench.quality_results ({RESULT_COLUMNS}) SELECT {RESULT_COLUMNS} "
            f"FROM read_parquet('{RESULTS_EXPORT}') AS p WHERE NOT EXISTS (SELECT 1 FROM bench.quality_results AS q "
            "WHERE q.run_id = p.run_id AND q.measured_at = p.measured_at AND q.corpus = p.corpus "
            "AND q.budget = p.budget AND q.strategy = p.strategy)"
        )
    if PREDICTIONS_EXPORT.exists():
        con.execute(
            f"INSERT INTO bench.quality_test_predictions ({PREDICTION_COLUMNS}) SELECT {PREDICTION_COLUMNS} "
            f"FROM read_parquet('{PREDICTIONS_EXPORT}') AS p WHERE NOT EXISTS (SELECT 1 FROM "
            "bench.quality_test_predictions AS q WHERE q.run_id = p.run_id AND q.corpus = p.corpus "
            "AND q.budget = p.budget AND q.strategy = p.strategy)"
        )
    if FULLTEST_EXPORT.exists():
        con.execute(FULLTEST_DDL)
        con.execute(
            f"INSERT INTO bench.quality_full_test SELECT * FROM read_parquet('{FULLTEST_EXPORT}') AS p WHERE NOT EXISTS "
            "(SELECT 1 FROM bench.quality_full_test AS q WHERE q.run_id = p.run_id AND q.strategy = p.strategy)"
        )
    return con


def export_results(con: duckdb.DuckDBPyConnection) -> None:
    RESULTS_EXPORT.parent.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"COPY (SELECT {RESULT_COLUMNS} FROM bench.quality_results ORDER BY measured_at, corpus, budget, strategy) "
        f"TO '{RESULTS_EXPORT}' (FORMAT parquet, COMPRESSION zstd)"
    )


def export_predictions(con: duckdb.DuckDBPyConnection) -> None:
    PREDICTIONS_EXPORT.parent.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"COPY (SELECT {PREDICTION_COLUMNS} FROM bench.quality_test_predictions "
        f"ORDER BY measured_at, corpus, budget, strategy, doc_key) TO '{PREDICTIONS_EXPORT}' "
        "(FORMAT parquet, COMPRESSION zstd)"
    )


log = logger("bench-quality")


def teacher_labels(con, corpus: str, keys: list[str]) -> dict[str, dict]:
    """doc_key -> the teacher's label distribution {label name: p} for the cached answers."""
    family = ["imdb"] if corpus == "imdb" else ["short", "short_skew"]
    if not ANSWERS.exists():
        return {}
    rows = con.execute(
        f"SELECT doc_key, label_probs FROM read_parquet('{ANSWERS}') WHERE list_contains(?, corpus) "
        "AND list_contains(?, doc_key)",
        [family, keys],
    ).fetchall()
    return {k: json.loads(v) for k, v in rows if v}


def _phase(frame: pl.DataFrame, answers: dict[str, dict], names: list[str], ids: list[int]):
    from llambert.student.train import Phase

    keep = [k for k in frame["doc_key"].to_list() if k in answers]
    text = dict(zip(frame["doc_key"].to_list(), frame["text"].to_list()))
    labels, probs = [], []
    for k in keep:
        p = answers[k]
        labels.append(ids[int(np.argmax([p.get(n, 0.0) for n in names]))])
        probs.append({lid: float(p.get(n, 0.0)) for n, lid in zip(names, ids)})
    return Phase("llm", [text[k] for k in keep], labels, keep, probs=probs)


def _evaluate(pred, frame: pl.DataFrame, ids: list[int]) -> dict:
    from llambert.metrics import classification_metrics

    t0 = time.perf_counter()
    labels, _ = pred.predict(frame["text"].to_list())
    secs = time.perf_counter() - t0
    m = classification_metrics(frame["gold"].to_list(), labels, ids)
    share = {lid: labels.count(lid) / len(labels) for lid in ids}
    return {
        "accuracy": m["accuracy"],
        "f1": m["macro_f1"],
        "docs_per_s": len(labels) / secs,
        "shares": share,
        "labels": [int(lab) for lab in labels],  # per document, in ``frame``'s order
    }


def run_budget(
    con,
    corpus,
    budget: int,
    largest: bool,
    selection: pl.DataFrame | None = None,
    prefix: str = "",
    self_distill: int = 0,
    distill_from: str | None = None,
    encoders: list[str] | None = None,
    rerun: bool = False,
) -> None:
    """Train and score every strategy on the teacher's labels of ``budget`` documents.

    ``selection`` (with ``prefix`` naming its strategies, e.g. ``uncertainty:``): the documents another
    sample.strategy chose instead of the pool's random prefix; only the product's default family runs then.
    ``rerun``: strategies with rows already are trained (or loaded from their checkpoint) and recorded again, in
    a new run: a fresh machine re-produces the per-review predictions of rows measured before they were kept.
    """
    from llambert.config import StudentConfig
    from llambert.models import resolve_model
    from llambert.student.family import (
        Trained,
        build_ensemble,
        distill_start,
        pseudo_phase,
        split_phases,
        train_linear,
        with_pseudo,
    )
    from llambert.student.predict import load_predictor
    from llambert.student.train import train_student
    from llambert.tasks import load_task

    task = load_task("imdb_sentiment")
    names, ids = task.label_names, task.label_ids
    pool = corpus.pool.head(budget) if selection is None else selection
    answers = teacher_labels(con, corpus.name, pool["doc_key"].to_list())
    if len(answers) < 0.98 * budget:  # a few pool texts repeat (one answer per distinct prompt): dropped
        log(f"{corpus.name} {budget}: only {len(answers)} teacher answers cached; run the label stage first")
        return
    phase = _phase(pool, answers, names, ids)
    gold = dict(zip(pool["doc_key"].to_list(), pool["gold"].to_list()))
    with_gold = [(lab, gold[k]) for k, lab in zip(phase.doc_ids, phase.labels) if gold.get(k) is not None]
    t_acc = sum(a == b for a, b in with_gold) / len(with_gold) if with_gold else None
    base = resolve_model("all-minilm-l6-v2", PROJECT_ROOT / "var" / "models", role="student").path
    done = (
        set()
        if rerun
        else {
            r[0].removeprefix(prefix)
            for r in con.execute(
                "SELECT strategy FROM bench.quality_results WHERE corpus = ? AND budget = ? AND starts_with(strategy, ?)",
                [corpus.name, budget, prefix],
            ).fetchall()
            if prefix or ":" not in r[0]
        }
    )

    paper = StudentConfig(
        truncation="head",
        soft_labels=False,
        class_weight="none",
        min_train_steps=0,
        early_stopping_patience=0,
        epochs=3,
        learning_rate=5e-5,
    )
    new = StudentConfig(**({"distill_from": distill_from} if distill_from else {}))
    # student.distill_from: encoder (continued) gets its own rows beside the fresh ones.
    dsfx = "_cont" if new.distill_from == "encoder" else ""
    configs = {"paper": paper, "encoder": new} if not prefix else {"encoder": new}
    if largest and not prefix:
        configs |= {
            "encoder_hard": new.model_copy(update={"soft_labels": False}),
            "encoder_512": new.model_copy(update={"max_length": 512, "infer_max_length": 512}),
        }
    if encoders:
        configs = {k: v for k, v in configs.items() if k in encoders}
    trained: dict[str, Trained] = {}
    tag = f"{corpus.name}-{budget}" + (f"-{prefix.rstrip(':')}" if prefix else "")

    def record(strategy, cfg, tr: Trained, pred, extra=None):
        ev = _evaluate(pred, corpus.test, ids)
        pr = _evaluate(pred, corpus.probe, ids)
        extra = (extra or {}) | {"probe_f1": pr["f1"]}
        _insert_result(
            con,
            [RUN_ID, corpus.name, budget, prefix + strategy, tr.n_train, t_acc, corpus.test.height, ev["accuracy"]],
            [ev["f1"], pr["accuracy"], tr.seconds, ev["docs_per_s"]],
            {"shares": ev["shares"], "metrics": tr.metrics, **(extra or {})},
        )
        _insert_predictions(con, RUN_ID, corpus.name, budget, prefix + strategy, corpus.test["doc_key"], ev["labels"])
        log(
            f"{tag} {prefix}{strategy}: test acc {ev['accuracy']:.4f} F1 {ev['f1']:.4f} (probe {pr['accuracy']:.4f}), "
            f"train {tr.seconds:.0f}s, {ev['docs_per_s']:.0f} docs/s, load {os.getloadavg()[0]:.2f}"
        )

    cfg_linear = new
    train_ph, val = split_phases([phase], cfg_linear)
    trained["linear"] = train_linear(train_ph, val, ids, cfg_linear, CKPT / tag / "linear")
    if "linear" not in done:
        record("linear", cfg_linear, trained["linear"], load_predictor(trained["linear"].path))
    for strategy, cfg in configs.items():
        out = CKPT / tag / strategy
        if strategy in done and strategy != "encoder" and not (out / "config.json").exists():
            continue  # measured before and its folder is gone: nothing to record, nothing needs it
        tr_ph, va = split_phases([phase], cfg)
        if (out / "config.json").exists() and (out / "llambert_training.json").exists():
            meta = json.loads((out / "llambert_training.json").read_text())
            trained[strategy] = Trained(
                "encoder", out, len(tr_ph[0].texts), len(va.texts), meta["metrics"], meta.get("seconds", float("nan"))
            )
        else:
            log(f"{tag} {strategy}: training on {len(tr_ph[0].texts)} labels")
            r = train_student(str(base), names, ids, tr_ph, cfg, out, val=va, threads=2)
            meta = json.loads((out / "llambert_training.json").read_text())
            (out / "llambert_training.json").write_text(json.dumps(meta | {"seconds": r.seconds}, default=str))
            trained[strategy] = Trained("encoder", out, r.n_train, r.n_val, dict(r.metrics), r.seconds, r.history)
        if strategy not in done:
            record(
                strategy,
                cfg,
                trained[strategy],
                load_predictor(out, cfg.infer_max_length, cfg.infer_batch_size, cfg.truncation, threads=2),
                {"best_epoch": trained[strategy].metrics.get("best_epoch")},
            )
    if "encoder" not in trained:  # --encoders without encoder: nothing to ensemble or distill
        return
    # Routing is fitted on unlabeled pool documents, as the product does (pipeline.distill_pool_docs).
    unlabeled = corpus.pool.filter(~pl.col("doc_key").is_in(pool["doc_key"].implode()))
    # After self-distillation's documents: the distilled encoder trained on those and agrees too well there.
    route_texts = unlabeled.slice(new.self_distill).head(new.route_docs)["text"].to_list()
    ens = build_ensemble(
        [trained["encoder"], trained["linear"]],
        val,
        ids,
        new,
        CKPT / tag / "ensemble",
        threads=2,
        route_texts=route_texts,
    )
    ens.seconds += trained["encoder"].seconds + trained["linear"].seconds
    trained["ensemble"] = ens
    if "ensemble" not in done:
        record(
            "ensemble",
            new,
            ens,
            load_predictor(ens.path, new.infer_max_length, new.infer_batch_size, new.truncation, threads=2),
            {"weights": ens.metrics.get("weights")},
        )
    if self_distill:
        D = "distilled" + dsfx
        # student.self_distill: the ensemble labels the first N pool documents the teacher never saw.
        out = CKPT / tag / (f"distilled_{self_distill}" + (f"_cont{new.distill_epochs}" if dsfx else ""))
        tr_ph, va = split_phases([phase], new)
        # The ensemble labels the first N pool documents (the distilled encoder's and the distilled linear model's
        # pseudo-labels); a kept distilled checkpoint is loaded, but its linear twin needs the labels again.
        extra = unlabeled.head(self_distill)
        teacher = load_predictor(ens.path, new.infer_max_length, new.infer_batch_size, new.truncation, threads=2)
        t0 = time.perf_counter()
        pseudo = pseudo_phase(teacher, extra["doc_key"].to_list(), extra["text"].to_list(), ids)
        label_s = time.perf_counter() - t0
        log(f"{tag} distilled: the ensemble labeled {len(pseudo.texts)} pool documents in {label_s:.0f} s")
        if (out / "config.json").exists() and (out / "llambert_training.json").exists():
            meta = json.loads((out / "llambert_training.json").read_text())
            trained[D] = Trained(
                D,
                out,
                len(tr_ph[0].texts) + self_distill,
                len(va.texts),
                meta["metrics"],
                meta.get("seconds", float("nan")),
            )
        else:
            start, train_cfg = distill_start(new, str(base), trained["encoder"].path)
            r = train_student(start, names, ids, with_pseudo(tr_ph, pseudo), train_cfg, out, val=va, threads=2)
            meta = json.loads((out / "llambert_training.json").read_text())
            secs = r.seconds + label_s
            (out / "llambert_training.json").write_text(json.dumps(meta | {"seconds": secs}, default=str))
            trained[D] = Trained(D, out, r.n_train, r.n_val, dict(r.metrics), secs, r.history)
        # student.kind: ensemble's second linear member (kind distilled_linear): the floor's model on the same
        # teacher labels + pseudo-labels, seconds to train.
        trained[D + "_linear"] = train_linear(
            with_pseudo(tr_ph, pseudo), va, ids, new, CKPT / tag / (D + "_linear"), "distilled_linear"
        )
        if D not in done:
            record(
                D,
                new,
                trained[D],
                load_predictor(out, new.infer_max_length, new.infer_batch_size, new.truncation, threads=2),
                {"best_epoch": trained[D].metrics.get("best_epoch"), "pool": self_distill},
            )
        if D + "_linear" not in done:
            record(
                D + "_linear",
                new,
                trained[D + "_linear"],
                load_predictor(trained[D + "_linear"].path),
                {"pool": self_distill},
            )
        dens = build_ensemble(
            [trained[D], trained[D + "_linear"]],
            val,
            ids,
            new,
            CKPT / tag / (D + "_ensemble"),
            threads=2,
            route_texts=route_texts,
        )
        dens.seconds += trained[D].seconds + trained[D + "_linear"].seconds
        trained[D + "_ensemble"] = dens
        if D + "_ensemble" not in done:
            record(
                D + "_ensemble",
                new,
                dens,
                load_predictor(dens.path, new.infer_max_length, new.infer_batch_size, new.truncation, threads=2),
                {"weights": dens.metrics.get("weights"), "pool": self_distill},
            )
    # The champion rule (sql/students/champion.sql) among the product's default candidates, on the probe.
    for kinds, name in (
        (("linear", "encoder", "ensemble"), "default"),
        (
            (
                "linear",
                "encoder",
                "ensemble",
                f"distilled{dsfx}",
                f"distilled{dsfx}_linear",
                f"distilled{dsfx}_ensemble",
            ),
            f"default+distill{dsfx}",
        ),
    ):
        if name in done or (name != "default" and not self_distill):
            continue
        _champion_row(con, corpus, budget, prefix, name, kinds, trained, t_acc, new)


def _insert_result(con, head: list, figures: list, details: dict) -> None:
    """One bench.quality_results row: (run_id .. test_accuracy), (test_f1, probe_accuracy, train_seconds,
    docs_per_s), then the load average now and ``details`` as JSON."""
    con.execute(RESULTS_DDL)
    con.execute(
        "INSERT INTO bench.quality_results (run_id, corpus, budget, strategy, n_train, teacher_label_accuracy, "
        "test_n, test_accuracy, test_f1, probe_accuracy, train_seconds, docs_per_s, load_1m, details) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [*head, *figures, os.getloadavg()[0], json.dumps(details, default=str)],
    )
    export_results(con)


def _insert_predictions(con, run_id: str, corpus: str, budget: int, strategy: str, doc_keys, labels: list[int]) -> None:
    """A row's label for each test review (bench.quality_test_predictions): the paired comparison with the teacher
    needs which reviews each got right, not only how many. Replaces the rows of the same run and strategy."""
    con.execute(RESULTS_DDL)
    key = [run_id, corpus, budget, strategy]
    con.execute(
        "DELETE FROM bench.quality_test_predictions WHERE run_id = ? AND corpus = ? AND budget = ? AND strategy = ?",
        key,
    )
    con.execute(
        "INSERT INTO bench.quality_test_predictions (run_id, corpus, budget, strategy, doc_key, label) "
        "SELECT ?, ?, ?, ?, unnest(?::VARCHAR[]), unnest(?::INTEGER[])",
        [*key, list(doc_keys), [int(lab) for lab in labels]],
    )
    export_predictions(con)


def _champion_row(con, corpus, budget: int, prefix: str, name: str, kinds, trained: dict, t_acc, new) -> None:
    """sql/students/champion.sql's pick among ``kinds`` (its twin, pick_champion), stored as strategy ``name``,
    with the champion's test predictions (its latest run's) copied under ``name``."""
    # The product's default champion_metric: macro-F1 on the gold probe. Each candidate's latest row: after a
    # --rerun a strategy has several.
    row = {
        r[0]: r
        for r in con.execute(
            "SELECT DISTINCT ON (strategy) strategy, test_accuracy, test_f1, "
            "coalesce(TRY_CAST(details->>'probe_f1' AS DOUBLE), probe_accuracy), train_seconds, docs_per_s, run_id "
            "FROM bench.quality_results WHERE corpus = ? AND budget = ? AND list_contains(?, strategy) "
            "ORDER BY strategy, measured_at DESC",
            [corpus.name, budget, [prefix + k for k in kinds]],
        ).fetchall()
    }
    row = {k.removeprefix(prefix): v for k, v in row.items()}
    floor = row["linear"][3]
    eligible = {s: r for s, r in row.items() if s == "linear" or (r[3] >= floor)}
    pick = pick_champion(eligible, new.champion_tolerance, new.champion_speedup, new.champion_ensemble_margin)
    r = row[pick]
    # What the pipeline pays is every candidate's training, whichever wins: the first family (the ensemble's
    # seconds include its encoder's) plus, with self-distillation, the distilled ensemble's (which include the
    # distilled encoder's and its pseudo-labeling).
    seconds = trained["ensemble"].seconds + sum(trained[k].seconds for k in kinds if k.endswith("_ensemble"))
    _insert_result(
        con,
        [RUN_ID, corpus.name, budget, prefix + name, trained[pick].n_train, t_acc, corpus.test.height, r[1]],
        [r[2], r[3], seconds, r[5]],
        {"champion": pick, "path": str(trained[pick].path)},
    )
    # The champion's labels are the default's: copied from the run of the champion's row read above (none when
    # that row was measured before predictions were kept).
    got = con.execute(
        "SELECT doc_key, label FROM bench.quality_test_predictions WHERE run_id = ? AND corpus = ? AND budget = ? "
        "AND strategy = ?",
        [r[6], corpus.name, budget, prefix + pick],
    ).fetchall()
    if got:
        _insert_predictions(
            con, RUN_ID, corpus.name, budget, prefix + name, [k for k, _ in got], [lab for _, lab in got]
        )
    log(f"{corpus.name}-{budget} {prefix}{name} = champion rule picks {pick}: test acc {r[1]:.4f}")


def _run_training_seconds(rows: dict, strategy: str) -> float:
    """The training a `make run` pays under ``strategy`` (e.g. uncertainty:default+distill), from the candidates'
    rows: the first family's ensemble plus, with self-distillation, the distilled ensemble, whichever is champion.
    (Champion rows written before 2026-12-04 held the champion's seconds only.) Other strategies: their own row."""
    prefix, _, name = strategy.rpartition(":")
    prefix = prefix + ":" if prefix else ""
    if not name.startswith("default"):
        return rows[strategy][0]
    parts = [prefix + "ensemble"]
    if "+distill" in name:
        parts.append(f"{prefix}distilled{name.split('+distill', 1)[1]}_ensemble")
    if not all(p in rows for p in parts):
        return rows[strategy][0]
    return sum(rows[p][0] for p in parts)


def pick_champion(rows: dict[str, tuple], tolerance: float, speedup: float, ensemble_margin: float = 0.0) -> str:
    """sql/students/champion.sql's rule on bench rows (score at [3], docs/s at [5]; a strategy named ``*ensemble``
    is an ensemble): the candidates within ``tolerance`` of the best score, and the ensembles within
    ``ensemble_margin`` of it, are as good; of those within ``speedup`` of the fastest as-good one's docs/s, an
    ensemble first (when ``ensemble_margin`` > 0), then the best score."""
    best = max(r[3] for r in rows.values())

    def ensemble(s: str) -> bool:
        return s.endswith("ensemble")

    good = {
        s: r for s, r in rows.items() if r[3] >= best - tolerance or (ensemble(s) and r[3] >= best - ensemble_margin)
    }
    fastest = max(r[5] for r in good.values())
    fast = [s for s, r in good.items() if r[5] * speedup >= fastest]
    return max(fast, key=lambda s: (ensemble_margin > 0 and ensemble(s), good[s][3], good[s][5]))


def stage_students(args) -> None:
    import torch

    torch.set_num_threads(2)
    con = connect()
    con.execute(RESULTS_DDL)
    distill_at = set(getattr(args, "distill_at", None) or [])
    sd = getattr(args, "self_distill", 0)
    only = set(getattr(args, "only", None) or [])
    dfrom = getattr(args, "distill_from", None)
    encoders = getattr(args, "encoders", None)
    rerun = getattr(args, "rerun", False)
    corpora: dict[str, Corpus] = {}
    for name, budgets in PLAN.items():
        corpus = corpora[name] = load_corpus(name)
        usable = [b for b in budgets if b <= (args.max_budget if name == "imdb" else b)]
        for b in usable:
            if only and f"{name}-{b}" not in only:
                continue
            at = getattr(args, "variants_at", None) or max(usable)
            run_budget(
                con,
                corpus,
                b,
                largest=(name == "imdb" and b == at),
                # IMDb budgets by number (1000), the reshaped corpora by name (short:300, short_skew:300)
                self_distill=sd if (str(b) if name == "imdb" else f"{name}:{b}") in distill_at else 0,
                distill_from=dfrom,
                encoders=encoders,
                rerun=rerun,
            )
    # sample.strategy uncertainty on IMDb, at the budgets the label stage paid for.
    from benchmarks.quality import UNCERTAINTY_BUDGETS
    from benchmarks.quality_data import saved_selection, uncertainty_selection

    imdb = corpora["imdb"]
    for b in UNCERTAINTY_BUDGETS:
        if b > getattr(args, "max_uncertainty", 500) or (only and f"imdb-{b}-uncertainty" not in only):
            continue
        cached = teacher_labels(con, "imdb", imdb.pool["doc_key"].to_list())
        names = ["negative", "positive"]

        def label_of(docs: pl.DataFrame) -> dict[str, int]:
            return {
                k: int(np.argmax([cached[k].get(n, 0.0) for n in names]))
                for k in docs["doc_key"].to_list()
                if k in cached
            }

        sel = saved_selection(imdb, b)  # what the label stage paid for; re-derived only if it was not saved
        if sel is None:
            sel = uncertainty_selection(imdb, b, label_of)
        run_budget(
            con,
            imdb,
            b,
            largest=False,
            selection=sel,
            prefix="uncertainty:",
            self_distill=sd if f"uncertainty:{b}" in distill_at else 0,
            distill_from=dfrom,
            rerun=rerun,
        )
    log_paired(con, corpora)


def log_paired(con, corpora: dict[str, Corpus]) -> None:
    """The end of the students stage: each default (champion) row this run wrote, against the teacher on the same
    reviews (``paired_vs_teacher``)."""
    rows = con.execute(
        "SELECT DISTINCT corpus, budget, strategy FROM bench.quality_results WHERE run_id = ? "
        "AND (details->>'champion') IS NOT NULL ORDER BY ALL",
        [RUN_ID],
    ).fetchall()
    labeled: dict[str, pl.DataFrame | None] = {}  # the teacher's answers per corpus, read once
    for name, budget, strategy in rows:
        c = corpora.get(name, name)
        if name not in labeled:
            labeled[name] = teacher_labeled(c)
        p = paired_vs_teacher(c, budget, strategy, con=con, labeled=labeled[name])
        what = paired_text(p) if p else "no paired figure (its predictions or the teacher's answers are missing)"
        log(f"{name}-{budget} {strategy}: {what}")


def stage_report(args) -> None:
    con = connect()
    con.execute(RESULTS_DDL)
    missing = [
        c
        for c in PLAN
        if not con.execute("SELECT count(*) FROM bench.quality_results WHERE corpus = ?", [c]).fetchone()[0]
    ]
    if missing and not getattr(args, "force_report", False):
        # docs/bench_quality.md holds figures of earlier sessions (some measured before the results were exported
        # to benchmarks/data/): a report from a partial table would silently drop them.
        log(f"report: no rows for {', '.join(missing)} in {RESULTS_DB}; not overwriting {DOC} (--force-report does)")
        stage_plot(args)  # the plot keeps the doc's figures beside the measured rows
        return
    df = con.execute(
        "SELECT corpus, budget, strategy, arg_max(test_accuracy, measured_at) AS acc, "
        "arg_max(test_f1, measured_at) AS f1, "
        "arg_max(probe_accuracy, measured_at) AS probe, arg_max(train_seconds, measured_at) AS train_s, "
        "arg_max(docs_per_s, measured_at) AS docs_s, arg_max(teacher_label_accuracy, measured_at) AS teacher_acc, "
        "arg_max(n_train, measured_at) AS n_train, arg_max(load_1m, measured_at) AS load, "
        "arg_max(details, measured_at) AS details FROM bench.quality_results "
        "GROUP BY ALL ORDER BY corpus, budget, strategy"
    ).pl()
    lines = [
        "# `make bench-quality`: students against their teacher and the linear floor",
        "",
        "Generated by `benchmarks/quality_students.py` from `var/bench/quality_results.duckdb` "
        "(`bench.quality_results`); reproduce with `make bench-quality QUALITY_MAX=250` (the teacher's answers "
        "are in `benchmarks/data/quality_answers.parquet`, so only missing ones are asked).",
        "The `default` row is what the champion rule picks among linear / encoder / ensemble; its `probe` "
        "column is the rule's metric, macro-F1 on the probe. `paper` is the recipe this project shipped before "
        "(hard labels, head 256, 3 epochs at 5e-5, no class weights). Timings were taken on 2 shared cores "
        "with other jobs running (load column): compare accuracy, not seconds, across rows.",
        "Teacher: Qwen2.5-Coder-1.5B-Instruct, choice mode, the paper's prompt (answers cached in "
        "`bench.quality_answers`). Student: all-MiniLM-L6-v2 on 2 CPU threads. Test: a fixed class-balanced "
        "slice of 2,000 IMDb test reviews (skewed corpus: 20% positive); the gold probe (500 held-out train "
        "documents) picks the champion; nothing is tuned on test.",
        "Under each table, every `default` row whose test predictions were kept is paired with the teacher on the "
        "teacher's reviews: Δ is the student's accuracy minus the teacher's on the same reviews, with its paired 95% "
        "interval; won/lost counts the reviews only the student / only the teacher got right.",
        "",
    ]
    for corpus in df["corpus"].unique(maintain_order=True).to_list():
        part = df.filter(pl.col("corpus") == corpus)
        lines += [
            f"## {corpus}",
            "",
            "| LLM labels | strategy | test acc. | test macro-F1 | probe acc. | train s | "
            "docs/s | teacher labels right | load |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in part.iter_rows(named=True):
            det = json.loads(r["details"]) if r["details"] else {}
            strat = r["strategy"] + (f" (= {det['champion']})" if "champion" in det else "")
            ta = f"{r['teacher_acc']:.1%}" if r["teacher_acc"] is not None else "–"
            lines.append(
                f"| {r['budget']} | {strat} | {r['acc']:.2%} | {r['f1']:.2%} | {r['probe']:.2%} | "
                f"{r['train_s']:.0f} | {r['docs_s']:.0f} | {ta} | {r['load']:.1f} |"
            )
        labeled = teacher_labeled(corpus)  # once for the teacher row and the paired lines
        if row := teacher_row(corpus, labeled=labeled):
            lines.append(row)
        lines.append("")
        if paired := paired_lines(con, corpus, labeled=labeled):
            lines += [*paired, ""]
    has_ratio = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'bench' AND table_name = 'run_ratio'"
    ).fetchone()[0]
    ratio = (
        con.execute("SELECT details FROM bench.run_ratio ORDER BY measured_at DESC LIMIT 1").fetchone()
        if has_ratio
        else None
    )
    if ratio:
        r = json.loads(ratio[0])
        t = r["teacher_seconds_assumed"]
        t = t if isinstance(t, dict) else {"paper": t, "default": t}  # rows before --ratio-paper-at
        pb = r.get("paper_budget", r["budget"])
        teacher_text = (
            f"the same teacher stage in both ({t['default'] / 60:.0f} min assumed for {r['budget']} prompts)"
            if pb == r["budget"]
            else f"the teacher stage at {r['budget']} prompts for the default ({t['default'] / 60:.0f} min assumed) "
            f"against {pb} for the paper's recipe ({t['paper'] / 60:.0f} min)"
        )
        lines += [
            "## `make run`: new default vs the paper's recipe (ratio stage)",
            "",
            f"At {r['budget']} LLM labels the champion is `{r['champion']}`. Corpus labeling, interleaved "
            f"(paper, default, paper, default) on the same test reviews: {r['docs_per_s']['default']:.1f} vs "
            f"{r['docs_per_s']['paper']:.1f} docs/s (load {', '.join(f'{x:.1f}' for x in r['load_1m'])}); "
            f"training {r['train_seconds']['default']:.0f} s vs {r['train_seconds']['paper']:.0f} s (students "
            f"stage). With {teacher_text} and {r['corpus_docs']:,} documents to label, a `make run` projects to "
            f"{r['projected_run_seconds']['default'] / 60:.0f} vs {r['projected_run_seconds']['paper'] / 60:.0f} "
            f"min: **ratio {r['ratio_default_over_paper']:.3f}** (a projection from measured stage costs, not "
            f"two timed runs).",
            "",
        ]
    con.execute(FULLTEST_DDL)
    full = con.execute(
        "SELECT DISTINCT ON (budget, strategy) * FROM bench.quality_full_test ORDER BY budget, strategy, measured_at DESC"
    ).pl()
    if full.height:
        lines += [
            "## The whole IMDb test split (25,000 reviews): the default, its floor and the paper's recipe",
            "",
            "The fulltest stage (`python -m benchmarks.quality fulltest`): the students stage's checkpoints, unchanged, "
            "on every IMDb test review (the tables above use a fixed 2,000).",
            "",
            "| LLM labels | strategy | checkpoint | test acc. | test macro-F1 | share positive | routed to the floor | "
            "docs/s | load |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in full.iter_rows(named=True):
            routed = f"{r['routed_share']:.1%}" if r["routed_share"] is not None else "–"
            lines.append(
                f"| {r['budget']} | {r['strategy']} | {Path(r['checkpoint']).name} | {r['test_accuracy']:.2%} | "
                f"{r['test_f1']:.2%} | {r['share_positive']:.1%} | {routed} | {r['docs_per_s']:.1f} | {r['load_1m']:.1f} |"
            )
        lines.append("")
    con.execute(ROUTING_DDL)
    routing = con.execute(
        "SELECT DISTINCT ON (tag, ensemble) * FROM bench.quality_routing ORDER BY tag, ensemble, measured_at DESC"
    ).pl()
    if routing.height:
        lines += [
            "## Routing: the floor labels what it is sure of (`student.route_max_changed`)",
            "",
            "The routing stage (`python -m benchmarks.quality routing`): each ensemble of the students stage on its "
            "test slice without routing, then with it (the floor's top probability >= the threshold: the floor alone; "
            "else the ensemble), `--routing-rounds` pairs of passes, interleaved; the faster pass of each counts.",
            "",
            "| checkpoint | ensemble | threshold | to the floor | test acc. unrouted → routed | macro-F1 unrouted → "
            "routed | docs/s unrouted → routed | load |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in routing.iter_rows(named=True):
            if not r["threshold"]:
                lines.append(f"| {r['tag']} | {r['ensemble']} | none qualified | 0% | – | – | – | {r['load_1m']:.1f} |")
                continue
            lines.append(
                f"| {r['tag']} | {r['ensemble']} | {r['threshold']} | {r['routed_share']:.1%} | "
                f"{r['acc_unrouted']:.2%} → {r['acc_routed']:.2%} | {r['f1_unrouted']:.2%} → {r['f1_routed']:.2%} | "
                f"{r['docs_per_s_unrouted']:.0f} → {r['docs_per_s_routed']:.0f} "
                f"({r['docs_per_s_routed'] / r['docs_per_s_unrouted']:.2f}x) | {r['load_1m']:.1f} |"
            )
        lines.append("")
    if NOTES.exists():  # replicates and experiments written by hand, kept across regenerations
        lines += [NOTES.read_text().rstrip("\n")]
    DOC.write_text("\n".join(lines) + "\n")
    log(f"wrote {DOC}")
    stage_plot(args)


# The frontier plot's lines: (series, label, the strategies that stand for it at a budget, first found wins).
# "The default" is what `make run` does at that budget: uncertainty sampling and the champion rule, with the
# self-distilled candidates where they were measured (sample.strategy needs a seed round, so 250 is random).
PLOT_SERIES = [
    (
        "default",
        "the default (champion rule, uncertainty sampling)",
        ["uncertainty:default+distill_cont", "uncertainty:default+distill", "uncertainty:default", "default"],
    ),
    ("uncertainty:ensemble", "ensemble, uncertainty-picked labels", ["uncertainty:ensemble", "ensemble"]),
    ("ensemble", "ensemble (encoder + floor), random labels", ["ensemble"]),
    ("encoder", "encoder (soft labels, class weights), random labels", ["encoder"]),
    ("paper", "the paper's recipe (MiniLM, hard labels), random labels", ["paper"]),
    ("uncertainty:linear", "linear floor, uncertainty-picked labels", ["uncertainty:linear", "linear"]),
    ("linear", "linear floor (TF-IDF + LR), random labels", ["linear"]),
]


FLOOR_Y = 75.0  # the plot's lowest accuracy; below it a point is drawn on the axis with its value


def doc_rows(corpus: str = "imdb") -> pl.DataFrame:
    """The (budget, strategy, acc) rows of ``corpus``'s table in docs/bench_quality.md: figures of earlier sessions
    whose results rows were not kept (the report refuses to regenerate the doc without them)."""
    if not DOC.exists():
        return pl.DataFrame(schema={"budget": pl.Int64, "strategy": pl.Utf8, "acc": pl.Float64})
    rows, inside = [], False
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            inside = line == f"## {corpus}"
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if inside and len(cells) >= 3 and cells[0].isdigit() and cells[2].endswith("%"):
            rows.append((int(cells[0]), cells[1].split(" (= ")[0], float(cells[2].rstrip("%")) / 100))
    return pl.DataFrame(rows, schema={"budget": pl.Int64, "strategy": pl.Utf8, "acc": pl.Float64}, orient="row")


def teacher_labeled(corpus: str | Corpus, n: int = 1000) -> pl.DataFrame | None:
    """``teacher_slice(n)`` of ``corpus``'s test slice (doc_key, text, gold) with the teacher's cached answer to each
    review, from the ``teacher`` stage's answers in ANSWERS (no model load): ``teacher``, its label id (-1: an
    answer without a label), and the answer's ``seconds``. None until all ``n`` are answered (a partial slice is
    not the fixed one the issue asks for)."""
    from benchmarks.quality import TEACHER, teacher_slice

    if not ANSWERS.exists():
        return None
    c = load_corpus(corpus) if isinstance(corpus, str) else corpus
    sub = teacher_slice(c.test, n)
    # Joined by text, not doc_key (answer_texts): test:13166 is unsup:14295, answered when the IMDb pool was
    # labeled, and a short review reads the same in the short corpora and in IMDb.
    answers = pl.read_parquet(ANSWERS).filter(pl.col("model").str.starts_with(TEACHER))
    own = pl.concat([c.pool, c.probe, c.test]).select("doc_key", "text").with_columns(short=pl.lit(c.name != "imdb"))
    got = (
        answer_texts(answers, own).sort("answered_at").unique("text", keep="last").drop("doc_key").join(sub, on="text")
    )
    if got.height < sub.height:
        return None
    probs = [json.loads(x) if x else {} for x in got["label_probs"].to_list()]
    pred = [int(p.get("positive", 0.0) > p.get("negative", 0.0)) if p else -1 for p in probs]
    return got.select(*sub.columns, "seconds").with_columns(teacher=pl.Series(pred, dtype=pl.Int64))


def teacher_alone(corpus: str | Corpus = "imdb", n: int = 1000, labeled: pl.DataFrame | None = None) -> dict | None:
    """The teacher alone on ``teacher_slice(n)`` of ``corpus``'s test slice (``teacher_labeled``, or ``labeled`` when
    the caller has it): accuracy, macro-F1, share positive and prompts/s of the measured answers; None until all
    ``n`` are answered."""
    from llambert.metrics import classification_metrics

    got = labeled if labeled is not None else teacher_labeled(corpus, n)
    if got is None:
        return None
    pred = got["teacher"].to_list()
    m = classification_metrics(got["gold"].to_list(), pred, [0, 1])
    secs = got["seconds"].drop_nulls()
    return {
        "n": got.height,
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "share_positive": sum(p == 1 for p in pred) / got.height,
        "prompts_per_s": secs.len() / secs.sum() if secs.len() else None,
    }


def paired_vs_teacher(
    corpus: str | Corpus,
    budget: int,
    strategy: str,
    n: int = 1000,
    con: duckdb.DuckDBPyConnection | None = None,
    labeled: pl.DataFrame | None = None,
) -> dict | None:
    """The latest run's test predictions of (``corpus``, ``budget``, ``strategy``) against the teacher on the same
    ``teacher_slice(n)`` reviews: two accuracies on one slice differ by less than their own intervals say, so the
    difference is measured per review (diff = student right - teacher right, in points, with 1.96 * sqrt(var(diff)
    / n), sample variance), with the reviews only the student got right (won) or only the teacher (lost) and how
    often the two agree. None when the predictions or the teacher's answer of any review of the slice is missing."""
    con = con if con is not None else connect()
    name = corpus if isinstance(corpus, str) else corpus.name
    run = con.execute(
        "SELECT arg_max(run_id, measured_at) FROM bench.quality_test_predictions "
        "WHERE corpus = ? AND budget = ? AND strategy = ?",
        [name, budget, strategy],
    ).fetchone()[0]
    if run is None:
        return None
    sub = labeled if labeled is not None else teacher_labeled(corpus, n)
    if sub is None:
        return None
    preds = con.execute(
        "SELECT doc_key, label AS student FROM bench.quality_test_predictions "
        "WHERE run_id = ? AND corpus = ? AND budget = ? AND strategy = ?",
        [run, name, budget, strategy],
    ).pl()
    got = paired_frame(sub, preds)
    return None if got is None else {"run_id": run} | got


def paired_frame(sub: pl.DataFrame, preds: pl.DataFrame) -> dict | None:
    """``paired_vs_teacher``'s figures from ``teacher_labeled``'s frame and the student's labels (doc_key, student);
    None when a review of the slice has no student label."""
    got = sub.join(preds.cast({"student": pl.Int64}), on="doc_key", how="left")
    if got["student"].null_count():
        return None
    s_right = (got["student"] == got["gold"]).cast(pl.Int64).to_numpy()
    t_right = (got["teacher"] == got["gold"]).cast(pl.Int64).to_numpy()
    diff = s_right - t_right
    k = len(diff)
    half = 1.96 * float(np.sqrt(np.var(diff, ddof=1) / k)) if k > 1 else float("nan")
    mean = float(diff.mean())
    return {
        "n": k,
        "student_accuracy": float(s_right.mean()),
        "teacher_accuracy": float(t_right.mean()),
        "diff_pt": 100 * mean,
        "diff_lo_pt": 100 * (mean - half),
        "diff_hi_pt": 100 * (mean + half),
        "won": int(((s_right == 1) & (t_right == 0)).sum()),
        "lost": int(((s_right == 0) & (t_right == 1)).sum()),
        "agreement": float((got["student"] == got["teacher"]).mean()),
    }


def paired_text(p: dict) -> str:
    """``paired_vs_teacher``'s figures in one line (the report under each table, the students stage's log)."""
    return (
        f"paired on the teacher's {p['n']:,}: student {p['student_accuracy']:.1%} vs teacher "
        f"{p['teacher_accuracy']:.1%}, Δ {p['diff_pt']:+.1f} pt ({p['diff_lo_pt']:+.1f} to {p['diff_hi_pt']:+.1f}), "
        f"won/lost {p['won']}/{p['lost']}"
    )


def paired_lines(con, corpus: str | Corpus, n: int = 1000, labeled: pl.DataFrame | None = None) -> list[str]:
    """The report's list under a corpus table: every default (champion) row with test predictions, paired with the
    teacher on its ``n`` reviews (``teacher_labeled`` computed once for all of them)."""
    name = corpus if isinstance(corpus, str) else corpus.name
    rows = con.execute(
        "SELECT DISTINCT budget, strategy FROM bench.quality_test_predictions WHERE corpus = ? ORDER BY ALL", [name]
    ).fetchall()
    out = []
    defaults = [(b, s) for b, s in rows if s.rpartition(":")[2].startswith("default")]
    if defaults and labeled is None:
        labeled = teacher_labeled(corpus, n)
    for budget, strategy in defaults:
        if p := paired_vs_teacher(corpus, budget, strategy, n, con=con, labeled=labeled):
            out.append(f"- {budget} `{strategy}`: {paired_text(p)}")
    return out


def teacher_test_accuracy(n: int = 1000) -> tuple[float, int]:
    """The plot's teacher line: ``teacher_alone`` on IMDb, with its count; (0.90, 0) until all ``n`` are
    answered: docs/bench_teacher.md's 500 reviews."""
    t = teacher_alone("imdb", n)
    return (t["accuracy"], t["n"]) if t else (0.90, 0)


def teacher_row(corpus: str | Corpus, n: int = 1000, labeled: pl.DataFrame | None = None) -> str | None:
    """The report tables' teacher-alone row (the issue: the same table shows the teacher on a fixed 1,000)."""
    t = teacher_alone(corpus, n, labeled)
    if t is None:
        return None
    pps = f"{t['prompts_per_s']:.2f} prompts/s" if t["prompts_per_s"] else "–"
    return (
        f"| – | teacher alone ({t['n']:,} test reviews) | {t['accuracy']:.2%} | {t['macro_f1']:.2%} | – | – | "
        f"{pps} | – | – |"
    )


def stage_plot(args) -> None:
    """docs/bench_quality.png from the doc's IMDb table and every results row (a row measured here wins over the
    doc's figure for the same budget and strategy)."""
    con = connect()
    con.execute(RESULTS_DDL)
    measured = con.execute(
        "SELECT budget, strategy, arg_max(test_accuracy, measured_at) AS acc FROM bench.quality_results "
        "WHERE corpus = 'imdb' GROUP BY ALL"
    ).pl()
    known = doc_rows("imdb").join(measured, on=["budget", "strategy"], how="anti")
    _plot(
        pl.concat([known, measured.cast({"budget": pl.Int64})], how="diagonal_relaxed").with_columns(
            corpus=pl.lit("imdb")
        )
    )


def _plot(df: pl.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = df.filter(pl.col("corpus") == "imdb")
    if part.is_empty():
        return
    acc = {(r["budget"], r["strategy"]): r["acc"] for r in part.iter_rows(named=True)}
    budgets = sorted(part["budget"].unique().to_list())
    fig, ax = plt.subplots(figsize=(9, 4.8))
    styles = ["-", "-", "--", "--", ":", "-.", "-."]
    from benchmarks.quality import UNCERTAINTY_BUDGETS

    def stands(series: str, budget: int, strategy: str) -> bool:
        """A random-sample row stands in for an uncertainty series only below the budgets where uncertainty
        sampling ran (its first round is the random seed)."""
        if series.startswith(("uncertainty:", "default")) and not strategy.startswith("uncertainty:"):
            return budget < min(UNCERTAINTY_BUDGETS)
        return True

    for (series, label, members), ls in zip(PLOT_SERIES, styles):
        pts = [
            (b, next(acc[(b, m)] for m in members if (b, m) in acc and stands(series, b, m)))
            for b in budgets
            if any((b, m) in acc and stands(series, b, m) for m in members)
        ]
        if not pts:
            continue
        lw = 2.6 if series == "default" else 1.4
        ys = [max(100 * v, FLOOR_Y) for _, v in pts]  # a collapsed student sits on the axis, labelled
        z = 3 if series == "default" else 2
        line = ax.plot([b for b, _ in pts], ys, ls, marker="o", lw=lw, label=label, zorder=z)[0]
        for b, v in pts:
            if 100 * v < FLOOR_Y:
                ax.annotate(
                    f"{100 * v:.1f}% (collapsed)",
                    (b, FLOOR_Y),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                    color=line.get_color(),
                )
    t_acc, t_n = teacher_test_accuracy()
    where = f"{t_n:,} of these test reviews" if t_n else "500 test reviews, docs/bench_teacher.md"
    ax.axhline(100 * t_acc, color="black", linestyle="--", lw=1, label=f"teacher alone ({100 * t_acc:.1f}%, {where})")
    ax.set_xlabel("LLM calls (teacher labels)")
    ax.set_ylabel("IMDb test accuracy (%), 2,000 test reviews")
    ax.set_xscale("log")
    ax.set_xticks(budgets, [f"{b:,}" for b in budgets])
    ax.minorticks_off()
    ax.set_ylim(FLOOR_Y - 0.5, 92)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    ax.set_title("Students vs LLM budget (Qwen2.5-Coder-1.5B teacher, MiniLM-L6 student)", fontsize=10)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    log(f"wrote {PLOT}")


ROUTING_DDL = """
CREATE TABLE IF NOT EXISTS bench.quality_routing (
    run_id VARCHAR, measured_at TIMESTAMP DEFAULT current_timestamp, corpus VARCHAR, tag VARCHAR, ensemble VARCHAR,
    threshold DOUBLE, test_n INTEGER, routed_share DOUBLE, acc_unrouted DOUBLE, acc_routed DOUBLE, f1_unrouted DOUBLE,
    f1_routed DOUBLE, docs_per_s_unrouted DOUBLE, docs_per_s_routed DOUBLE, load_1m DOUBLE);
"""


def stage_routing(args) -> None:
    """student.route_max_changed: every trained ensemble of the students stage, on its corpus's test slice, with
    and without routing (the same loaded members; unrouted first, then routed, ``--routing-rounds`` times: the
    faster pass of each counts). Writes ``bench.quality_routing``."""
    import torch

    from llambert.config import StudentConfig
    from llambert.metrics import classification_metrics
    from llambert.student.predict import load_predictor

    torch.set_num_threads(2)
    con = connect()
    con.execute(ROUTING_DDL)
    cfg = StudentConfig()
    corpora = {}
    for tag in sorted(p for p in CKPT.iterdir() if p.is_dir()):
        name = tag.name.rsplit("-", 1)[0] if "uncertainty" not in tag.name else tag.name.split("-")[0]
        for ens_name in ("ensemble", "distilled_ensemble"):
            if not (tag / ens_name / "ensemble.json").exists():
                continue
            corpus = corpora.setdefault(name, load_corpus(name))
            texts, gold = corpus.test["text"].to_list(), corpus.test["gold"].to_list()
            ens = load_predictor(tag / ens_name, cfg.infer_max_length, cfg.infer_batch_size, cfg.truncation, threads=2)
            t = ens.route_threshold  # fitted when the ensemble was built (student.route_max_changed)
            if not t:
                log(f"routing: {tag.name}/{ens_name}: no threshold qualified (the floor never agrees enough); skipped")
                row = [RUN_ID, name, tag.name, ens_name, 0.0, len(texts), 0.0] + [None] * 6 + [os.getloadavg()[0]]
                con.execute("INSERT INTO bench.quality_routing VALUES (?, DEFAULT, ?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
                continue
            res: dict[float, dict] = {}
            rounds = getattr(args, "routing_rounds", 2)
            for threshold in (0.0, t) * rounds:
                ens.route_threshold, ens.routed, ens.seen = threshold, 0, 0
                t0 = time.perf_counter()
                labels, _ = ens.predict(texts)
                secs = time.perf_counter() - t0
                m = classification_metrics(gold, labels, [0, 1])
                r = res.setdefault(threshold, {"secs": secs})
                r |= {"acc": m["accuracy"], "f1": m["macro_f1"], "share": ens.routed / max(ens.seen, 1)}
                r["secs"] = min(r["secs"], secs)
            row = [
                RUN_ID,
                name,
                tag.name,
                ens_name,
                t,
                len(texts),
                res[t]["share"],
                res[0.0]["acc"],
                res[t]["acc"],
                res[0.0]["f1"],
                res[t]["f1"],
                len(texts) / res[0.0]["secs"],
                len(texts) / res[t]["secs"],
                os.getloadavg()[0],
            ]
            con.execute("INSERT INTO bench.quality_routing VALUES (?, DEFAULT, ?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
            log(
                f"routing {tag.name}/{ens_name} at {t}: {res[t]['share']:.1%} to the floor; acc {res[0.0]['acc']:.4f} -> "
                f"{res[t]['acc']:.4f}; {row[11]:.0f} -> {row[12]:.0f} docs/s (load {row[13]:.1f})"
            )


FULLTEST_DDL = """
CREATE TABLE IF NOT EXISTS bench.quality_full_test (
    run_id VARCHAR, measured_at TIMESTAMP DEFAULT current_timestamp, budget INTEGER, strategy VARCHAR,
    checkpoint VARCHAR, test_n INTEGER, test_accuracy DOUBLE, test_f1 DOUBLE, share_positive DOUBLE,
    routed_share DOUBLE, docs_per_s DOUBLE, load_1m DOUBLE);
"""
FULLTEST_EXPORT = PROJECT_ROOT / "benchmarks" / "data" / "quality_full_test.parquet"
FULLTEST_STRATEGIES = ["uncertainty:default+distill_cont", "uncertainty:linear", "paper"]


def _fulltest_checkpoint(con, budget: int, strategy: str) -> Path | None:
    """The folder a bench row's strategy trained: a champion row names it, the others are CKPT/tag/kind."""
    got = con.execute(
        "SELECT arg_max(details, measured_at) FROM bench.quality_results WHERE corpus = 'imdb' AND budget = ? "
        "AND strategy = ?",
        [budget, strategy],
    ).fetchone()
    if not got or got[0] is None:
        return None
    details = json.loads(got[0])
    prefix, _, kind = strategy.rpartition(":")
    path = (
        Path(details["path"])
        if "path" in details
        else CKPT / (f"imdb-{budget}" + (f"-{prefix}" if prefix else "")) / kind
    )
    return path if path.is_dir() else None


def stage_fulltest(args) -> None:
    """The final default, its floor and the paper's recipe on all 25,000 IMDb test reviews (the students stage
    scores every strategy on a fixed 2,000; this is the issue's "final default also on all 25,000"). The
    checkpoints are the students stage's, at ``--full-at`` labels; nothing is retrained. Writes
    ``bench.quality_full_test`` (exported to benchmarks/data/quality_full_test.parquet)."""
    import torch

    from benchmarks.common import imdb_dir
    from benchmarks.quality_data import _frame
    from llambert.config import StudentConfig
    from llambert.metrics import classification_metrics
    from llambert.student.predict import load_predictor

    torch.set_num_threads(2)
    con = connect()
    con.execute(FULLTEST_DDL)
    budget = getattr(args, "full_at", None) or 1000
    test = _frame(pl.read_parquet(imdb_dir() / "test.parquet"), "test", False)
    texts, gold = test["text"].to_list(), test["gold"].to_list()
    for strategy in getattr(args, "full_strategies", None) or FULLTEST_STRATEGIES:
        path = _fulltest_checkpoint(con, budget, strategy)
        if path is None:
            log(f"fulltest: no checkpoint for {strategy} at IMDb {budget}: run the students stage first; skipped")
            continue
        cfg = StudentConfig(truncation="head") if strategy == "paper" else StudentConfig()
        pred = load_predictor(path, cfg.infer_max_length, cfg.infer_batch_size, cfg.truncation, threads=2)
        labels: list[int] = []
        t0 = time.perf_counter()
        step = 2500
        for start in range(0, len(texts), step):
            labels += pred.predict(texts[start : start + step])[0]
            done = len(labels)
            log(f"fulltest {strategy}: {done:,}/{len(texts):,} reviews, {done / (time.perf_counter() - t0):.1f} docs/s")
        secs = time.perf_counter() - t0
        m = classification_metrics(gold, labels, [0, 1])
        routed = pred.routed / max(pred.seen, 1) if hasattr(pred, "routed") else None  # ensembles only
        row = [RUN_ID, budget, strategy, str(path), len(texts), m["accuracy"], m["macro_f1"]]
        row += [sum(labels) / len(labels), routed, len(texts) / secs, os.getloadavg()[0]]
        con.execute("INSERT INTO bench.quality_full_test VALUES (?, DEFAULT, ?,?,?,?,?,?,?,?,?,?)", row)
        con.execute(
            f"COPY (SELECT * FROM bench.quality_full_test ORDER BY measured_at) TO '{FULLTEST_EXPORT}' "
            "(FORMAT parquet, COMPRESSION zstd)"
        )
        log(
            f"fulltest {strategy} ({path.name}): acc {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} on "
            f"{len(texts):,} reviews, {len(texts) / secs:.1f} docs/s (load {row[-1]:.1f})"
        )


def teacher_rates_then_now(model: str = "qwen2.5-coder-1.5b-instruct") -> tuple[float, float]:
    """Prompts per second (wall) of the issue's teacher path (then:generate) and this checkout's default
    (now:<its default mode>) on the reviews both answered, from `python -m benchmarks.teacher_then_now`'s table."""
    from benchmarks.teacher import BENCH_DB, open_bench
    from benchmarks.teacher_then_now import THEN_REF, Arm, rev_parse, table
    from llambert.config import TeacherConfig

    now_mode = TeacherConfig().mode  # today's default mode (choice since 2026-12-05)
    arms = [Arm("then", "generate"), Arm("now", now_mode)]
    con = open_bench(BENCH_DB)
    try:
        t = table(con, arms, rev_parse(THEN_REF), model)
    finally:
        con.close()
    if t.is_empty() or not t["n"][0]:
        raise SystemExit(
            f"ratio --teacher-from-then-now: no then:generate / now:{now_mode} rows for this checkout's default; run "
            f"`python -m benchmarks.teacher_then_now --arms then:generate now:{now_mode}` first"
        )
    return float(t["prompts_per_s"][0]), float(t["prompts_per_s"][1])


def stage_ratio(args) -> None:
    """`make run`'s wall time, new default vs the paper's recipe, from costs measured in this run.

    The teacher stage is the same in both (same sample, same teacher, same cache), so the ratio is set by
    what differs: training (measured by the students stage at ``--ratio-at`` labels) and corpus labeling,
    measured here interleaved (paper, default, paper, default) on the same test documents.
    """
    import torch

    from llambert.config import StudentConfig
    from llambert.student.predict import load_predictor

    torch.set_num_threads(2)
    con = connect()
    budget = getattr(args, "ratio_at", None) or 1000
    # The paper's recipe at its own budget: today's default asks the teacher 1,000 times, a new default may ask
    # fewer (uncertainty sampling), and then the teacher stage differs too.
    paper_budget = getattr(args, "ratio_paper_at", None) or budget
    strategy = getattr(args, "ratio_strategy", None) or "default"  # e.g. uncertainty:default+distill

    def rows_at(b: int) -> dict:
        return {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT strategy, arg_max(train_seconds, measured_at), arg_max(details, measured_at) "
                "FROM bench.quality_results WHERE corpus = 'imdb' AND budget = ? GROUP BY strategy",
                [b],
            ).fetchall()
        }

    row = rows_at(budget)
    paper_rows = rows_at(paper_budget)
    if strategy not in row or "paper" not in paper_rows:
        log(f"ratio: run the students stage first (no {strategy} row at IMDb {budget} or paper row at {paper_budget})")
        return
    row["paper"] = paper_rows["paper"]
    if row[strategy][0] is None or row[strategy][0] != row[strategy][0]:  # NaN: a reused checkpoint's seconds
        log(f"ratio: {strategy} at {budget} has no measured training seconds; retrain it to measure the ratio")
        return
    champion = json.loads(row[strategy][1])["champion"]
    new, paper = StudentConfig(), StudentConfig(truncation="head")
    tag = CKPT / f"imdb-{paper_budget}"
    champ_dir = json.loads(row[strategy][1]).get("path")
    if not champ_dir:  # rows written before the path was stored: the strategy's own folder
        home = CKPT / (f"imdb-{budget}-{strategy.split(':')[0]}" if ":" in strategy else f"imdb-{budget}")
        champ_dir = next(iter(sorted(home.glob("distilled_*"))), None) if champion == "distilled" else home / champion
    champ_dir = Path(champ_dir)
    preds = {
        "paper": load_predictor(tag / "paper", paper.infer_max_length, paper.infer_batch_size, "head", threads=2),
        "default": load_predictor(champ_dir, new.infer_max_length, new.infer_batch_size, new.truncation, threads=2),
    }
    texts = load_corpus("imdb").test["text"].to_list()[: getattr(args, "ratio_docs", 1000)]
    secs = {"paper": [], "default": []}
    loads = []
    for _ in range(2):
        for name in ("paper", "default"):
            t0 = time.perf_counter()
            preds[name].predict(texts)
            secs[name].append(time.perf_counter() - t0)
            loads.append(os.getloadavg()[0])
    dps = {k: len(texts) / min(v) for k, v in secs.items()}
    train = {"paper": row["paper"][0], "default": _run_training_seconds(row, strategy)}
    # The teacher stage: by default the same rate in both (the 1.5B, generate, batch 1 on 2 quiet cores,
    # docs/bench_teacher.md: 0.57 prompts/s); with --teacher-from-then-now each side's own teacher path, measured
    # in one run on this machine (benchmarks/teacher_then_now.py: the code vs this checkout's default).
    rate = getattr(args, "teacher_prompts_per_s", 0.57)
    rates = teacher_rates_then_now() if getattr(args, "teacher_from_then_now", False) else None
    if rates:
        log(f"ratio: teacher prompts/s from teacher_then_now: old default {rates[0]:.3f}, today's {rates[1]:.3f}")
    teacher = {"paper": paper_budget / (rates[0] if rates else rate), "default": budget / (rates[1] if rates else rate)}
    n_docs = 100_000  # make run labels every IMDb document (train + test + unsup)
    total = {k: teacher[k] + train[k] + n_docs / dps[k] for k in dps}
    out = {
        "budget": budget,
        "paper_budget": paper_budget,
        "strategy": strategy,
        "champion": champion,
        "docs_per_s": dps,
        "train_seconds": train,
        "teacher_seconds_assumed": teacher,
        "teacher_prompts_per_s": {"paper": rates[0], "default": rates[1]} if rates else rate,
        "corpus_docs": n_docs,
        "projected_run_seconds": total,
        "ratio_default_over_paper": total["default"] / total["paper"],
        "labeling_ratio": dps["paper"] / dps["default"],
        "load_1m": loads,
    }
    con.execute(
        "CREATE TABLE IF NOT EXISTS bench.run_ratio (measured_at TIMESTAMP DEFAULT current_timestamp, details JSON)"
    )
    con.execute("INSERT INTO bench.run_ratio (details) VALUES (?)", [json.dumps(out)])
    log(
        f"ratio: default ({champion}) {dps['default']:.1f} docs/s vs paper {dps['paper']:.1f} docs/s "
        f"(interleaved, load {', '.join(f'{x:.1f}' for x in loads)}); training {train['default']:.0f} s vs "
        f"{train['paper']:.0f} s; teacher {budget} vs {paper_budget} prompts; projected make run {total['default'] / 60:.0f} min vs {total['paper'] / 60:.0f} min "
        f"= ratio {out['ratio_default_over_paper']:.3f}"
    )
