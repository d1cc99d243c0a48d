"""LLM teachers: one interface over transformers (and, later, vLLM and OpenAI-compatible servers)."""

from __future__ import annotations

from llambert.config import Settings
from llambert.tasks import Task
from llambert.teacher.base import Answer, DecodingParams, TeacherBackend


def decoding_params(settings: Settings) -> DecodingParams:
    t = settings.teacher
    return DecodingParams(
        mode=t.mode,
        max_new_tokens=t.max_new_tokens,
        temperature=t.temperature,
        top_k=t.top_k,
        few_shot=t.few_shot,
        max_prompt_tokens=t.max_prompt_tokens,
    )


def make_teacher(settings: Settings, task: Task) -> TeacherBackend:
    """Resolve the configured model and start the configured backend."""
    from llambert.models import resolve_model

    t = settings.teacher
    if t.backend != "transformers":
        raise NotImplementedError(f"teacher backend '{t.backend}' is not available yet; use 'transformers'")
    resolved = resolve_model(t.model, settings.models_dir, role="teacher")
    from llambert.teacher.hf_backend import TransformersTeacher

    return TransformersTeacher(
        str(resolved.path), resolved.identity, task, decoding_params(settings), dtype=t.dtype, threads=settings.threads
    )


__all__ = ["Answer", "DecodingParams", "TeacherBackend", "decoding_params", "make_teacher"]
