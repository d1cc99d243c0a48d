"""`make bench-teacher`: every offline teacher, every mode, on the same IMDb test reviews.

For each model: ``choice`` (score the label tokens, batched), ``generate`` (greedy, batched,
parsed by the task's SQL parser) and, as the baseline on the same model, the LlamBERT paper's
way: one prompt at a time, sampling with temperature 1.0 and top_k 50, max_new_tokens 10.
Accuracy, discard rate, share predicted positive and prompts/s go to ``bench.teacher`` in
``var/bench/teacher.duckdb`` (one row per model x method x run, with the n it used) and to
``docs/bench_teacher.md`` (whose Notes section is ``docs/bench_teacher_notes.md``, written by hand).
The baseline can run on a subset (``--baseline-n``) because it is slow; the markdown says which n
every figure used.

Run with ``nice -n 10`` on a shared machine: ``make bench-teacher N=200 BASELINE_N=60``.

``--truncation-sweep``, ``--injection`` and ``--cascade`` run the experiments of
benchmarks/teacher_sweeps.py instead (one row per answer in ``bench.teacher_docs``, resumable), each
with its own section of the report: ``make bench-teacher TEACHER_ARGS="--injection"``.
"""

from __future__ import annotations

import argparse
import platform
import time
import uuid
from pathlib import Path

import duckdb
import polars as pl

from benchmarks.common import BENCH_VAR, DOCS, conditions, connect_bench, logger
from benchmarks.injection import INJECTION_STYLES
from llambert.config import TeacherConfig, load_settings

BENCH_DB = BENCH_VAR / "teacher.duckdb"
DOC = DOCS / "bench_teacher.md"
NOTES = DOCS / "bench_teacher_notes.md"  # the findings in prose, the report's last section (written by hand)
# name, few-shot examples (the Gemma base model needs a few-shot prompt)
TEACHERS = {
    "qwen2.5-coder-1.5b-instruct": 0,
    "qwen2.5-coder-0.5b-instruct": 0,
    "smollm2-135m-instruct": 0,
    "gemma-3-270m": 2,
}
METHODS = ("choice", "generate", "baseline")
# One answer per row for the experiments of benchmarks/teacher_sweeps.py (truncation, injection, cascade).
DOCS_DDL = """CREATE TABLE IF NOT EXISTS bench.teacher_docs (
    experiment VARCHAR, config VARCHAR, model VARCHAR, model_identity VARCHAR, decoding VARCHAR,
    doc_key VARCHAR, attack VARCHAR, gold INTEGER, label INTEGER, raw_text VARCHAR, label_probs VARCHAR,
    p_top DOUBLE, prompt_tokens INTEGER, tokens_read INTEGER, completion_tokens INTEGER, wall_s DOUBLE,
    cpu_s DOUBLE, load_1m DOUBLE, chunk INTEGER, threads INTEGER, host VARCHAR, run_id VARCHAR,
    measured_at TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (experiment, config, model_identity, decoding, doc_key))"""

log = logger("bench-teacher")


def open_bench(path: Path = BENCH_DB) -> duckdb.DuckDBPyConnection:
    con = connect_bench(path)
    con.execute("CREATE SCHEMA IF NOT EXISTS labeling")
    con.execute(
        """CREATE TABLE IF NOT EXISTS bench.teacher (
            run_id VARCHAR, measured_at TIMESTAMP DEFAULT current_timestamp, model VARCHAR, model_identity VARCHAR,
            method VARCHAR, few_shot INTEGER, batch_size INTEGER, decoding VARCHAR, n INTEGER, accuracy DOUBLE,
            discard_rate DOUBLE, share_positive DOUBLE, acc_top80 DOUBLE, prompts_per_s DOUBLE, seconds DOUBLE,
            prompt_tokens BIGINT, completion_tokens BIGINT, threads INTEGER, host VARCHAR,
            cpu_seconds DOUBLE, prompts_per_cpu_s DOUBLE)"""
    )
    for col in ("cpu VARCHAR", "load_before DOUBLE", "load_after DOUBLE"):  # added after the first runs
        con.execute(f"ALTER TABLE bench.teacher ADD COLUMN IF NOT EXISTS {col}")
    con.execute(DOCS_DDL)
    return con


