"""The experiments of `make bench-teacher ARGS="--truncation-sweep|--injection|--cascade"` (issue 17 items 3-5).

Each compares several *arms* (one decoding of one loaded model) on the same documents, interleaved:
the documents are cut in chunks and every arm answers a chunk before any arm starts the next one (the
arms' order rotating from chunk to chunk), so a machine that gets busier or quieter during the run
moves every arm alike. Every answer is one row of ``bench.teacher_docs`` (keyed by experiment, arm,
model identity, decoding and document; a re-run answers only what is missing), with its parsed label
(the project's SQL parser), label probabilities, prompt tokens, the tokens the model ran on, wall and
CPU seconds of this process, and the 1-minute load average. The report sections are computed from
those rows on the documents every arm of a model has answered, so a stopped run still compares like
with like.

- ``truncation``: review-token budgets (128/256/384) x ``head``/``head_tail`` against the untruncated
  reference (today's ``max_prompt_tokens`` 640), on the benchmark's balanced IMDb test reviews.
- ``injection``: choice and generate x the ``paper``, ``hardened`` and ``spotlight`` prompts, the first two also with
  ``teacher.strip_directives`` (``+strip``), on the injection set
  (benchmarks/injection.py) and on the benchmark's reviews (hardened must not cost accuracy).
- ``cascade``: choice mode of a small and a large model on the same reviews; the offline
  threshold sweep ("the small one answers when its top probability is at least t, else the large
  one") is costed with the per-document seconds measured here (``bench.teacher_cascade``).
"""

from __future__ import annotations

import json
import os
import platform
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from benchmarks.common import imdb_dir, logger
from benchmarks.injection import INJECTION_STYLES
from benchmarks.teacher import TEACHERS, parse, reviews

log = logger("bench-teacher")

BUDGETS = (128, 256, 384)  # review tokens (the document's share of the prompt)
# teacher.max_prompt_tokens with no document budget (the default before 2026-12-05): the untruncated reference
REFERENCE_TOKENS = 640
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99)
CASCADE_SMALL, CASCADE_LARGE = "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"


@dataclass
class Arm:
    """One decoding of one loaded model, as a row of the report."""

    config: str
    model: str
    identity: str
    teacher: Any  # a TransformersTeacher
    decoding: Any  # its DecodingParams for this arm


def decoding(mode: str, few_shot: int, max_prompt_tokens: int = REFERENCE_TOKENS, **kw):
    """The benchmark's decodings (greedy generate of 4 tokens, or choice), as benchmarks/teacher.py."""
    from llambert.teacher.base import DecodingParams

    return DecodingParams(mode, 4, 0.0, 0, few_shot, max_prompt_tokens, **kw)


def load(model: str, settings, dec, quantize: bool = False, keep: tuple[str, ...] = ()):
    """A loaded transformers teacher for the IMDb task (the load is never timed)."""
    from llambert.models import resolve_model
    from llambert.tasks import load_task
    from llambert.teacher.hf_backend import TransformersTeacher

    resolved = resolve_model(model, settings.models_dir, role="teacher")
    task = load_task("imdb_sentiment")
    identity = resolved.identity + ("+int8" if quantize else "") + "".join(f"-{k}" for k in keep)
    # dtype auto: bf16 only where the CPU has it (emulated bf16 on an AVX2 CPU is ~5-8x slower than fp32).
    return TransformersTeacher(
        str(resolved.path),
        identity,
        task,
        dec,
        threads=settings.threads,
        quantize=quantize,
        dtype=settings.teacher.dtype,
    )


def _stored(con: duckdb.DuckDBPyConnection, experiment: str, arm: Arm) -> set[str]:
    rows = con.execute(
        "SELECT doc_key FROM bench.teacher_docs WHERE experiment = ? AND config = ? AND model_identity = ? "
        "AND decoding = ?",
        [experiment, arm.config, arm.identity, arm.decoding.key()],
    ).fetchall()
    return {r[0] for r in rows}


def _reuse_key(arm: Arm, prompt: str) -> tuple | None:
    """What makes two answers the same answer: one model, one deterministic decoding, one rendered prompt.
    None where the decoding samples (its answers are draws, not copies of each other)."""
    d = arm.decoding
    if d.mode != "choice" and d.temperature > 0:
        return None
    return (arm.identity, d.mode, d.max_new_tokens, json.dumps(d.extra, sort_keys=True, default=str), prompt)


