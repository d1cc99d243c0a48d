"""LLM teachers: one interface over transformers (and, later, vLLM and OpenAI-compatible servers)."""

from __future__ import annotations

from llambert.config import ConfigError, Settings
from llambert.hardware import cuda_available, resolve_device, resolve_dtype
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
        truncation=t.truncation,
        prompt_style=t.prompt_style,
        strip_directives=t.strip_directives,
        max_document_tokens=t.max_document_tokens,
        # only the transformers backend stops early; the others' answers must not claim it in their cache key
        stop_at_label=t.stop_at_label and t.backend == "transformers",
    )


def with_gold_examples(con, settings: Settings, task: Task) -> Task:
    """The task with ``few_shot`` examples drawn from gold-labelled pool documents (never sampled,
    never from an excluded split, 40-600 characters), labels taken in turn, in a seeded order."""
    from llambert.tasks import Example

    k = settings.teacher.few_shot
    if settings.teacher.few_shot_source != "gold" or k == 0:
        return task
    rows = con.execute(
        """SELECT c.text, c.gold_label FROM raw.corpus c
           WHERE c.gold_label IS NOT NULL AND list_contains(?, c.split)
             AND c.doc_id NOT IN (SELECT doc_id FROM labeling.sample)
             AND length(c.text) BETWEEN 40 AND 600
           ORDER BY c.gold_label, md5(? || c.doc_id)""",
        [settings.sample.pool_splits, str(settings.sample.seed)],
    ).fetchall()
    by_label: dict[int, list[str]] = {}
    for text, label in rows:
        by_label.setdefault(int(label), []).append(text)
    picked: list[Example] = []
    ids = [i for i in task.label_ids if by_label.get(i)]
    while ids and len(picked) < k:
        for i in list(ids):
            if len(picked) < k and by_label[i]:
                picked.append(Example(text=by_label[i].pop(0), label=task.label_by_id(i).name))
            if not by_label[i]:
                ids.remove(i)
    if len(picked) < k:
        raise ConfigError(
            f"setting 'teacher.few_shot' = {k} with few_shot_source 'gold': only {len(picked)} gold-labelled "
            "short pool documents outside the sample were found. Lower teacher.few_shot, or set "
            "teacher.few_shot_source: task (the task file's examples)."
        )
    return task.model_copy(update={"examples": picked})


def make_teacher(settings: Settings, task: Task) -> TeacherBackend:
    """Resolve the configured model and start the configured backend (heavy imports happen here)."""
    from llambert.models import resolve_model

    t = settings.teacher
    decoding = decoding_params(settings)
    if t.backend == "openai":
        from llambert.teacher.openai_backend import OpenAITeacher

        tokenizer, identity = None, None
        try:  # a model we also have locally: same document cuts, same weights identity
            resolved = resolve_model(t.model, settings.models_dir, role="teacher")
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(resolved.path))
            identity = resolved.identity
        except Exception:  # a remote-only model (e.g. gpt-4o-mini): cut by characters
            pass
        decoding.extra["engine"] = "openai"
        return OpenAITeacher(
            t.model,
            task,
            decoding,
            base_urls=t.base_urls,
            api_key_env=t.api_key_env,
            concurrency=t.concurrency,
            model_identity=identity,
            tokenizer=tokenizer,
        )
    resolved = resolve_model(t.model, settings.models_dir, role="teacher")
    if t.backend == "vllm":
        from llambert.teacher.vllm_backend import VLLMTeacher

        decoding.extra["engine"] = "vllm"
        return VLLMTeacher(str(resolved.path), resolved.identity, task, decoding, dtype=resolve_dtype(t.dtype))
    from llambert.teacher.hf_backend import TransformersTeacher

    if t.device == "cuda" and not cuda_available():
        raise ConfigError(
            "setting 'teacher.device' is cuda but torch sees no CUDA GPU on this machine: set teacher.device: auto "
            "(the GPU when there is one, else the CPU) or cpu, or install a CUDA build of torch"
        )
    device = resolve_device(t.device)
    quantize = t.quantize == "int8"
    if quantize and device == "cuda":
        raise ConfigError(
            "setting 'teacher.quantize' is int8 but the teacher would run on the GPU (teacher.device auto found one): "
            "int8 dynamic quantization is a CPU path; set teacher.quantize: none or teacher.device: cpu"
        )
    return TransformersTeacher(
        str(resolved.path),
        resolved.identity + ("+int8" if quantize else ""),  # int8 answers may differ: their own cache
        task,
        decoding,
        dtype="float32" if quantize else resolve_dtype(t.dtype),
        quantize=quantize,
        threads=settings.threads,
        prefix_cache=t.prefix_cache,  # same answers either way: not part of the decoding key
        device=device,  # same answers up to float rounding: not part of the key either
    )


def cascade_settings(settings: Settings) -> Settings | None:
    """The settings the cascade's small model runs under: the teacher's, with its model and choice mode.

    Everything else (backend, prompt cut, few-shot, servers) is the teacher's, so the two models read
    the same prompts and the small model's answers are cached under its own identity.
    """
    c = settings.teacher.cascade
    if c is None:
        return None
    small = settings.teacher.model_copy(update={"model": c.model, "mode": "choice", "cascade": None})
    return settings.model_copy(update={"teacher": small})


def make_cascade_teacher(settings: Settings, task: Task) -> TeacherBackend | None:
    """The cascade's small model (``teacher.cascade``), or None when the cascade is off."""
    small = cascade_settings(settings)
    return None if small is None else make_teacher(small, task)


__all__ = [
    "Answer",
    "DecodingParams",
    "TeacherBackend",
    "cascade_settings",
    "decoding_params",
    "make_cascade_teacher",
    "make_teacher",
]