def reviews(data_dir: Path, n: int, seed: int = 0) -> pl.DataFrame:
    """The same n IMDb test reviews for every model and method: a seeded, class-balanced draw,
    interleaved by label, so that every prefix (the baseline's ``--baseline-n``) is balanced too
    and a model that always answers one label scores 50%, not whatever the draw happened to hold."""
    frame = pl.read_parquet(data_dir / "test.parquet")
    id_col = "id" if "id" in frame.columns else None
    frame = frame.with_columns(
        doc_id=frame[id_col].cast(pl.Utf8) if id_col else pl.Series([f"t{i}" for i in range(frame.height)]),
        gold=pl.col("label").cast(pl.Int64),
    )
    labels = sorted(frame["gold"].unique().to_list())
    per = -(-n // len(labels))
    parts = [
        frame.filter(pl.col("gold") == y)
        .sample(fraction=1.0, seed=seed + i, shuffle=True)
        .head(per)
        .with_row_index("k")
        for i, y in enumerate(labels)
    ]
    mixed = pl.concat(parts).sort(["k", "gold"]).head(n)
    return mixed.select("doc_id", "text", "gold")


def parse(con: duckdb.DuckDBPyConnection, task, docs: pl.DataFrame, answers) -> pl.DataFrame:
    """Raw answers through the project's own parser (sql/labeling/answer_matches.sql)."""
    from llambert.warehouse import run_model, write_task_labels

    write_task_labels(con, task)
    frame = pl.DataFrame(
        {
            "doc_id": docs["doc_id"],
            "raw_text": [a.raw_text for a in answers],
            "p_top": [max(a.label_probs.values()) if a.label_probs else None for a in answers],
        }
    )
    con.register("staged_answers", frame)
    con.execute(
        "CREATE OR REPLACE TABLE labeling.llm_responses AS SELECT doc_id, raw_text, "
        "NULL::MAP(VARCHAR, DOUBLE) AS label_probs FROM staged_answers"
    )
    run_model(con, "labeling.answer_matches")
    out = con.execute(
        "SELECT m.doc_id, m.label, s.p_top FROM labeling.answer_matches m JOIN staged_answers s USING (doc_id)"
    ).pl()
    con.unregister("staged_answers")
    return docs.join(out, on="doc_id", how="left")


def score(parsed: pl.DataFrame) -> dict:
    n = parsed.height
    ok = parsed.filter(pl.col("label").is_not_null())
    acc = (ok["label"] == ok["gold"]).sum() / n if n else None  # a discard counts as wrong
    top80 = None
    if parsed["p_top"].null_count() == 0 and n >= 10:
        k = int(n * 0.8)
        best = parsed.sort("p_top", descending=True).head(k)
        top80 = float((best["label"] == best["gold"]).sum() / k)
    return {
        "n": n,
        "accuracy": float(acc) if acc is not None else None,
        "discard_rate": (n - ok.height) / n if n else None,
        "share_positive": float((ok["label"] == 1).sum() / n) if n else None,
        "acc_top80": top80,
    }


def run_method(model: str, few_shot: int, method: str, docs: pl.DataFrame, batch_size: int, settings):
    """Answers and timing of one method; the model load is not timed."""
    from llambert.models import resolve_model
    from llambert.tasks import load_task
    from llambert.teacher.base import DecodingParams
    from llambert.teacher.hf_backend import TransformersTeacher

    task = load_task("imdb_sentiment")
    resolved = resolve_model(model, settings.models_dir, role="teacher")
    if method == "baseline":  # the paper: one at a time, sampling
        dec = DecodingParams("generate", 10, 1.0, 50, few_shot, 640)
        batch_size = 1
    elif method == "generate":
        dec = DecodingParams("generate", 4, 0.0, 0, few_shot, 640)
    else:
        dec = DecodingParams("choice", 4, 0.0, 0, few_shot, 640)
    teacher = TransformersTeacher(
        str(resolved.path), resolved.identity, task, dec, threads=settings.threads, dtype=settings.teacher.dtype
    )
    if method == "baseline":
        import torch

        torch.manual_seed(0)
    prepared = teacher.prepare(docs["text"].to_list())
    order = sorted(range(len(prepared)), key=lambda i: -len(prepared[i]))  # length-sorted, as the runner does
    answers = [None] * len(prepared)
    t0, c0 = time.perf_counter(), time.process_time()
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        for i, a in zip(idx, teacher.answer([prepared[i] for i in idx])):
            answers[i] = a
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    teacher.close()
    return task, resolved.identity, dec, batch_size, answers, seconds, cpu_seconds


def measure(args) -> None:
    import torch

    settings = load_settings()
    if args.threads:
        settings.threads = args.threads
        torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir
    docs_all = reviews(data_dir, args.n, args.seed)
    con = open_bench(Path(args.db))
    run_id = uuid.uuid4().hex[:10]
    for model in args.models:
        few_shot = TEACHERS.get(model, 0)
        for method in args.methods:
            n = min(args.baseline_n, args.n) if method == "baseline" else args.n
            docs = docs_all.head(n)
            log(f"{model} {method}: {n} reviews ...")
            before = conditions()
            task, identity, dec, bs, answers, seconds, cpu_seconds = run_method(
                model, few_shot, method, docs, args.choice_batch if method == "choice" else args.batch, settings
            )
            row = score(parse(con, task, docs, answers)) | {
                "run_id": run_id,
                "model": model,
                "model_identity": identity,
                "method": method,
                "few_shot": few_shot,
                "batch_size": bs,
                "decoding": dec.key(),
                "prompts_per_s": n / seconds,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "prompts_per_cpu_s": n / cpu_seconds,
                "prompt_tokens": sum(a.prompt_tokens for a in answers),
                "completion_tokens": sum(a.completion_tokens for a in answers),
                "threads": torch.get_num_threads(),
                "host": platform.node(),
                "cpu": before["cpu"],
                "load_before": before["load_1m"],
                "load_after": conditions()["load_1m"],
            }
            con.register("staged_row", pl.DataFrame([row]))
            con.execute("INSERT INTO bench.teacher BY NAME SELECT * FROM staged_row")
            con.unregister("staged_row")
            log(
                f"  accuracy {row['accuracy']:.3f} discards {row['discard_rate']:.3f} "
                f"{row['prompts_per_s']:.2f} prompts/s, {row['prompts_per_cpu_s']:.2f} prompts per CPU-second"
            )
            report(con, Path(args.md))  # after every row: a stopped run still leaves a usable table


def report(con: duckdb.DuckDBPyConnection, md: Path) -> None:
    """The latest row per model x method, the speed-up of our best mode over the paper's way."""
    latest = con.execute(
        """SELECT * FROM bench.teacher
           QUALIFY row_number() OVER (PARTITION BY model, method ORDER BY measured_at DESC) = 1
           ORDER BY model, method"""
    ).pl()
    lines = [
        "# Teacher benchmark",
        "",
        "Written by `make bench-teacher` (benchmarks/teacher.py) from `bench.teacher` in "
        "`var/bench/teacher.duckdb`. Same seeded IMDb test reviews for every model and method (the baseline "
        "uses the first `n` of them). Accuracy counts a discard as wrong. `choice`: score the label tokens "
        "in one forward pass (batched, length-sorted); `generate`: greedy, batched, parsed by "
        "`sql/labeling/answer_matches.sql`; `baseline`: the paper's way on the same model: one prompt at a "
        "time, sampling (temperature 1.0, top_k 50), max_new_tokens 10. bf16 on CPU. The reviews are a "
        "class-balanced draw, interleaved by label (every prefix is balanced). Prompts per CPU-second is the "
        "process's own CPU time; the load columns say how busy the machine was (1-minute load average before "
        "and after the row; this machine has " + str(conditions()["cores"]) + " cores).",
        "",
        "| model | method | few-shot | batch | n | accuracy | discard rate | share positive "
        "| acc. on 80% most confident | prompts/s (wall) | prompts per CPU-s | mean prompt tokens | threads "
        "| load before/after | CPU | measured |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v, p=3):
        return "–" if v is None else f"{v:.{p}f}"

    for r in latest.iter_rows(named=True):
        lines.append(
            f"| {r['model']} | {r['method']} | {r['few_shot']} | {r['batch_size']} | {r['n']} | {f(r['accuracy'])} | "
            f"{f(r['discard_rate'])} | {f(r['share_positive'])} | {f(r['acc_top80'])} | {f(r['prompts_per_s'], 2)} | "
            f"{f(r['prompts_per_cpu_s'], 2)} | {r['prompt_tokens'] / r['n']:.0f} | {r['threads']} | "
            f"{f(r['load_before'], 1)}/{f(r['load_after'], 1)} | {r['cpu'] or '?'} | {str(r['measured_at'])[:16]} |"
        )
    lines += [
        "",
        "## Our best mode against the paper's way, per model",
        "",
        "| model | best mode | accuracy (n) | prompts per CPU-s | baseline accuracy (n) "
        "| baseline prompts per CPU-s | speed-up (CPU time) | speed-up (wall) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, g in latest.group_by("model", maintain_order=True):
        base = g.filter(pl.col("method") == "baseline")
        ours = g.filter(pl.col("method") != "baseline").sort(["accuracy", "prompts_per_s"], descending=True)
        if base.is_empty() or ours.is_empty():
            continue
        b, o = base.row(0, named=True), ours.row(0, named=True)
        lines.append(
            f"| {model[0] if isinstance(model, tuple) else model} | {o['method']} | {f(o['accuracy'])} ({o['n']}) | "
            f"{f(o['prompts_per_cpu_s'], 2)} | {f(b['accuracy'])} ({b['n']}) | {f(b['prompts_per_cpu_s'], 2)} | "
            f"{o['prompts_per_cpu_s'] / b['prompts_per_cpu_s']:.1f}x | {o['prompts_per_s'] / b['prompts_per_s']:.1f}x |"
        )
    from benchmarks.teacher_sweeps import sections

    lines += sections(con)  # truncation, injection, cascade: only those with rows
    lines += ["", "## Notes", "", NOTES.read_text().rstrip("\n")]
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join(lines) + "\n")
    log(f"wrote {md}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500, help="IMDb test reviews per model and method")
    ap.add_argument("--baseline-n", type=int, default=500, help="reviews for the (slow) paper baseline")
    ap.add_argument(
        "--models",
        nargs="+",
        default=None,
        help=f"default: every teacher ({', '.join(TEACHERS)}); for --truncation-sweep and --injection "
        "the pipeline's default teacher only",
    )
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    from llambert.hardware import resolve_device

    product = TeacherConfig().resolved_batch_size(resolve_device("auto"))  # time what the pipeline runs by default
    ap.add_argument(
        "--batch", type=int, default=product, help=f"batch size of generate (default {product}: the pipeline's)"
    )
    ap.add_argument("--choice-batch", type=int, default=product, help=f"batch size of choice (default {product})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (on a CPU shared with other jobs, 1 can be several times faster than 2)",
    )
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--db", default=str(BENCH_DB))
    ap.add_argument("--md", default=str(DOC))
    ap.add_argument("--report-only", action="store_true")
    x = ap.add_argument_group("experiments (benchmarks/teacher_sweeps.py; instead of the methods above)")
    x.add_argument("--truncation-sweep", action="store_true", help="review-token budgets x head/head_tail")
    x.add_argument(
        "--injection", action="store_true", help="choice/generate x paper/hardened prompt on the injection set"
    )
    x.add_argument("--injection-modes", nargs="+", choices=["choice", "generate"], default=None)
    x.add_argument("--injection-styles", nargs="+", choices=INJECTION_STYLES, default=None)
    x.add_argument("--quantize-ab", action="store_true", help="float vs int8 linears (teacher.quantize), choice")
    x.add_argument(
        "--quantize-keep",
        nargs="+",
        default=None,
        help="--quantize-ab: more int8 arms, each leaving these linears (comma-separated name suffixes) in float",
    )
    x.add_argument("--cascade", action="store_true", help="small then large teacher, choice mode, threshold sweep")
    x.add_argument("--sweep-mode", choices=["generate", "choice"], default="generate", help="truncation sweep mode")
    x.add_argument("--budgets", type=int, nargs="+", default=[128, 256, 384], help="review-token budgets")
    x.add_argument(
        "--truncations", nargs="+", choices=["head", "head_tail"], default=None, help="truncation sweep: which cuts"
    )
    x.add_argument("--chunk", type=int, default=20, help="documents per interleaved chunk")
    x.add_argument("--injection-reviews", type=int, default=24, help="negative reviews of the injection set")
    x.add_argument(
        "--injection-normal-n", type=int, default=None, help="benchmark reviews for paper vs hardened (default --n)"
    )
    x.add_argument("--cascade-small", default="qwen2.5-coder-0.5b-instruct")
    x.add_argument("--cascade-large", default="qwen2.5-coder-1.5b-instruct")
    args = ap.parse_args(argv)
    experiments = args.truncation_sweep or args.injection or args.cascade or args.quantize_ab
    if args.models is None:
        args.models = [TeacherConfig().model] if experiments else list(TEACHERS)
    if args.report_only:
        report(open_bench(Path(args.db)), Path(args.md))
    elif experiments:
        run_experiments(args)
    else:
        measure(args)
    return 0


def run_experiments(args) -> None:
    """The flagged experiments, one after another, each resumable; the report after each."""
    import torch

    from benchmarks import teacher_sweeps as sw

    settings = load_settings()
    if args.threads:
        settings.threads = args.threads
        torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir
    if args.injection_normal_n is None:
        args.injection_normal_n = args.n
    con = open_bench(Path(args.db))
    if args.truncation_sweep:
        sw.truncation_sweep(con, args, settings, data_dir, args.models)
        report(con, Path(args.md))
    if args.injection:
        sw.injection(con, args, settings, data_dir, args.models)
        report(con, Path(args.md))
    if args.cascade:
        sw.cascade(con, args, settings, data_dir)
        report(con, Path(args.md))
    if args.quantize_ab:
        sw.quantize_ab(con, args, settings, data_dir, args.models)
        report(con, Path(args.md))


if __name__ == "__main__":
    raise SystemExit(main())
