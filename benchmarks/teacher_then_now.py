"""The teacher path of today against the one issue 17 measured: same reviews, same machine, one interleaved run.

Issue 17's speed target compares the default teacher path with "today's" (the code the issue was filed
against) in one run. Old figures from another machine cannot stand for that, so this runs the old code: the
``llambert`` package of ``--then`` (default: the last commit before issue 17's first change) is exported with
``git archive`` to ``var/bench/then-<sha>/``, and each arm (``then:generate``, ``now:choice``, ...) is a worker
process (benchmarks/teacher_worker.py) with its own model load. The arms answer the bench-teacher reviews
(``benchmarks.teacher.reviews``: seeded, class-balanced) one prompt at a time, the pipeline's batch 1, in chunks
whose arm order rotates, so a machine that gets busier moves every arm alike. Every answer is parsed by this
checkout's parser (sql/labeling/answer_matches.sql), so only the teacher differs.

Rows: ``bench.teacher_then_now`` in var/bench/teacher.duckdb (one per arm and review; a rerun asks only what is
missing). Report: docs/bench_teacher_then_now.md, each arm against the first on the reviews every arm answered:
accuracy with the paired 95% interval of the difference, prompts/s, prompts per CPU-second and their ratios.

    python -m benchmarks.teacher_then_now --n 500 --arms then:generate now:generate now:choice
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import duckdb
import polars as pl

from benchmarks.common import BENCH_VAR, DOCS, imdb_dir, logger
from benchmarks.teacher import BENCH_DB, open_bench, parse, reviews

THEN_REF = "175fcf7"  # main just before c66e96d (prefix cache, choice without KV copies): the code issue 17 measured
DOC = DOCS / "bench_teacher_then_now.md"
ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("teacher_worker.py")
DDL = """CREATE TABLE IF NOT EXISTS bench.teacher_then_now (
    arm VARCHAR, ref VARCHAR, mode VARCHAR, model VARCHAR, model_identity VARCHAR, decoding VARCHAR,
    doc_id VARCHAR, gold INTEGER, label INTEGER, raw_text VARCHAR, label_probs VARCHAR, prompt_tokens INTEGER,
    wall_s DOUBLE, cpu_s DOUBLE, load_1m DOUBLE, chunk INTEGER, position INTEGER, run_id VARCHAR,
    measured_at TIMESTAMP DEFAULT current_timestamp, PRIMARY KEY (arm, ref, model, doc_id))"""

log = logger("bench-teacher-then-now")


@dataclass(frozen=True)
class Arm:
    """``then:generate`` or ``now:choice``: which code and which mode."""

    code: str  # "then" or "now"
    mode: str

    @classmethod
    def parse(cls, spec: str) -> Arm:
        code, _, mode = spec.partition(":")
        if code not in ("then", "now") or mode not in ("generate", "choice"):
            raise SystemExit(f"--arms: {spec!r} is not then|now:generate|choice")
        return cls(code, mode)

    @property
    def name(self) -> str:
        return f"{self.code}:{self.mode}"


def rev_parse(ref: str) -> str:
    """The full sha of ``ref`` in this checkout's history (a clear error if it is not there)."""
    got = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=ROOT, capture_output=True, text=True
    )
    if got.returncode:
        raise SystemExit(f"--then {ref}: not a commit of this checkout ({got.stderr.strip()}); a full clone has it")
    return got.stdout.strip()


def export_then(sha: str, into: Path | None = None) -> Path:
    """``llambert/`` of commit ``sha`` as a folder (once; ``git archive``, so no worktree is registered)."""
    dest = (into or BENCH_VAR) / f"then-{sha[:12]}"
    if not (dest / "llambert" / "__init__.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        tar = subprocess.run(["git", "archive", sha, "llambert"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    return dest


class Worker:
    """A teacher arm in its own process (benchmarks/teacher_worker.py)."""

    def __init__(self, arm: Arm, src: Path, model: str, threads: int | None) -> None:
        cmd = [sys.executable, str(WORKER), "--src", str(src), "--model", model, "--mode", arm.mode]
        if threads:
            cmd += ["--threads", str(threads)]
        self.arm = arm
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.info = self._read()
        log(f"{arm.name}: llambert from {self.info['llambert']}, {self.info['dtype']}, {self.info['decoding']}")

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"arm {self.arm.name}: the worker exited (rc {self.proc.wait()}); its stderr is above")
        got = json.loads(line)
        if "error" in got:
            raise SystemExit(f"arm {self.arm.name}: {got['error']}")
        return got

    def ask(self, keys: list[str], texts: list[str]) -> list[dict]:
        self.proc.stdin.write(json.dumps({"keys": keys, "texts": texts}) + "\n")
        self.proc.stdin.flush()
        return self._read()["rows"]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _ref_of(decoding_key: str) -> str:
    return "now@" + hashlib.sha256(decoding_key.encode()).hexdigest()[:10]


