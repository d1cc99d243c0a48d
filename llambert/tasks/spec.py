"""The task spec: which labels exist, how to ask the LLM, and which answer words mean what."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

TASKS_DIR = Path(__file__).resolve().parent


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(ge=0, description="Integer stored in the label columns.")
    name: str = Field(min_length=1)
    words: list[str] = Field(
        default_factory=list,
        description="Answer words that mean this label (matched after lowercasing and removing "
        "punctuation and spaces). Defaults to [name].",
    )

    @model_validator(mode="after")
    def _default_words(self) -> Label:
        if not self.words:
            self.words = [self.name]
        self.words = [normalize_answer(w) for w in self.words]
        if any(not w for w in self.words):
            raise ValueError(f"label '{self.name}' has an answer word that is empty after normalisation")
        return self


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)
    label: str


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    labels: list[Label] = Field(min_length=2)
    system_prompt: str | None = None
    user_template: str
    examples: list[Example] = Field(default_factory=list)
    hardened_instruction: str | None = Field(
        None,
        description="teacher.prompt_style hardened: the question asked after the delimited document. None: "
        "the user_template with its {text} slot replaced by 'the document above'.",
    )
    text_name: str = Field("text", description="Human name for a document, used in error messages.")
    match: Literal["contains", "word"] = Field(
        "contains",
        description="contains: the paper's parser (label word anywhere in the normalised answer); "
        "word: the label word must be a whole word of the answer (safer for short words like 'no').",
    )

    @field_validator("user_template")
    @classmethod
    def _has_slot(cls, v: str) -> str:
        if "{text}" not in v:
            raise ValueError("user_template needs a {text} slot where the document goes")
        try:
            v.format(text="x")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"user_template has a slot other than {{text}} ({e}); write literal braces as {{{{ }}}}"
            ) from e
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Task:
        ids = [l.id for l in self.labels]
        names = [l.name for l in self.labels]
        if len(set(ids)) != len(ids):
            raise ValueError(f"label ids must be distinct, got {ids}")
        if len(set(names)) != len(names):
            raise ValueError(f"label names must be distinct, got {names}")
        words = [w for l in self.labels for w in l.words]
        for i, a in enumerate(words):
            for b in words[i + 1 :]:
                if a == b:
                    raise ValueError(f"answer word '{a}' belongs to two labels")
        for ex in self.examples:
            if ex.label not in names:
                raise ValueError(f"example label '{ex.label}' is not one of {names}")
        return self

    @property
    def label_names(self) -> list[str]:
        return [l.name for l in self.labels]

    @property
    def label_ids(self) -> list[int]:
        return [l.id for l in self.labels]

    def label_by_name(self, name: str) -> Label:
        for l in self.labels:
            if l.name == name:
                return l
        raise KeyError(f"task '{self.name}' has no label '{name}' (labels: {self.label_names})")

    def label_by_id(self, label_id: int) -> Label:
        for l in self.labels:
            if l.id == label_id:
                return l
        raise KeyError(f"task '{self.name}' has no label id {label_id} (ids: {self.label_ids})")

    @property
    def version(self) -> str:
        """A short hash of everything that changes what the LLM is asked."""
        exclude = {"description"} | ({"hardened_instruction"} if self.hardened_instruction is None else set())
        payload = self.model_dump(exclude=exclude)  # unset: the same version as before the field existed
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


_NON_ALNUM = re.compile(r"[\W_]+", re.UNICODE)


def normalize_answer(text: str) -> str:
    """The paper's normalisation: lowercase, drop punctuation and spaces (same as sql/labeling)."""
    return _NON_ALNUM.sub("", text).lower()


def available_tasks() -> list[str]:
    return sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))


# Parsed task files by (path, mtime, size): a run's steps each ask for the task, the YAML is read and
# validated once (and again only when the file changes).
_PARSED: dict[tuple[str, int, int], Task] = {}


def load_task(name_or_path: str | Path) -> Task:
    """Load a shipped task by name, or any YAML file by path (a copy: callers may derive their own)."""
    p = Path(name_or_path)
    if not p.suffix:
        p = TASKS_DIR / f"{name_or_path}.yaml"
    if not p.exists():
        raise FileNotFoundError(
            f"unknown task '{name_or_path}': shipped tasks are {available_tasks()}; or give the path of a task YAML file"
        )
    stat = p.stat()
    key = (str(p.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _PARSED:
        _PARSED[key] = _parse_task(p)
    return _PARSED[key].model_copy(deep=True)


def _parse_task(p: Path) -> Task:
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"task file {p} is not valid YAML: {e}") from e
    if isinstance(data, dict):
        data.setdefault("name", p.stem)
    try:
        return Task.model_validate(data)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ValueError(f"task file {p} is invalid: {msgs}") from None
