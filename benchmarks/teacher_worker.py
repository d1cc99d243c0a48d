"""One teacher arm of benchmarks/teacher_then_now.py, in its own process: the llambert package of ``--src``
(an exported earlier commit, or this checkout), one model load, JSON lines in and out.

Run as a script, never imported: it must import the llambert of ``--src`` and nothing of this checkout's, so it
uses only the API every version since the first wave has (``Settings``, ``load_task``, ``make_teacher``,
``prepare``, ``answer``). Request: ``{"keys": [...], "texts": [...]}``; reply: one row per text with the raw
answer, label probabilities, prompt tokens and the wall and CPU seconds of that prompt alone (this process's
CPU time, so a busy machine does not bill one arm for the other's work). A reply of ``{"error": ...}`` ends it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True, help="folder holding the llambert package to run")
    ap.add_argument("--model", required=True)
    ap.add_argument("--mode", choices=["generate", "choice"], required=True)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    sys.path.insert(0, args.src)
    import llambert

    if not llambert.__file__.startswith(args.src):  # the editable install must not win over --src
        raise SystemExit(f"imported llambert from {llambert.__file__}, not from {args.src}")
    from llambert.config import Settings
    from llambert.tasks import load_task
    from llambert.teacher import make_teacher

    teacher_cfg = {"model": args.model, "mode": args.mode, "batch_size": 1}
    settings = Settings(teacher=teacher_cfg, threads=args.threads)
    task = load_task(settings.task)
    backend = make_teacher(settings, task)
    import torch

    out = sys.stdout
    ready = {
        "ready": True,
        "llambert": llambert.__file__,
        "identity": backend.model_identity,
        "decoding": backend.decoding.key(),
        "torch_threads": torch.get_num_threads(),
        "dtype": str(next(backend.model.parameters()).dtype) if hasattr(backend, "model") else None,
    }
    out.write(json.dumps(ready) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        rows = []
        try:
            prompts = backend.prepare(req["texts"])
            for key, prompt in zip(req["keys"], prompts):
                t0, c0 = time.perf_counter(), time.process_time()
                a = backend.answer([prompt])[0]
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                rows.append(
                    {
                        "key": key,
                        "raw_text": a.raw_text,
                        "label_probs": a.label_probs,
                        "prompt_tokens": a.prompt_tokens,
                        "wall_s": wall,
                        "cpu_s": cpu,
                    }
                )
        except Exception as e:  # noqa: BLE001 - reported to the driver, which stops with it
            out.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
            out.flush()
            return
        out.write(json.dumps({"rows": rows}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