def now_ref(arm: Arm, model: str) -> str:
    """The ``ref`` of a ``now`` arm: this checkout's decoding key for the arm (hashed), so that rows answered
    under an earlier default (another truncation, another budget) are never counted as today's."""
    from llambert.config import Settings
    from llambert.teacher import decoding_params

    return _ref_of(decoding_params(Settings(teacher={"model": model, "mode": arm.mode, "batch_size": 1})).key())


def arm_refs(arms: list[Arm], then_sha: str, model: str) -> dict[Arm, str]:
    return {a: then_sha if a.code == "then" else now_ref(a, model) for a in arms}


def _done(con: duckdb.DuckDBPyConnection, arm: Arm, ref: str, model: str) -> set[str]:
    rows = con.execute(
        "SELECT doc_id FROM bench.teacher_then_now WHERE arm = ? AND ref = ? AND model = ?", [arm.name, ref, model]
    ).fetchall()
    return {r[0] for r in rows}


def measure(
    con, arms: list[Arm], then_sha: str, model: str, docs: pl.DataFrame, chunk: int, threads, rerun: bool = False
) -> None:
    """Ask every arm for the reviews it has not answered (``rerun``: every review again, replacing its rows, so
    that all arms are measured in this one run), chunk by chunk, rotating the arms' order."""
    from llambert.tasks import load_task

    task = load_task("imdb_sentiment")
    refs = arm_refs(arms, then_sha, model)
    todo = {a: set(docs["doc_id"]) - (set() if rerun else _done(con, a, refs[a], model)) for a in arms}
    if not any(todo.values()):
        log("every arm has answered every review; report only")
        return
    src = {"then": export_then(then_sha), "now": ROOT}
    workers = {a: Worker(a, src[a.code], model, threads) for a in arms if todo[a]}
    for a, w in workers.items():
        if a.code == "now" and refs[a] != _ref_of(w.info["decoding"]):
            raise SystemExit(f"arm {a.name}: the worker reads {w.info['decoding']}, not this checkout's default")
    parser = duckdb.connect()
    parser.execute("CREATE SCHEMA IF NOT EXISTS labeling")
    run_id = uuid.uuid4().hex[:8]
    try:
        for c, start in enumerate(range(0, docs.height, chunk)):
            part = docs.slice(start, chunk)
            order = [a for a in arms if a in workers]
            k = c % max(len(order), 1)
            for pos, arm in enumerate(order[k:] + order[:k]):
                sub = part.filter(pl.col("doc_id").is_in(list(todo[arm])))
                if sub.height == 0:
                    continue
                load = os.getloadavg()[0]
                got = workers[arm].ask(sub["doc_id"].to_list(), sub["text"].to_list())
                answers = [SimpleNamespace(raw_text=r["raw_text"], label_probs=r["label_probs"]) for r in got]
                labels = parse(parser, task, sub, answers)
                w = workers[arm].info
                con.executemany(
                    "INSERT OR REPLACE INTO bench.teacher_then_now VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?, now())",
                    [
                        (
                            arm.name,
                            refs[arm],
                            arm.mode,
                            model,
                            w["identity"],
                            w["decoding"],
                            r["key"],
                            int(gold),
                            None if label is None else int(label),
                            r["raw_text"],
                            json.dumps(r["label_probs"]) if r["label_probs"] else None,
                            r["prompt_tokens"],
                            r["wall_s"],
                            r["cpu_s"],
                            load,
                            c,
                            pos,
                            run_id,
                        )
                        for r, gold, label in zip(got, labels["gold"], labels["label"])
                    ],
                )
            n_done = min(start + chunk, docs.height)
            log(f"chunk {c + 1}: {n_done}/{docs.height} reviews, load {os.getloadavg()[0]:.1f}")
    finally:
        for w in workers.values():
            w.close()


def table(con: duckdb.DuckDBPyConnection, arms: list[Arm], then_sha: str, model: str) -> pl.DataFrame:
    """Each arm on the reviews every arm answered, against the first arm (paired)."""
    refs = arm_refs(arms, then_sha, model)
    frames = {}
    for a in arms:
        frames[a] = con.execute(
            "SELECT doc_id, gold, label, prompt_tokens, wall_s, cpu_s, load_1m, decoding FROM bench.teacher_then_now "
            "WHERE arm = ? AND ref = ? AND model = ?",
            [a.name, refs[a], model],
        ).pl()
    common = set.intersection(*(set(f["doc_id"]) for f in frames.values())) if frames else set()
    base = frames[arms[0]].filter(pl.col("doc_id").is_in(list(common))).sort("doc_id")
    base_ok = (base["label"] == base["gold"]).fill_null(False).cast(pl.Int64)
    base_cpu, base_wall = base["cpu_s"].sum(), base["wall_s"].sum()
    rows = []
    for a in arms:
        f = frames[a].filter(pl.col("doc_id").is_in(list(common))).sort("doc_id")
        ok = (f["label"] == f["gold"]).fill_null(False).cast(pl.Int64)
        n = f.height
        diff = (ok - base_ok).cast(pl.Float64)
        se = math.sqrt(diff.var() / n) if n > 1 else float("nan")
        rows.append(
            {
                "arm": a.name,
                "code": then_sha[:7] if a.code == "then" else "this checkout",
                "n": n,
                "accuracy": ok.mean() if n else None,
                "delta_pt": 100 * diff.mean() if n else None,
                "ci_lo": 100 * (diff.mean() - 1.96 * se) if n else None,
                "ci_hi": 100 * (diff.mean() + 1.96 * se) if n else None,
                "won": int((diff > 0).sum()),
                "lost": int((diff < 0).sum()),
                "discard_rate": f["label"].null_count() / n if n else None,
                "share_positive": (f["label"] == 1).sum() / n if n else None,
                "mean_prompt_tokens": f["prompt_tokens"].mean(),
                "prompts_per_s": n / f["wall_s"].sum() if n else None,
                "prompts_per_cpu_s": n / f["cpu_s"].sum() if n else None,
                "x_cpu": base_cpu / f["cpu_s"].sum() if n else None,
                "x_wall": base_wall / f["wall_s"].sum() if n else None,
                "mean_load": f["load_1m"].mean(),
                "decoding": ", ".join(sorted(set(f["decoding"].to_list()))),
            }
        )
    return pl.DataFrame(rows)


