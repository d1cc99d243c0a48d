"""Turning a task and a document into the messages a chat model sees."""

from __future__ import annotations

from llambert.tasks import Task


def build_messages(task: Task, text: str, few_shot: int = 0) -> list[dict[str, str]]:
    """System prompt, optional few-shot turns from the task file, then the document."""
    messages: list[dict[str, str]] = []
    if task.system_prompt:
        messages.append({"role": "system", "content": task.system_prompt})
    for ex in task.examples[:few_shot]:
        messages.append({"role": "user", "content": task.user_template.format(text=ex.text)})
        messages.append({"role": "assistant", "content": ex.label})
    messages.append({"role": "user", "content": task.user_template.format(text=text)})
    return messages


def truncate_tokens(tokenizer, text: str, max_tokens: int) -> str:
    """Cut a document to at most ``max_tokens`` tokens, at a token boundary."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=False)


def apply_template(tokenizer, messages: list[dict[str, str]]) -> str:
    """The model's chat template with the generation prompt; for a base model (no template) a
    plain few-shot transcript ending in "Answer:", so the next word is the label."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(m["content"] + "\n\n")
        elif m["role"] == "user":
            parts.append(m["content"] + "\nAnswer:")
        else:
            parts.append(" " + m["content"] + "\n\n")
    return (tokenizer.bos_token or "") + "".join(parts)


_OVERHEAD: dict[tuple, int] = {}


def fit_document(tokenizer, task: Task, text: str, few_shot: int, max_prompt_tokens: int) -> str:
    """The document cut so that the whole prompt (template, instructions, examples) fits."""
    key = (
        getattr(tokenizer, "name_or_path", ""),
        str(getattr(tokenizer, "chat_template", "")),
        len(tokenizer),
        task.name,
        task.version,
        few_shot,
    )
    overhead = _OVERHEAD.get(key)
    if overhead is None:  # the template's own tokens: the same for every document
        empty = apply_template(tokenizer, build_messages(task, "", few_shot))
        overhead = _OVERHEAD[key] = len(tokenizer(empty, add_special_tokens=False)["input_ids"])
    budget = max(16, max_prompt_tokens - overhead)
    return truncate_tokens(tokenizer, text, budget)


def render_chat(tokenizer, task: Task, text: str, few_shot: int, max_prompt_tokens: int) -> str:
    """The exact string the model reads: the model's own chat template, generation prompt on.

    The document is cut so the whole prompt stays within ``max_prompt_tokens``.
    """
    return apply_template(
        tokenizer, build_messages(task, fit_document(tokenizer, task, text, few_shot, max_prompt_tokens), few_shot)
    )
