"""The transformers teacher batched on a GPU: prompts/s at batch 1 vs 8, 32, 64, 128 on the teacher benchmark's
500 IMDb test reviews (the teacher issue's GPU part; the device machine is lent to some sessions only).

Two steps, because the GPU machine reaches nothing outside itself and takes at most 64 MiB along:

- ``prepare`` (here): writes ``.gpu/`` (ignored by git): the 500 reviews of ``make bench-teacher`` as JSON
  lines, the default teacher's config, tokenizer and chat template (no weights: 3.5 GB do not travel), and
  the pydantic wheels the image lacks.
- ``run`` (there): builds a **randomly initialised** model from that config (the same shapes, so the same
  FLOPs and memory traffic as Qwen2.5-Coder-1.5B-Instruct), saves and loads it through the product's own
  ``TransformersTeacher`` on ``cuda`` and times ``answer`` over length-sorted batches (the runner's order),
  prefix KV cache on, in choice and generate mode. Choice mode's cost does not depend on the weights' values
  (one forward pass); in generate mode random weights almost never emit the end token, so every prompt
  decodes the full ``max_new_tokens`` (4): an upper bound on the real model's cost. Accuracy cannot be
  measured there; instead each batch size's choice labels are compared with batch 1's (padding and masking
  must not change answers beyond bf16 rounding). Figures go to ``$OUT/teacher_gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_DIR = ROOT / ".gpu"
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)


def prepare(n: int, teacher: str) -> None:
    from benchmarks.common import imdb_dir
    from benchmarks.teacher import reviews
    from llambert.config import Settings
    from llambert.models import resolve_model

    GPU_DIR.mkdir(exist_ok=True)
    docs = reviews(imdb_dir(), n)
    with open(GPU_DIR / "reviews.jsonl", "w") as f:
        for row in docs.iter_rows(named=True):
            f.write(json.dumps({"doc_id": row["doc_id"], "text": row["text"], "gold": row["gold"]}) + "\n")
    resolved = resolve_model(teacher, Settings().models_dir, role="teacher")
    cfg_dir = GPU_DIR / "model_config"
    cfg_dir.mkdir(exist_ok=True)
    for name in MODEL_FILES:
        if (resolved.path / name).exists():
            shutil.copy(resolved.path / name, cfg_dir / name)
    (cfg_dir / "identity.txt").write_text(resolved.identity)
    print(f"prepared {docs.height} reviews and {teacher}'s config in {GPU_DIR}")


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(teacher, prepared: list[str], batch: int) -> tuple[float, list, int]:
    """Seconds, answers in input order, and prompt tokens the model read, after one warm-up batch."""

    order = sorted(range(len(prepared)), key=lambda i: -len(prepared[i]))  # the runner's longest-first order
    teacher.answer([prepared[i] for i in order[:batch]])  # warm-up: kernels, the prefix cache
    _sync()
    read0 = teacher.tokens_read
    answers: list = [None] * len(prepared)
    t0 = time.perf_counter()
    for k in range(0, len(order), batch):
        idx = order[k : k + batch]
        for i, a in zip(idx, teacher.answer([prepared[i] for i in idx])):
            answers[i] = a
    _sync()
    return time.perf_counter() - t0, answers, teacher.tokens_read - read0


def run(batches: list[int], modes: list[str], out: Path, device: str = "cuda", tiny: bool = False) -> None:
    """``device``/``tiny`` exist for a smoke run on a CPU (a 2-layer model of the same vocabulary)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from llambert.tasks import load_task
    from llambert.teacher.base import DecodingParams
    from llambert.teacher.hf_backend import TransformersTeacher

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("run needs a CUDA GPU (or --device cpu --tiny for a smoke run)")
    docs = [json.loads(line) for line in open(GPU_DIR / "reviews.jsonl")]
    cfg_dir = GPU_DIR / "model_config"
    weights = Path("/tmp/teacher_random")
    t0 = time.perf_counter()
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(cfg_dir)
    if tiny:
        config.update({"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4})
        config.update({"num_key_value_heads": 2, "layer_types": ["full_attention"] * 2, "max_window_layers": 2})
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(weights)
    del model
    for name in MODEL_FILES[2:]:  # the tokenizer and chat template; save_pretrained wrote the (maybe tiny) config
        if (cfg_dir / name).exists():
            shutil.copy(cfg_dir / name, weights / name)
    build_s = time.perf_counter() - t0
    identity = (cfg_dir / "identity.txt").read_text().strip() + "+random-weights"
    task = load_task("imdb_sentiment")
    # The product's default teacher decoding (llambert/config.py TeacherConfig).
    params = dict(max_new_tokens=4, temperature=0.0, top_k=0, few_shot=0, max_prompt_tokens=640)
    teacher = TransformersTeacher(str(weights), identity, task, DecodingParams(mode="choice", **params), device=device)
    texts = [d["text"] for d in docs]
    rows, reference = [], None
    for mode in modes:
        teacher.set_decoding(DecodingParams(mode=mode, **params))
        prepared = teacher.prepare(texts)
        for batch in batches:
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds, answers, read = _timed(teacher, prepared, batch)
            row = {
                "mode": mode,
                "batch": batch,
                "n": len(prepared),
                "seconds": round(seconds, 3),
                "prompts_per_s": round(len(prepared) / seconds, 2),
                "prompt_tokens": sum(a.prompt_tokens for a in answers),
                "tokens_read": read,
                "completion_tokens": sum(a.completion_tokens or 0 for a in answers),
                "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
            }
            if mode == "choice":
                labels = [a.raw_text for a in answers]
                probs = [a.label_probs["positive"] for a in answers]
                if reference is None:
                    reference = (labels, probs)
                row["same_label_as_batch1"] = sum(a == b for a, b in zip(labels, reference[0])) / len(labels)
                row["max_abs_dp_vs_batch1"] = round(max(abs(a - b) for a, b in zip(probs, reference[1])), 5)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "model": identity,
        "build_seconds": round(build_s, 1),
        "prefix_cache": teacher.prefix_cache,
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "teacher_gpu.json").write_text(json.dumps(result, indent=1))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["prepare", "run"])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--teacher", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    ap.add_argument("--modes", nargs="+", default=["choice", "generate"])
    ap.add_argument("--device", default="cuda", help="run: cuda (the measurement) or cpu (a smoke run, with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="run: a 2-layer model of the same vocabulary (smoke runs)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "var/bench")))
    args = ap.parse_args(argv)
    if args.step == "prepare":
        prepare(args.n, args.teacher)
    else:
        run(args.batches, args.modes, args.out, args.device, args.tiny)


if __name__ == "__main__":
    main()