def report(con, arms: list[Arm], then_sha: str, model: str, md: Path = DOC, command: str = "") -> pl.DataFrame:
    t = table(con, arms, then_sha, model)
    first = arms[0].name
    lines = [
        "# The teacher path now against the one issue 17 measured",
        "",
        f"Written by `python -m benchmarks.teacher_then_now` (benchmarks/teacher_then_now.py) from "
        f"`bench.teacher_then_now` in `var/bench/teacher.duckdb`. `then` runs the `llambert` package of commit "
        f"`{then_sha[:7]}` (main before issue 17's first change), `now` this checkout; each arm is its own process "
        f"with its own model load, {model}, the pipeline's batch 1, on the bench-teacher reviews (seeded, "
        "class-balanced), interleaved by chunks in rotating order. Every answer goes through this checkout's parser; "
        "a discard counts as wrong. Only reviews every arm answered count. Δ acc. and the ratios are against "
        f"`{first}`; the interval is the paired difference's 95% (1.96 standard errors over reviews); won/lost: "
        f"reviews only this arm / only `{first}` got right. Prompts per CPU-second counts each worker's own CPU time.",
        "",
        "| arm | code | n | accuracy | Δ acc. (95% interval) | won/lost | discard rate | share positive "
        "| mean prompt tokens | prompts/s | prompts per CPU-s | x first (CPU) | x first (wall) | mean load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in t.iter_rows(named=True):
        lines.append(
            f"| {r['arm']} | {r['code']} | {r['n']} | {r['accuracy']:.3f} | {r['delta_pt']:+.1f} pt "
            f"({r['ci_lo']:+.1f} to {r['ci_hi']:+.1f}) | {r['won']}/{r['lost']} | {r['discard_rate']:.3f} "
            f"| {r['share_positive']:.3f} | {r['mean_prompt_tokens']:.0f} | {r['prompts_per_s']:.3f} "
            f"| {r['prompts_per_cpu_s']:.3f} | {r['x_cpu']:.2f}x | {r['x_wall']:.2f}x | {r['mean_load']:.1f} |"
        )
    lines += ["", "What each arm reads (its teacher's decoding key, the answer cache's):", ""]
    lines += [f"- `{r['arm']}`: `{r['decoding']}`" for r in t.iter_rows(named=True)]
    from llambert.hardware import cpu_flags

    flags = "avx512_bf16" if "avx512_bf16" in cpu_flags() else "no avx512_bf16"
    lines += [
        "",
        f"Last written on a {os.cpu_count()}-core machine, {flags}." + (f" Command: `{command}`" if command else ""),
    ]
    md.write_text("\n".join(lines) + "\n")
    log(f"wrote {md}")
    return t


def main(argv: list[str] | None = None) -> pl.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--arms", nargs="+", default=["then:generate", "now:generate", "now:choice"])
    ap.add_argument("--then", default=THEN_REF, help="the earlier commit the 'then' arms run")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--chunk", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--db", default=str(BENCH_DB))
    ap.add_argument("--md", default=str(DOC))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--rerun", action="store_true", help="answer every review again in every arm (one run), replacing old rows"
    )
    args = ap.parse_args(argv)
    arms = [Arm.parse(s) for s in args.arms]
    then_sha = rev_parse(args.then)
    con = open_bench(Path(args.db))
    con.execute(DDL)
    docs = reviews(Path(args.data_dir) if args.data_dir else imdb_dir(), args.n)
    if not args.report_only:
        measure(con, arms, then_sha, args.model, docs, args.chunk, args.threads, args.rerun)
    command = "python -m benchmarks.teacher_then_now " + " ".join(argv if argv is not None else sys.argv[1:])
    return report(con, arms, then_sha, args.model, Path(args.md), command)


if __name__ == "__main__":
    main()
