"""Self-distillation at 1,000 random IMDb LLM labels: does the ensemble teach the encoder?

An experiment, not yet a product option (students issue, README "Students"). It reuses the
checkpoints the ``students`` stage left in ``var/bench/quality_checkpoints/imdb-1000``:

1. the ensemble (encoder + linear floor, calibrated on the validation split) labels ``--pool`` more
   documents of the pool that the teacher never saw (soft labels, its probabilities);
2. a fresh MiniLM is fine-tuned with the product's defaults on the teacher's labels plus those;
3. it and its own ensemble with the same floor are scored on the fixed test slice and the gold probe.

``--more-steps`` trains instead with ``min_train_steps=450`` on the teacher's labels only (the
control: is it just more optimizer steps?). Run: ``python -m benchmarks.quality_distill [--pool 2000]``.
Figures are printed and appended to ``bench.quality_distill`` in ``var/bench/quality_results.duckdb``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.common import logger
from benchmarks.quality_data import load_corpus
from benchmarks.quality_students import CKPT, _phase, connect, teacher_labels

log = logger("bench-quality-distill")


def main(argv: list[str] | None = None) -> None:
    import torch

    from llambert.config import PROJECT_ROOT, StudentConfig
    from llambert.models import resolve_model
    from llambert.student.ensemble import fit_ensemble, mix
    from llambert.student.family import split_phases
    from llambert.student.predict import load_predictor
    from llambert.student.train import Phase, train_student

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=2000, help="unlabeled pool documents the ensemble labels")
    ap.add_argument("--more-steps", action="store_true", help="the control: more steps, no extra documents")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    con = connect()
    corpus = load_corpus("imdb")
    names, ids = ["negative", "positive"], [0, 1]
    tag = CKPT / "imdb-1000"
    pool = corpus.pool.head(1000)
    answers = teacher_labels(con, "imdb", pool["doc_key"].to_list())
    cfg = StudentConfig()
    train, val = split_phases([_phase(pool, answers, names, ids)], cfg)
    extra = corpus.pool.slice(1000).head(args.pool)
    texts = {
        "val": val.texts,
        "test": corpus.test["text"].to_list(),
        "probe": corpus.probe["text"].to_list(),
        "pool": extra["text"].to_list(),
    }
    gold = {
        "val": np.array(val.labels),
        "test": corpus.test["gold"].to_numpy(),
        "probe": corpus.probe["gold"].to_numpy(),
    }

    def acc(lp: np.ndarray, k: str) -> float:
        return float((lp.argmax(1) == gold[k]).mean())

    enc = load_predictor(tag / "encoder", cfg.infer_max_length, cfg.infer_batch_size, cfg.truncation, threads=2)
    lin = load_predictor(tag / "linear")
    E = {k: enc.log_probs(v) for k, v in texts.items() if k != "pool" or not args.more_steps}
    L = {k: lin.log_probs(v) for k, v in texts.items()}
    temps, w = fit_ensemble([E["val"], L["val"]], gold["val"])
    base = {"encoder": (acc(E["test"], "test"), acc(E["probe"], "probe"))}
    base["ensemble"] = tuple(acc(mix([E[k], L[k]], temps, w), k) for k in ("test", "probe"))

    base_path = str(resolve_model("all-minilm-l6-v2", PROJECT_ROOT / "var" / "models", role="student").path)
    if args.more_steps:
        name, phases, tcfg = "more_steps", train, StudentConfig(min_train_steps=450)
    else:
        pe = np.exp(mix([E["pool"], L["pool"]], temps, w))
        t = train[0]
        phases = [
            Phase(
                "llm",
                t.texts + texts["pool"],
                t.labels + [ids[i] for i in pe.argmax(1)],
                t.doc_ids + extra["doc_key"].to_list(),
                probs=t.probs + [{ids[0]: float(a), ids[1]: float(b)} for a, b in pe],
            )
        ]
        name, tcfg = f"distill_{args.pool}", cfg
    out = Path(tag / name)
    t0 = time.perf_counter()
    r = train_student(base_path, names, ids, phases, tcfg, out, val=val, threads=2)
    secs = time.perf_counter() - t0
    new = load_predictor(out, cfg.infer_max_length, cfg.infer_batch_size, cfg.truncation, threads=2)
    N = {k: new.log_probs(texts[k]) for k in ("val", "test", "probe")}
    t2, w2 = fit_ensemble([N["val"], L["val"]], gold["val"])
    row = {
        "variant": name,
        "train_seconds": secs,
        "best_epoch": r.best_epoch,
        "load_1m": os.getloadavg()[0],
        "before": base,
        "encoder": (acc(N["test"], "test"), acc(N["probe"], "probe")),
        "ensemble": tuple(acc(mix([N[k], L[k]], t2, w2), k) for k in ("test", "probe")),
    }
    con.execute(
        "CREATE TABLE IF NOT EXISTS bench.quality_distill (measured_at TIMESTAMP DEFAULT current_timestamp, details JSON)"
    )
    con.execute("INSERT INTO bench.quality_distill (details) VALUES (?)", [json.dumps(row)])
    log(
        f"{name}: (test, probe) accuracy before {base}; after: encoder {row['encoder']}, ensemble {row['ensemble']}; "
        f"trained {secs:.0f} s, best epoch {r.best_epoch}, load {row['load_1m']:.1f}"
    )


if __name__ == "__main__":
    main()
