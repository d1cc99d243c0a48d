"""What each pipeline step returns: small typed results, with the figures the UI shows (``.metadata()``).

The library never imports Dagster: ``metadata()`` is a plain dict of scalars (str, int, float, bool) that an
asset adds to its materialization; the step's tables and charts are the asset's business. Figures can also
be read by name (``result["rows"]``), as the CLI, benchmarks and tests do.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

_SCALARS = (str, int, float, bool)


@dataclass
class StepResult:
    """Base of the step results: read by name, as a dict (``ops.stage_runs.details``), or as UI metadata."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _extra(self) -> dict[str, Any]:
        """Figures whose names vary (scores, engine details): read by name and shown like fields."""
        return {}

    def __getitem__(self, key: str) -> Any:
        if key in self.__dataclass_fields__:
            return getattr(self, key)
        extra = self._extra()
        if key in extra:
            return extra[key]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def metadata(self) -> dict[str, Any]:
        """Every scalar figure that is set: what the asset shows in the UI."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out |= self._extra()
        return {k: v for k, v in out.items() if v is not None and isinstance(v, _SCALARS)}


@dataclass
class IngestResult(StepResult):
    batch: str
    input_rows: int
    accepted_rows: int
    rejected_rows: int
    documents: int
    duplicate_rows: int
    already_known: int


@dataclass
class SampleResult(StepResult):
    rows: int
    requested: int
    strategy: str
    pool: int
    by_split: dict = field(default_factory=dict)


@dataclass
class TeacherResult(StepResult):
    rows: int
    model: str
    backend: str
    mode: str
    asked: int
    from_cache: int
    prompt_tokens: int
    completion_tokens: int
    label_seconds: float
    model_load_seconds: float
    prompts_per_s: float | None
    run_id: str
    strategy: str
    rounds: int
    sampled: int
    # teacher.cascade only: the small model, its threshold, the prompts it was asked, and the sampled
    # documents whose answer is the teacher's (escalated) and their share.
    cascade_model: str | None = None
    cascade_threshold: float | None = None
    cascade_asked: int | None = None
    escalated: int | None = None
    escalated_share: float | None = None
    # openai backend, choice mode: which server answered ('llama.cpp', 'vllm', 'unknown') and whether the
    # answers were constrained to the labels (false: free generation plus logprobs; None: not known).
    server: str | None = None
    constrained_choice: bool | None = None


@dataclass
class ParseResult(StepResult):
    parsed: int
    discarded: int
    discard_rate: float
    label_counts: dict = field(default_factory=dict)
    discard_reasons: dict = field(default_factory=dict)


@dataclass
class TrainResult(StepResult):
    """The main member (the encoder, or the floor for ``student.kind: linear``), every candidate, the champion."""

    checkpoint_id: str
    kind: str
    path: str
    reused: bool
    fingerprint: str
    n_train: int
    n_val: int
    recipe: str
    label_source: str
    student_kind: str
    champion: str | None
    champion_kind: str | None
    is_champion: bool
    champion_reason: str | None
    best_epoch: int | None = None
    train_examples_per_s: float | None = None
    scores: dict = field(default_factory=dict)  # val_*, probe_*, docs_per_s, min_share_ratio of the main member
    history: list = field(default_factory=list)  # its epochs (empty when reused)
    candidates: list = field(default_factory=list)  # one dict per kind trained or reused

    def _extra(self) -> dict[str, Any]:
        return dict(self.scores)


@dataclass
class PredictResult(StepResult):
    batch: str
    checkpoint_id: str
    predicted_now: int
    docs_per_s: float | None
    rows: int
    engine: str
    details: dict = field(default_factory=dict)  # what the engine reports (Ray: workers, blocks, ...)

    def _extra(self) -> dict[str, Any]:
        return dict(self.details)


@dataclass
class AuditResult(StepResult):
    """A batch audit's figures; ``skipped`` says why nothing was audited (then the rest is unset)."""

    batch: str
    skipped: str | None = None
    checkpoint_id: str | None = None
    k: int | None = None
    audited: int = 0
    parsed: int | None = None
    agreed: int | None = None
    agreement: float | None = None
    teacher_prompts: int | None = None
    teacher_cached: int | None = None
    new_labels_since_training: int | None = None
    retrain_requested: bool = False
    retrain_reason: str | None = None


@dataclass
class InboxBatchResult(StepResult):
    """An inbox batch recorded in raw.inbox_files."""

    batch: str
    file: str
    sha256: str
    input_rows: int
    rejected_rows: int
    new_documents: int
    known_documents: int
