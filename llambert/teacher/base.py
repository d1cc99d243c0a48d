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

    def key(self) -> str:
        """Canonical JSON: part of every cache key, so different decoding never shares answers."""
        d = {k: v for k, v in self.__dict__.items() if k != "extra"} | self.extra
        if self.mode == "choice":  # scoring ignores sampling parameters
            d = {k: d[k] for k in ("mode", "few_shot", "max_prompt_tokens", "engine", "choice_constraint") if k in d}
        return json.dumps(d, sort_keys=True, separators=(",", ":"))


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