_COPIED = (  # the answer and its cost; the document's own columns (attack, gold) come from the document
    "label, raw_text, label_probs, p_top, prompt_tokens, tokens_read, completion_tokens, wall_s, cpu_s, load_1m"
)


def run_arms(
    con: duckdb.DuckDBPyConnection, experiment: str, arms: list[Arm], docs: pl.DataFrame, chunk: int, run_id: str
) -> None:
    """Every arm on every document (columns doc_key, text, gold, attack), one prompt at a time (the
    pipeline's batch on a CPU), interleaved over chunks of ``chunk`` documents; rows are inserted per
    arm and chunk, so a stopped run keeps what it measured and a re-run skips it.

    A prompt an arm renders exactly as another arm of the same model and deterministic decoding already
    answered (a review shorter than a truncation budget, a review with nothing for ``strip_directives`` to
    cut) is not run again: its row copies that answer, with its measured tokens and seconds (the same
    prompt costs the same), and names the arm it came from in ``reused_from``. Only the prompts where
    the arms differ are paid for."""
    import torch

    con.execute("ALTER TABLE bench.teacher_docs ADD COLUMN IF NOT EXISTS reused_from VARCHAR")
    done = {id(a): _stored(con, experiment, a) for a in arms}
    n_chunks = -(-docs.height // chunk)
    reused = 0
    for c in range(n_chunks):
        part = docs.slice(c * chunk, chunk)
        keys = part["doc_key"].to_list()
        # Every arm's prompts for this chunk (cheap next to answering them), and who has answered which.
        prompts, answered = {}, {}
        for arm in arms:
            arm.teacher.set_decoding(arm.decoding)
            prompts[id(arm)] = dict(zip(keys, arm.teacher.prepare(part["text"].to_list())))
            for k in keys:
                rk = _reuse_key(arm, prompts[id(arm)][k])
                if k in done[id(arm)] and rk is not None:
                    answered.setdefault(rk, (arm, k))
        for j in range(len(arms)):
            arm = arms[(c + j) % len(arms)]  # A B C, then B C A: no arm always goes first
            todo = part.filter(~pl.col("doc_key").is_in(list(done[id(arm)])))
            if todo.is_empty():
                continue
            copies = {
                k: answered[rk]
                for k in todo["doc_key"].to_list()
                if (rk := _reuse_key(arm, prompts[id(arm)][k])) is not None and rk in answered
            }
            facts = dict(zip(todo["doc_key"].to_list(), zip(todo["attack"].to_list(), todo["gold"].to_list())))
            for k, (src, src_key) in copies.items():
                con.execute(
                    f"INSERT INTO bench.teacher_docs BY NAME SELECT {_COPIED}, ? AS experiment, ? AS config, "
                    "? AS model, ? AS model_identity, ? AS decoding, ? AS doc_key, ? AS attack, ? AS gold, ? AS chunk, threads, host, "
                    "? AS run_id, ? AS reused_from FROM bench.teacher_docs WHERE experiment = ? AND config = ? "
                    "AND model_identity = ? AND decoding = ? AND doc_key = ?",
                    [
                        experiment,
                        arm.config,
                        arm.model,
                        arm.identity,
                        arm.decoding.key(),
                        k,
                        *facts[k],
                        c,
                        run_id,
                        src.config,
                        experiment,
                        src.config,
                        src.identity,
                        src.decoding.key(),
                        src_key,
                    ],
                )
            reused += len(copies)
            done[id(arm)] |= set(copies)
            todo = todo.filter(~pl.col("doc_key").is_in(list(copies)))
            if todo.is_empty():
                continue
            teacher = arm.teacher
            teacher.set_decoding(arm.decoding)
            prepared = [prompts[id(arm)][k] for k in todo["doc_key"].to_list()]
            answers, stats = [], []
            for p in prepared:
                read0 = teacher.tokens_read
                t0, c0 = time.perf_counter(), time.process_time()
                answers += teacher.answer([p])
                stats.append(
                    (
                        time.perf_counter() - t0,
                        time.process_time() - c0,
                        teacher.tokens_read - read0,
                        os.getloadavg()[0],
                    )
                )
            parsed = parse(con, teacher.task, todo.rename({"doc_key": "doc_id"}), answers).select(
                doc_key="doc_id", label=pl.col("label").cast(pl.Int32), p_top=pl.col("p_top").cast(pl.Float64)
            )
            rows = pl.DataFrame(
                {
                    "doc_key": todo["doc_key"],
                    "attack": todo["attack"],
                    "gold": todo["gold"].cast(pl.Int32),
                    "raw_text": [a.raw_text for a in answers],
                    "label_probs": [json.dumps(a.label_probs) if a.label_probs else None for a in answers],
                    "prompt_tokens": [a.prompt_tokens for a in answers],
                    "tokens_read": [s[2] for s in stats],
                    "completion_tokens": [a.completion_tokens for a in answers],
                    "wall_s": [s[0] for s in stats],
                    "cpu_s": [s[1] for s in stats],
                    "load_1m": [round(s[3], 2) for s in stats],
                },
                strict=False,
            ).join(parsed, on="doc_key", how="left")  # matched by key: the parser's row order is not relied on
            rows = rows.with_columns(
                experiment=pl.lit(experiment),
                config=pl.lit(arm.config),
                model=pl.lit(arm.model),
                model_identity=pl.lit(arm.identity),
                decoding=pl.lit(arm.decoding.key()),
                chunk=pl.lit(c),
                threads=pl.lit(torch.get_num_threads()),
                host=pl.lit(platform.node()),
                run_id=pl.lit(run_id),
            )
            con.register("staged_docs", rows)
            con.execute("INSERT INTO bench.teacher_docs BY NAME SELECT * FROM staged_docs")
            con.unregister("staged_docs")
            done[id(arm)] |= set(todo["doc_key"].to_list())
            for k in todo["doc_key"].to_list():
                if (rk := _reuse_key(arm, prompts[id(arm)][k])) is not None:
                    answered.setdefault(rk, (arm, k))
        log(f"{experiment}: chunk {c + 1}/{n_chunks} done ({len(arms)} arms; {reused} answers reused so far)")


def _normal(data_dir: Path, n: int, seed: int) -> pl.DataFrame:
    """The benchmark's balanced IMDb test reviews, as rows of the experiments."""
    docs = reviews(data_dir, n, seed)
    return pl.DataFrame(
        {
            "doc_key": ("review:" + docs["doc_id"].cast(pl.Utf8)).to_list(),
            "text": docs["text"],
            "gold": docs["gold"],
            "attack": ["normal"] * docs.height,
        }
    )


def truncation_sweep(con, args, settings, data_dir: Path, models: list[str]) -> None:
    """Budgets x head/head_tail against the untruncated reference, one model load per model."""
    from llambert.teacher.prompts import template_overhead

    docs = _normal(data_dir, args.n, args.seed)
    run_id = uuid.uuid4().hex[:10]
    for model in models:
        few_shot = TEACHERS.get(model, 0)
        ref = decoding(args.sweep_mode, few_shot)
        teacher = load(model, settings, ref)
        overhead = template_overhead(teacher.tokenizer, teacher.task, few_shot, "paper")
        mode = args.sweep_mode
        arms = [Arm(f"{mode}:head@{REFERENCE_TOKENS}p", model, teacher.model_identity, teacher, ref)]
        for budget in args.budgets:
            for trunc in getattr(args, "truncations", None) or ("head", "head_tail"):
                dec = decoding(args.sweep_mode, few_shot, overhead + budget, truncation=trunc)
                arms.append(Arm(f"{mode}:{trunc}@{budget}", model, teacher.model_identity, teacher, dec))
        log(f"truncation sweep {model} ({args.sweep_mode}): {len(arms)} arms x {docs.height} reviews")
        run_arms(con, "truncation", arms, docs, args.chunk, run_id)
        teacher.close()


def injection(con, args, settings, data_dir: Path, models: list[str]) -> None:
    """choice/generate x paper/hardened/spotlight on the injection set and on the benchmark's reviews."""
    from benchmarks.injection import injection_set

    attacked = injection_set(args.injection_reviews, args.seed, data_dir)
    docs = pl.concat([attacked, _normal(data_dir, args.injection_normal_n, args.seed)])
    run_id = uuid.uuid4().hex[:10]
    for model in models:
        few_shot = TEACHERS.get(model, 0)
        teacher = load(model, settings, decoding("choice", few_shot))
        arms = [
            Arm(
                f"{mode}/{style}",
                model,
                teacher.model_identity,
                teacher,
                decoding(
                    mode, few_shot, prompt_style=style.removesuffix("+strip"), strip_directives=style.endswith("+strip")
                ),
            )
            for mode in getattr(args, "injection_modes", None) or ("choice", "generate")
            for style in getattr(args, "injection_styles", None) or INJECTION_STYLES
        ]
        log(f"injection {model}: {len(arms)} arms x {docs.height} documents")
        run_arms(con, "injection", arms, docs, args.chunk, run_id)
        teacher.close()


def quantize_ab(con, args, settings, data_dir: Path, models: list[str]) -> None:
    """teacher.quantize: the float model (the machine's dtype) against int8 linears, both loaded, in choice mode
    on the same reviews, interleaved by chunk."""
    from llambert.hardware import resolve_dtype

    docs = _normal(data_dir, args.n, args.seed)
    run_id = uuid.uuid4().hex[:10]
    for model in models:
        dec = decoding("choice", TEACHERS.get(model, 0))
        arms = []
        variants = [(False, (), resolve_dtype(settings.teacher.dtype)), (True, (), "int8")]
        for keep in getattr(args, "quantize_keep", None) or []:  # e.g. down_proj: those linears stay float
            variants.append((True, tuple(keep.split(",")), f"int8-keep-{keep}"))
        for quantize, keep, name in variants:
            teacher = load(model, settings, dec, quantize=quantize, keep=keep)
            arms.append(Arm(f"choice/{name}", model, teacher.model_identity, teacher, dec))
        log(f"quantize {model}: {[a.config for a in arms]} x {docs.height} reviews")
        run_arms(con, "quantize", arms, docs, args.chunk, run_id)
        for arm in arms:
            arm.teacher.close()


def quantize_section(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Each int8 arm against the float arm of its model, on the reviews both answered (arms added in later runs
    cover fewer reviews; they do not shrink the others' comparison). The accuracy difference comes with its
    paired 95% interval: the issue's bar is equal accuracy within half a point."""
    rows = con.execute("SELECT * FROM bench.teacher_docs WHERE experiment = 'quantize'").pl()
    if rows.is_empty():
        return []
    lines = [
        "",
        "## int8 linears (`teacher.quantize: int8`) against the float model",
        "",
        "`python -m benchmarks.teacher --quantize-ab` (rows: `bench.teacher_docs`, experiment `quantize`): the same "
        "model loaded twice, the machine's float dtype and int8 dynamic quantization of every linear but the head, "
        "choice mode, one prompt at a time, interleaved by chunk on the same reviews. Each int8 arm is compared "
        "with the float arm on the reviews both answered. Δ acc.: int8 minus float, with the 95% interval of "
        "the paired difference (1.96 standard errors over reviews); won/lost: reviews only int8 / only the float "
        "model got right.",
        "",
        "| model | arm | n | float acc. | int8 acc. | Δ acc. (95% interval) | won/lost | agreement | share positive "
        "| float prompts per CPU-s | int8 prompts per CPU-s | speed-up (per CPU-s) | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    right = (pl.col("label") == pl.col("gold")).fill_null(False).cast(pl.Int32)
    for model in rows["model"].unique(maintain_order=True).sort().to_list():
        mine = rows.filter(pl.col("model") == model)
        floats = [c for c in mine["config"].unique().sort().to_list() if not c.startswith("choice/int8")]
        if not floats:
            continue
        base = mine.filter(pl.col("config") == floats[0]).select(
            "doc_key", f_right=right, f_label="label", f_cpu="cpu_s"
        )
        for arm in [c for c in mine["config"].unique().sort().to_list() if c.startswith("choice/int8")]:
            both = mine.filter(pl.col("config") == arm).with_columns(q_right=right).join(base, on="doc_key")
            n = both.height
            if not n:
                continue
            diff = both["q_right"] - both["f_right"]
            delta, se = diff.mean(), (diff.std() or 0.0) / n**0.5
            won, lost = int((diff > 0).sum()), int((diff < 0).sum())
            f_ppc, q_ppc = n / both["f_cpu"].sum(), n / both["cpu_s"].sum()
            lines.append(
                f"| {model} | {arm} | {n} | {both['f_right'].mean():.3f} | {both['q_right'].mean():.3f} | "
                f"{100 * delta:+.1f} pt ({100 * (delta - 1.96 * se):+.1f} to {100 * (delta + 1.96 * se):+.1f}) | "
                f"{won}/{lost} | {(both['label'] == both['f_label']).mean():.3f} | "
                f"{(both['label'] == 1).mean():.3f} | {f_ppc:.3f} | {q_ppc:.3f} | {q_ppc / f_ppc:.2f}x | "
                f"{both['load_1m'].mean():.1f} |"
            )
    return lines


def cascade(con, args, settings, data_dir: Path) -> None:
    """Choice mode of the small and the large model on the same reviews (both loaded, interleaved)."""
    docs = _normal(data_dir, args.n, args.seed)
    run_id = uuid.uuid4().hex[:10]
    arms = []
    for role, model in (("small", args.cascade_small), ("large", args.cascade_large)):
        dec = decoding("choice", TEACHERS.get(model, 0))
        teacher = load(model, settings, dec)
        arms.append(Arm(role, model, teacher.model_identity, teacher, dec))
    log(f"cascade {args.cascade_small} -> {args.cascade_large}: {docs.height} reviews")
    run_arms(con, "cascade", arms, docs, args.chunk, run_id)
    for arm in arms:
        arm.teacher.close()


# -- the report ------------------------------------------------------------------------------------


def _common(con: duckdb.DuckDBPyConnection, experiment: str) -> pl.DataFrame:
    """The experiment's rows on the documents every arm of the same group has answered (a group: one
    model, and for the truncation sweep one mode, the part of ``config`` before ':')."""
    return con.execute(
        """WITH d AS (SELECT *, model || '|' || CASE WHEN contains(config, ':') THEN split_part(config, ':', 1)
                             ELSE '' END AS grp
                      FROM bench.teacher_docs WHERE experiment = ?),
           arms AS (SELECT grp, count(DISTINCT config) AS k FROM d GROUP BY grp),
           docs AS (SELECT d.grp, d.doc_key FROM d JOIN arms USING (grp)
                    GROUP BY d.grp, d.doc_key, arms.k HAVING count(DISTINCT d.config) = arms.k)
           SELECT d.* EXCLUDE (grp), d.grp FROM d JOIN docs USING (grp, doc_key)""",
        [experiment],
    ).pl()


def _f(v, p: int = 3) -> str:
    return "–" if v is None else f"{v:.{p}f}"


def truncation_section(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = _common(con, "truncation")
    if rows.is_empty():
        return []
    ref_tokens = rows.filter(pl.col("config").str.ends_with(f"@{REFERENCE_TOKENS}p")).select(
        "grp", "doc_key", ref_tokens="prompt_tokens"
    )
    rows = rows.join(ref_tokens, on=["grp", "doc_key"], how="left")
    agg = (
        rows.group_by("grp", "model", "config")
        .agg(
            n=pl.len(),
            tokens=pl.col("prompt_tokens").sum(),
            mean_tokens=pl.col("prompt_tokens").mean(),
            read=pl.col("tokens_read").sum(),
            wall=pl.col("wall_s").sum(),
            cpu=pl.col("cpu_s").sum(),
            accuracy=(pl.col("label") == pl.col("gold")).fill_null(False).mean(),
            share_positive=(pl.col("label") == 1).fill_null(False).mean(),
            load=pl.col("load_1m").mean(),
            cut=(pl.col("prompt_tokens") < pl.col("ref_tokens")).mean(),
            copied=pl.col("reused_from").is_not_null().sum() if "reused_from" in rows.columns else pl.lit(0),
        )
        .with_columns(
            mode=pl.col("config").str.split(":").list.first(),
            arm=pl.col("config").str.split(":").list.last(),
            budget=pl.col("config").str.extract(r"@(\d+)$").cast(pl.Int64),
            pps=pl.col("n") / pl.col("wall"),
            ppc=pl.col("n") / pl.col("cpu"),
        )
        .sort("grp", pl.col("budget").fill_null(0), "config")
    )
    lines = [
        "",
        "## Truncation: head vs head+tail at a review-token budget",
        "",
        "`python -m benchmarks.teacher --truncation-sweep` (rows: `bench.teacher_docs`, experiment "
        "`truncation`). Budgets count the review's tokens (the prompt is the template plus the budget); "
        f"`head@{REFERENCE_TOKENS}p` is the whole review, the prompt capped at {REFERENCE_TOKENS} tokens "
        "(the reference; the default before 2026-12-05, now `head_tail@256`: `teacher.max_document_tokens`). `head_tail` keeps the first quarter and the last three quarters of the budget. "
        "The arms ran interleaved over chunks of reviews, one prompt at a time; only reviews every arm "
        "answered count. Ratios are against the reference. `reviews cut`: the share whose prompt is shorter "
        "than the reference's; on the others the arm renders the reference's own prompt, and where another arm "
        "had already answered that exact prompt the answer and its measured cost were copied, not run again "
        "(`copied`: rows with `reused_from` set; greedy and choice decoding are deterministic).",
        "",
        "| model | mode | arm | n | reviews cut | copied | prompt tokens (sum) | mean | tokens run | prompts/s "
        "| prompts per CPU-s | x ref. (CPU) | accuracy | Δ acc. vs ref. | share positive | mean load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, g in agg.group_by("grp", maintain_order=True):
        ref = g.filter(pl.col("budget").is_null())
        r0 = ref.row(0, named=True) if not ref.is_empty() else None
        for r in g.iter_rows(named=True):
            ratio = f"{r['ppc'] / r0['ppc']:.2f}x" if r0 else "–"
            delta = f"{100 * (r['accuracy'] - r0['accuracy']):+.1f} pt" if r0 else "–"
            lines.append(
                f"| {r['model']} | {r['mode']} | {r['arm']} | {r['n']} | {_f(r['cut'], 2)} | {r['copied']} | "
                f"{r['tokens']:,} | {r['mean_tokens']:.0f} | "
                f"{r['read']:,} | {_f(r['pps'], 2)} | {_f(r['ppc'], 2)} | {ratio} | {_f(r['accuracy'])} | {delta} | "
                f"{_f(r['share_positive'])} | {_f(r['load'], 1)} |"
            )
    return lines


def _guard_reach() -> list[str]:
    """How many real IMDb reviews strip_directives would cut, and what: its false alarms on clean data."""
    from llambert.teacher.prompts import directives

    d = imdb_dir()
    n = hit = 0
    seen: list[str] = []
    for split in ("test", "train", "unsup"):
        path = d / f"{split}.parquet"
        if not path.exists():
            continue
        for text in pl.read_parquet(path, columns=["text"])["text"].to_list():
            n += 1
            cut = directives(text)
            hit += bool(cut)
            seen += cut
    if not n:  # no corpus beside the repository: the report says so instead of failing
        return ["", f"*(No IMDb parquet in {d}: the guard's reach on real reviews was not counted.)*"]
    answers = sum(u.lower().lstrip("(\"' ").startswith("answer") for u in seen)
    return [
        "",
        f"On the {n:,} IMDb reviews (test, train, unsup) `strip_directives` removes something from {hit} ({hit / n:.3%}): "
        f'{len(seen)} sentences, {answers} of them a reviewer\'s own "Answer: ..." to a rhetorical question, '
        'the rest an order-like phrase ("forget the ... rules") or a key such as `user=`. Every other review reads '
        "exactly as without it.",
    ]


def injection_section(con: duckdb.DuckDBPyConnection) -> list[str]:
    from benchmarks.injection import ATTACKS

    rows = _common(con, "injection")
    if rows.is_empty():
        return []
    flipped = (pl.col("label") != 0).fill_null(True)  # anything but "negative", a discard included
    every = rows.filter(~pl.col("attack").is_in(["clean", "normal"]))
    per = every.group_by("model", "config", "attack").agg(flip=flipped.mean())
    att = every.filter(~pl.col("attack").str.starts_with("heldout_"))  # the five
    overall = att.group_by("model", "config").agg(
        n_attacked=pl.len(), flip=flipped.mean(), positive=(pl.col("label") == 1).fill_null(False).mean()
    )
    heldout = (
        every.filter(pl.col("attack").str.starts_with("heldout_"))
        .group_by("model", "config")
        .agg(n_heldout=pl.len(), heldout_flip=flipped.mean())
    )
    clean = (
        rows.filter(pl.col("attack") == "clean")
        .group_by("model", "config")
        .agg(n_clean=pl.len(), clean_acc=(pl.col("label") == 0).fill_null(False).mean())
    )
    normal = (
        rows.filter(pl.col("attack") == "normal")
        .group_by("model", "config")
        .agg(
            n_normal=pl.len(),
            normal_acc=(pl.col("label") == pl.col("gold")).fill_null(False).mean(),
            tokens=pl.col("prompt_tokens").mean(),
            cpu_s=pl.col("cpu_s").mean(),
        )
    )
    table = (
        overall.join(heldout, on=["model", "config"], how="full", coalesce=True)
        .join(clean, on=["model", "config"], how="full", coalesce=True)
        .join(normal, on=["model", "config"], how="full", coalesce=True)
    )
    table = table.sort("model", "config")
    kinds = list(ATTACKS)
    lines = [
        "",
        "## Prompt injection: the paper's prompt vs the hardened and spotlight ones, with and without the directives",
        "",
        "`python -m benchmarks.teacher --injection` (rows: `bench.teacher_docs`, experiment `injection`). "
        "The injection set (benchmarks/injection.py) is short negative IMDb test reviews, each clean and "
        "with every attack. A flip is any answer but `negative` (a discard counts). `hardened`: the review "
        "between `<document>` tags as data, the instruction after it (`teacher.prompt_style`); `spotlight`: hardened "
        "with the review's words joined by `^` (datamarking); `+strip`: `teacher.strip_directives`, the review's sentences "
        "that speak to the model removed first (role/answer lines, chat markup, orders to ignore the instructions; "
        "`llambert.teacher.prompts.directives`). `flip rate` is over the issue's five attacks; the `heldout_*` attacks "
        "were written with the filter, to test it on wording it was not built from. Normal-review accuracy, prompt "
        "tokens and CPU-seconds per prompt are on the benchmark's balanced reviews: a defence must not lose accuracy, "
        "and its cost shows.",
        *_guard_reach(),
        "",
        "| model | mode/prompt | attacked n | flip rate | answered positive | "
        + " | ".join(kinds)
        + " | held-out flip rate (n) | clean accuracy (n) | normal accuracy (n) | prompt tokens | CPU-s/prompt |",
        "|---|---|---|---|---|" + "---|" * len(kinds) + "---|---|---|---|---|",
    ]
    for r in table.iter_rows(named=True):
        cells = []
        for k in kinds:
            hit = per.filter(
                (pl.col("model") == r["model"]) & (pl.col("config") == r["config"]) & (pl.col("attack") == k)
            )
            cells.append(_f(hit["flip"][0], 2) if hit.height else "–")
        lines.append(
            f"| {r['model']} | {r['config']} | {r['n_attacked'] or 0} | {_f(r['flip'])} | {_f(r['positive'])} | "
            + " | ".join(cells)
            + f" | {_f(r['heldout_flip'])} ({r['n_heldout'] or 0})"
            + f" | {_f(r['clean_acc'])} ({r['n_clean'] or 0}) | {_f(r['normal_acc'])} ({r['n_normal'] or 0}) | "
            f"{_f(r['tokens'], 0)} | {_f(r['cpu_s'], 2)} |"
        )
    return lines


def cascade_table(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The offline threshold sweep for every (small, large) pair measured, written to
    ``bench.teacher_cascade`` (replaced on every report)."""
    rows = con.execute("SELECT * FROM bench.teacher_docs WHERE experiment = 'cascade'").pl()
    out = []
    if not rows.is_empty():
        small_all = rows.filter(pl.col("config") == "small")
        large_all = rows.filter(pl.col("config") == "large")
        for (s_model,), small in small_all.group_by("model", maintain_order=True):
            for (l_model,), large in large_all.group_by("model", maintain_order=True):
                both = small.select(
                    "doc_key", "gold", s_label="label", s_p="p_top", s_wall="wall_s", s_cpu="cpu_s"
                ).join(large.select("doc_key", l_label="label", l_wall="wall_s", l_cpu="cpu_s"), on="doc_key")
                if both.is_empty():
                    continue
                n = both.height
                s_ok = (both["s_label"] == both["gold"]).fill_null(False)
                l_ok = (both["l_label"] == both["gold"]).fill_null(False)
                l_sec, l_cpu = float(both["l_wall"].sum()), float(both["l_cpu"].sum())
                l_acc = float(l_ok.mean())
                for t in (None, *THRESHOLDS):  # None: the large model alone
                    esc = pl.Series([True] * n) if t is None else (both["s_p"].fill_null(0.0) < t)
                    acc = float(((esc & l_ok) | (~esc & s_ok)).mean())
                    sec = (0.0 if t is None else float(both["s_wall"].sum())) + float(both["l_wall"].filter(esc).sum())
                    cpu = (0.0 if t is None else float(both["s_cpu"].sum())) + float(both["l_cpu"].filter(esc).sum())
                    out.append(
                        {
                            "small": s_model,
                            "large": l_model,
                            "threshold": t,
                            "n": n,
                            "escalated": float(esc.mean()),
                            "accuracy": acc,
                            "seconds": sec,
                            "cpu_seconds": cpu,
                            "prompts_per_s": n / sec if sec else None,
                            "correct_per_s": acc * n / sec if sec else None,
                            "speedup_vs_large": l_sec / sec if sec else None,
                            "cpu_speedup_vs_large": l_cpu / cpu if cpu else None,
                            "accuracy_vs_large": acc - l_acc,
                        }
                    )
    schema = {
        "small": pl.Utf8,
        "large": pl.Utf8,
        "threshold": pl.Float64,
        "n": pl.Int64,
        "escalated": pl.Float64,
        "accuracy": pl.Float64,
        "seconds": pl.Float64,
        "cpu_seconds": pl.Float64,
        "prompts_per_s": pl.Float64,
        "correct_per_s": pl.Float64,
        "speedup_vs_large": pl.Float64,
        "cpu_speedup_vs_large": pl.Float64,
        "accuracy_vs_large": pl.Float64,
    }
    table = pl.DataFrame(out, schema=schema)
    con.register("staged_cascade", table)
    con.execute("CREATE OR REPLACE TABLE bench.teacher_cascade AS SELECT * FROM staged_cascade")
    con.unregister("staged_cascade")
    return table


def cascade_section(con: duckdb.DuckDBPyConnection) -> list[str]:
    table = cascade_table(con)
    if table.is_empty():
        return []
    lines = [
        "",
        "## Cascade: the small teacher first, the large one when it is unsure",
        "",
        "`python -m benchmarks.teacher --cascade` (rows: `bench.teacher_docs`, experiment `cascade`; the sweep: "
        "`bench.teacher_cascade`). Both models in choice mode on the same reviews, interleaved; computed "
        "offline: the small model's label stands when its top label probability is at least the threshold, "
        "else the large model answers. Seconds: the small model on every review plus the large one on the "
        "escalated ones, from the per-review seconds measured in the run (wall; CPU in its own column). "
        "Threshold `–` is the large model alone.",
        "",
        "| small → large | threshold | n | escalated | accuracy | Δ acc. vs large | seconds | CPU-s "
        "| prompts/s | correct answers/s | speed-up vs large (wall / CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.iter_rows(named=True):
        lines.append(
            f"| {r['small']} → {r['large']} | {_f(r['threshold'], 2)} | {r['n']} | {_f(r['escalated'], 2)} | "
            f"{_f(r['accuracy'])} | {100 * r['accuracy_vs_large']:+.1f} pt | {r['seconds']:.1f} | "
            f"{r['cpu_seconds']:.1f} | {_f(r['prompts_per_s'], 2)} | {_f(r['correct_per_s'], 2)} | "
            f"{_f(r['speedup_vs_large'], 2)}x / {_f(r['cpu_speedup_vs_large'], 2)}x |"
        )
    return lines


def sections(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The report's sections for the experiments that have rows (none: nothing)."""
    return truncation_section(con) + injection_section(con) + cascade_section(con) + quantize_section(con)
