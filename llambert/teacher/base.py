"""What every teacher backend provides, so the runner can cache and account uniformly."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Answer:
    raw_text: str | None
    label_probs: dict[str, float] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0


@dataclass
class DecodingParams:
    mode: str
    max_new_tokens: int
    temperature: float
    top_k: int
    few_shot: int
    max_prompt_tokens: int
    extra: dict = field(default_factory=dict)
    # What the model reads: the document's cut and the prompt's style (llambert/teacher/prompts.py).
    truncation: str = "head"
    prompt_style: str = "paper"
    strip_directives: bool = False
    max_document_tokens: int | None = None
    # generate mode, transformers backend: stop as soon as the answer is exactly a label spelling
    stop_at_label: bool = False

    def key(self) -> str:
        """Canonical JSON: part of every cache key, so different decoding never shares answers.

        ``truncation``, ``prompt_style`` and ``strip_directives`` enter only when they are not their defaults, so that keys
        made before they existed (the paper's prompt, head truncation) stay byte-identical and old
        caches still hit."""
        d = {k: v for k, v in self.__dict__.items() if k not in ("extra", *_READ_DEFAULTS)}
        d |= {k: getattr(self, k) for k, default in _READ_DEFAULTS.items() if getattr(self, k) != default}
        d |= self.extra
        if self.mode == "choice":  # scoring ignores sampling parameters
            reads = [k for k in _READ_DEFAULTS if k != "stop_at_label"]  # nothing is generated
            kept = ("mode", "few_shot", "max_prompt_tokens", "engine", "choice_constraint", *reads)
            d = {k: d[k] for k in kept if k in d}
        return json.dumps(d, sort_keys=True, separators=(",", ":"))


# Fields of DecodingParams added after caches existed, with the value every older key meant.
_READ_DEFAULTS = {
    "truncation": "head",
    "prompt_style": "paper",
    "strip_directives": False,
    "max_document_tokens": None,
    "stop_at_label": False,
}


class TeacherBackend(Protocol):
    name: str  # "transformers" | "vllm" | "openai"
    model_identity: str  # model name @ weights hash
    decoding: DecodingParams

    def prepare(self, texts: list[str]) -> list[str]:
        """What will be sent for each document (rendered prompt); hashed into the cache key."""

    def answer(self, prepared: list[str]) -> list[Answer]:
        """Answers for a batch of prepared prompts, in order."""

    def close(self) -> None: ...


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_key(model_identity: str, decoding_key: str, prepared: str) -> str:
    return sha256(f"{model_identity}\x1f{decoding_key}\x1f{prepared}")
