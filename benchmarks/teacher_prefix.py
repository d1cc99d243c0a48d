"""Prefix KV cache in the transformers teacher: interleaved A/B on the same IMDb test reviews.

For each few-shot setting and each mode (generate, choice) the same backend (one model load) answers
the same N reviews in rounds: cache off, on, off, on (``--rounds``), so that a machine that gets busier
or quieter during the run moves both sides alike. Per round: prompts/s (wall), prompts per CPU-second
(this process), prompt tokens the model ran on (``read``: tails, plus each prefix once when it is first
computed) and tokens taken from the cache (``reused``), accuracy against the gold labels, and the
agreement of labels (and, for choice, the largest label-probability difference) between the cache-on
rounds and the first cache-off round. Writes var/bench/teacher_prefix_n{N}.json.

    nice -n 10 .venv/bin/python -m benchmarks.teacher_prefix --n 200 --few-shot 0,2

Generate-mode accuracy parses the raw answer simply (exactly one label word, else wrong); the
pipeline's parser is sql/labeling/answer_matches.sql (``make bench-teacher`` uses it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import BENCH_VAR, imdb_dir
from llambert.config import Settings


def _label(task, answer) -> str | None:
    if answer.label_probs:
        return answer.raw_text
    words = set(re.findall(r"[a-z]+", (answer.raw_text or "").lower()))
    hits = [name for name in task.label_names if name.lower() in words]
    return hits[0] if len(hits) == 1 else None


def run_round(teacher, prompts: list[str], batch: int) -> dict:
    read0, reused0 = teacher.tokens_read, teacher.tokens_reused
    t0, c0 = time.perf_counter(), time.process_time()
    answers = []
    for start in range(0, len(prompts), batch):
        answers += teacher.answer(prompts[start : start + batch])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "prompts_per_s": round(len(prompts) / wall, 4),
        "prompts_per_cpu_s": round(len(prompts) / cpu, 4),
        "tokens_read": teacher.tokens_read - read0,
        "tokens_reused": teacher.tokens_reused - reused0,
        "prompt_tokens": sum(a.prompt_tokens for a in answers),
        "answers": answers,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--n", type=int, default=200, help="IMDb test reviews (class-balanced draw, as make bench-teacher)")
    ap.add_argument("--modes", default="generate,choice")
    ap.add_argument("--few-shot", default="0", help="comma-separated few-shot counts, e.g. 0,2")
    ap.add_argument("--batch", type=int, default=1, help="prompts per call (the pipeline's transformers default: 1)")
    ap.add_argument("--rounds", type=int, default=4, help="off, on, off, on, ... (even)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data-dir", default=str(imdb_dir()))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from benchmarks.teacher import reviews
    from llambert.tasks import load_task
    from llambert.teacher import make_teacher

    docs = reviews(Path(args.data_dir), args.n)
    texts, gold = docs["text"].to_list(), docs["gold"].to_list()
    task = load_task("imdb_sentiment")
    names = {label.id: label.name for label in task.labels}
    result = {
        "model": args.model,
        "n": args.n,
        "batch": args.batch,
        "threads": args.threads,
        "rounds": [],
        "summary": [],
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_before": round(os.getloadavg()[0], 2),
    }
    for k in [int(x) for x in args.few_shot.split(",")]:
        settings = Settings(
            teacher={"model": args.model, "mode": "generate", "batch_size": args.batch, "few_shot": k},
            threads=args.threads,
        )
        teacher = make_teacher(settings, task)  # one load per few-shot setting; mode and cache toggled on it
        prompts = teacher.prepare(texts)
        prefix = len(teacher.shared_prefix())
        for mode in args.modes.split(","):
            teacher.decoding.mode = mode
            teacher.answer(prompts[:1])  # warm-up (and the prefix's keys and values), not measured
            rounds = []
            for r in range(args.rounds):
                teacher.prefix_cache = r % 2 == 1
                got = run_round(teacher, prompts, args.batch)
                labels = [_label(task, a) for a in got["answers"]]
                got["accuracy"] = round(sum(lab == names[g] for lab, g in zip(labels, gold)) / len(gold), 4)
                got["labels"] = labels
                got["raw"] = [a.raw_text for a in got["answers"]]
                got["p_positive"] = [a.label_probs.get("positive") if a.label_probs else None for a in got["answers"]]
                del got["answers"]
                got.update(few_shot=k, mode=mode, prefix_cache=teacher.prefix_cache, round=r)
                rounds.append(got)
                print(
                    f"few_shot={k} {mode:8s} cache={'on ' if got['prefix_cache'] else 'off'} round {r}: "
                    f"{got['prompts_per_s']:.3f} prompts/s, {got['prompts_per_cpu_s']:.3f} per CPU-s, "
                    f"tokens read {got['tokens_read']} reused {got['tokens_reused']}, accuracy {got['accuracy']:.3f}",
                    flush=True,
                )
            ref = rounds[0]
            off = [x for x in rounds if not x["prefix_cache"]]
            on = [x for x in rounds if x["prefix_cache"]]
            agree = min(sum(a == b for a, b in zip(ref["labels"], x["labels"])) / len(texts) for x in on)
            same_text = min(sum(a == b for a, b in zip(ref["raw"], x["raw"])) / len(texts) for x in on)
            max_dp = (
                max(abs(a - b) for x in on for a, b in zip(ref["p_positive"], x["p_positive"]))
                if mode == "choice"
                else None
            )

            def mean(rows, key):
                return sum(x[key] for x in rows) / len(rows)

            summary = {
                "few_shot": k,
                "mode": mode,
                "prefix_tokens": prefix,
                "off_prompts_per_s": round(mean(off, "prompts_per_s"), 4),
                "on_prompts_per_s": round(mean(on, "prompts_per_s"), 4),
                "off_prompts_per_cpu_s": round(mean(off, "prompts_per_cpu_s"), 4),
                "on_prompts_per_cpu_s": round(mean(on, "prompts_per_cpu_s"), 4),
                "speedup_wall": round(mean(on, "prompts_per_s") / mean(off, "prompts_per_s"), 3),
                "speedup_cpu": round(mean(on, "prompts_per_cpu_s") / mean(off, "prompts_per_cpu_s"), 3),
                "tokens_read_per_prompt_off": round(mean(off, "tokens_read") / len(texts), 1),
                "tokens_read_per_prompt_on": round(mean(on, "tokens_read") / len(texts), 1),
                "tokens_reused_per_prompt_on": round(mean(on, "tokens_reused") / len(texts), 1),
                "label_agreement": round(agree, 4),
                "same_raw_text": round(same_text, 4),
                "max_abs_dp_positive": max_dp,
                "accuracy_off": round(mean(off, "accuracy"), 4),
                "accuracy_on": round(mean(on, "accuracy"), 4),
            }
            result["rounds"] += rounds
            result["summary"].append(summary)
        teacher.close()
    result["load_after"] = round(os.getloadavg()[0], 2)
    print(
        "\nfew-shot | mode | prefix tok | prompts/s off -> on | per CPU-s off -> on | tokens read/prompt off -> on "
        "(reused) | label agreement | max |dp| | accuracy off/on"
    )
    for s in result["summary"]:
        dp = f"{s['max_abs_dp_positive']:.1e}" if s["max_abs_dp_positive"] is not None else "-"
        print(
            f"{s['few_shot']} | {s['mode']} | {s['prefix_tokens']} | {s['off_prompts_per_s']:.3f} -> "
            f"{s['on_prompts_per_s']:.3f} ({s['speedup_wall']:.2f}x) | {s['off_prompts_per_cpu_s']:.3f} -> "
            f"{s['on_prompts_per_cpu_s']:.3f} ({s['speedup_cpu']:.2f}x) | {s['tokens_read_per_prompt_off']} -> "
            f"{s['tokens_read_per_prompt_on']} ({s['tokens_reused_per_prompt_on']}) | {s['label_agreement']:.3f} | "
            f"{dp} | {s['accuracy_off']:.3f}/{s['accuracy_on']:.3f}"
        )
    out = Path(args.out) if args.out else BENCH_VAR / f"teacher_prefix_n{args.n}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out} (load before/after {result['load_before']}/{result['load_after']})")
    return result


if __name__ == "__main__":
    main()
