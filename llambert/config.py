"""All of llambert's settings, in one validated place.

Settings come from (later wins): the defaults below, a YAML file (``llambert.yaml`` in the
project root, or the file named by ``LLAMBERT_CONFIG``), then a few environment variables
(``LLAMBERT_HOME``, ``LLAMBERT_DATA_DIR``, ``LLAMBERT_TEACHER``, ``LLAMBERT_STUDENT``,
``LLAMBERT_SAMPLE_SIZE``). Errors name the setting and say what to do, before any work starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A setting is wrong; the message names it and says how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CorpusSource(_Strict):
    """One input to raw.corpus: a file or folder, and how to read it."""

    name: str = Field(description="Source name stored in raw.corpus.source.")
    path: str = Field(description="File or folder; relative paths are resolved against data_dir.")
    format: Literal["auto", "parquet", "csv", "jsonl", "aclimdb"] = "auto"
    split: str | None = Field(None, description="Split for every row; None: a 'split' column or the file stem.")
    text_column: str = "text"
    id_column: str | None = "id"
    label_column: str | None = "label"
    max_text_bytes: int = Field(
        1_000_000, ge=1, description="Longer texts go to raw.rejected (reason too_long): no model reads that much."
    )


class CascadeConfig(_Strict):
    """A small teacher asked first: its sure answers are kept, only the others go on to ``teacher.model``.

    The small model scores the labels (choice mode) on every sampled document on the same backend as the
    teacher (openai: the same servers must serve it); both models' answers are cached, so changing the
    threshold asks neither model again for what it already answered.
    """

    model: str = Field(description="The small model: registry name, local directory, hub id or served name.")
    threshold: float = Field(
        0.6,
        description="A document keeps the small model's answer when its top label probability is at least this; "
        "0.6 escalated 25% of 60 IMDb reviews from the 0.5B to the 1.5B at the 1.5B's accuracy, 1.76x faster; 0.8 "
        "and above escalated nearly all (docs/bench_teacher.md). "
        "the others are escalated to teacher.model. 0.5 on a two-label task escalates nothing; 1.0 nearly all.",
    )
    mode: str = Field("choice", description="Always choice: the threshold needs a probability per label.")

    @field_validator("model")
    @classmethod
    def _named(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("teacher.cascade.model is empty: name the small model, or remove teacher.cascade")
        return v

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: float) -> float:
        if not 0.5 <= v <= 1.0:
            raise ValueError(
                f"teacher.cascade.threshold must be within [0.5, 1.0], got {v}: it is the small model's top label "
                "probability from which its answer is kept (0.9 is a start; 1.0 escalates nearly everything)"
            )
        return v

    @field_validator("mode")
    @classmethod
    def _choice(cls, v: str) -> str:
        if v != "choice":
            raise ValueError(
                f"teacher.cascade.mode is {v!r}: the small model must score the labels (choice mode), since the "
                "threshold reads its label probabilities. Set teacher.cascade.mode: choice or leave it out"
            )
        return v


# The transformers teacher's batch on a GPU (teacher.batch_size unset): there batching pays, unlike on a CPU.
# Qwen2.5-Coder-1.5B shapes on an H200, 500 IMDb prompts (benchmarks/teacher_gpu.py, README): choice 10 prompts/s
# at batch 1, 215 at 64, 256 at 128 (15 GiB peak); 64 leaves room for larger teachers on smaller GPUs.
GPU_TEACHER_BATCH = 64


class TeacherConfig(_Strict):
    model: str = Field("qwen2.5-coder-1.5b-instruct", description="Registry name, local directory or hub id.")
    backend: Literal["transformers", "vllm", "openai"] = "transformers"
    mode: Literal["generate", "choice"] = Field(
        "choice",
        description="choice: score each label, a probability per label (the students' soft labels); generate: free "
        "text + the task's parser (the paper). Default: choice, except generate for backend openai (hosted APIs may "
        'not constrain choices). `make run` on IMDb, one run each (2026-12-05, README "Students"): the student '
        "scored 89.23% on the 25,000 test reviews from choice-mode labels against 88.43% from generate-mode ones, "
        "the teacher stage taking 16m03s against 15m41s (the same labels on 100 reviews, at 0.528 vs 0.530 prompts per "
        "CPU-second).",
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Prompts per model call. None: 1 for transformers on a CPU (the prompt's prefill "
        "is already at the matmul peak, so a batch buys little and pays padding: `python -m benchmarks.teacher "
        "--methods generate --batch B`: Qwen-1.5B 0.57 prompts/s at 1 on 500 reviews, 0.52 at 8 on 100; the "
        "0.5B 1.64 at 1 vs 1.76 at 8), 64 for transformers on a GPU (21x batch 1's prompts/s on an H200), 8 for vllm "
        "and openai (they batch or fan out what they are given).",
    )
    max_new_tokens: int = Field(4, ge=1, le=512)
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy.")
    top_k: int = Field(0, ge=0)
    max_prompt_tokens: int = Field(640, ge=32, description="Reviews are cut so that the prompt fits.")
    # The default cut, from `python -m benchmarks.teacher --truncation-sweep` on the teacher benchmark's 500 IMDb
    # test reviews (bf16, 2-core Zen 4, README "Teacher"): Qwen2.5-Coder-1.5B in generate mode, head+tail at 256
    # document tokens read 19% fewer prompt tokens for 1.28x prompts per CPU-second at -0.2 points (89.8% vs 90.0%
    # for the whole review; 4 won, 5 lost); 192 was 1.50x at -1.2, 128 1.81x at -2.6 (0.5B: 1.26x at +1.4).
    max_document_tokens: int | None = Field(
        256,
        ge=16,
        description="The document's own token budget in the prompt (None: whatever max_prompt_tokens leaves). "
        "Unlike max_prompt_tokens it does not shrink when few-shot examples or a longer template grow the "
        "prompt. 256 with head_tail: 1.28x the teacher's prompts per CPU-second at -0.2 points on IMDb (README). "
        "Part of the answer cache key; measure with `python -m benchmarks.teacher --truncation-sweep`.",
    )
    truncation: Literal["head", "head_tail"] = Field(
        "head_tail",
        description="How a document too long for max_document_tokens (or max_prompt_tokens) is cut. head: its "
        "beginning; head_tail: the first quarter and the last three quarters of the document's token budget (a "
        "review's verdict is often at its end; the student's head_tail). Part of the answer cache key; measure "
        "with `python -m benchmarks.teacher --truncation-sweep`.",
    )
    prompt_style: Literal["paper", "hardened", "spotlight"] = Field(
        "paper",
        description="paper: the task file's prompt as written (the LlamBERT paper's, the faithful default); "
        "hardened: the document delimited as data (<document>...</document>, tags inside it neutralised) with "
        "the instruction after it, against prompt injection in documents; spotlight: hardened with the document's "
        "words joined by ^ (datamarking; more tokens). Part of the answer cache key; "
        "measure with `python -m benchmarks.teacher --injection`.",
    )
    strip_directives: bool = Field(
        False,
        description="Remove the document's sentences that speak to the model before any prompt style: role or answer "
        "lines ('SYSTEM:', 'Assistant:', 'Answer:', '\"label\":'), chat-control markup, orders to ignore the "
        "instructions, 'the correct label is' (llambert/teacher/prompts.py `directives`). Against prompt injection; "
        "0.05% of IMDb reviews lose a sentence. The stored document is untouched. Part of the answer cache key; "
        "measure with `python -m benchmarks.teacher --injection`.",
    )
    stop_at_label: bool = Field(
        True,
        description="generate mode, transformers backend: stop decoding as soon as the answer is exactly one spelling "
        "of a label, instead of running one more step to read the end of turn (1.40x -> 1.63x the issue's prompts per "
        "CPU-second on a 2-core CPU, README). "
        "The parsed label is the same; the raw answer can lose what a model would have added after the label. "
        "Part of the answer cache key in generate mode.",
    )
    commit_every: int = Field(32, ge=1, description="Answers are committed to DuckDB in batches of this size.")
    few_shot: int = Field(0, ge=0, description="Number of the task's examples to put before each prompt.")
    # Not in DecodingParams, so in no answer cache key: the model reads the same tokens either way and the
    # answers are the same by design (tests/test_teacher_prefix.py compares them); only the cost changes.
    prefix_cache: bool = Field(
        True,
        description="transformers backend: compute the keys and values of the prompt's shared prefix (system "
        "prompt, few-shot turns, the template up to the document) once and read only each document and the suffix. "
        "Same answers; off only to measure it.",
    )
    few_shot_source: Literal["task", "gold"] = Field(
        "task",
        description="task: the task file's examples; gold: short gold-labelled pool documents outside the sample.",
    )
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto",
        description="auto: bfloat16 on a GPU or a CPU with native bf16 (AVX512_BF16/AMX), else float32 "
        "(emulated bf16 is ~100x slower than fp32 on an AVX2-only CPU; llambert/hardware.py).",
    )
    quantize: Literal["none", "int8"] = Field(
        "none",
        description="transformers backend on a CPU: int8 dynamic quantization of every linear layer but the output "
        "head (per-channel int8 weights, activations quantized per batch; torch.ao quantize_dynamic), computed in "
        "float32 around it. Reads the same tokens at about 2x fp32's matrix rate on an AVX2 CPU; answers can differ "
        "slightly, so the model identity gets '+int8' (a separate answer cache). Measure with "
        "`python -m benchmarks.teacher --quantize-ab`.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="transformers backend: where the model runs. auto: the first CUDA GPU when torch sees one, "
        "else the CPU; cuda without a GPU is an error at start, not a silent CPU run.",
    )
    base_urls: list[str] = Field(default_factory=list, description="openai backend: servers to spread load over.")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai backend: env var holding the key (never stored).")
    concurrency: int = Field(8, ge=1)
    price_per_1m_input_tokens: float = Field(0.0, ge=0.0, description="Priced endpoints: for cost projections.")
    price_per_1m_output_tokens: float = Field(0.0, ge=0.0, description="Priced endpoints: for cost projections.")
    cascade: CascadeConfig | None = Field(
        None,
        description="Optional: a small model answers first (choice mode) and only documents it is unsure of go "
        "to `model`; labeling.llm_responses.answered_by says which one answered. None (default): off.",
    )

    @model_validator(mode="before")
    @classmethod
    def _mode_for_backend(cls, data: Any) -> Any:
        """teacher.mode left unset: choice, except for the openai backend (a hosted API may not constrain the
        answer to the labels or return log-probabilities), which keeps the paper's generate + parser."""
        if isinstance(data, dict) and data.get("mode") is None:
            data = {**data, "mode": "generate" if data.get("backend") == "openai" else "choice"}
        return data

    @model_validator(mode="after")
    def _quantize_on_cpu(self) -> TeacherConfig:
        if self.quantize == "int8" and (
            self.backend != "transformers" or self.device == "cuda" or self.dtype == "bfloat16"
        ):
            raise ValueError(
                "teacher.quantize int8 is for the transformers backend on a CPU in float32 (got backend "
                f"{self.backend!r}, device {self.device!r}, dtype {self.dtype!r}): set teacher.quantize: none, or "
                "backend transformers with device cpu/auto and dtype auto/float32"
            )
        return self

    @model_validator(mode="after")
    def _cascade_differs(self) -> TeacherConfig:
        if self.cascade is not None and self.cascade.model.strip() == self.model.strip():
            raise ValueError(
                f"teacher.cascade.model is the teacher itself ({self.model!r}): name a smaller model for the "
                "cascade, or remove teacher.cascade"
            )
        return self

    def resolved_batch_size(self, device: str = "cpu") -> int:
        """``batch_size``, or the backend's default when it is not set. ``device`` is where the transformers
        backend runs (``llambert.hardware.resolve_device(teacher.device)``; config imports nothing of the project)."""
        if self.batch_size is not None:
            return self.batch_size
        if self.backend != "transformers":
            return 8
        return GPU_TEACHER_BATCH if device == "cuda" else 1


class StudentConfig(_Strict):
    model: str = Field("all-minilm-l6-v2", description="Registry name, local directory or hub id.")
    recipe: Literal["baseline", "llambert", "llambert_extra", "combined"] = Field(
        "llambert_extra",
        description="The paper's set-ups. baseline: gold labels of the train split; llambert: LLM labels of the "
        "sampled train-split documents; llambert_extra: LLM labels of every sampled document (train + extra "
        "pool); combined: first llambert_extra's LLM labels, then continue on the gold train labels.",
    )
    max_length: int = Field(256, ge=8, le=8192)
    epochs: int = Field(3, ge=1)
    learning_rate: float = Field(
        1e-4,
        gt=0,
        description="MiniLM-sized encoders on a few hundred to a few thousand "
        "labels learn faster at 1e-4 than the paper's 5e-5 (docs/bench_quality.md).",
    )
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    val_fraction: float = Field(0.1, ge=0.0, lt=0.9)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    seed: int = 42
    bf16: bool | Literal["auto"] = Field(
        "auto",
        description="bf16 weights/autocast for training and corpus labeling. auto: only where the hardware "
        "has native bf16 (GPU, AVX512_BF16, AMX); emulated bf16 on an AVX2-only CPU is ~100x slower than fp32.",
    )
    truncation: Literal["head", "head_tail"] = Field(
        "head_tail",
        description="head: the first max_length tokens; head_tail: the first quarter and the last "
        "three quarters of the budget (a review's verdict is often at its end). Same cost; see docs/bench_quality.md.",
    )
    kind: Literal["encoder", "linear", "ensemble"] = Field(
        "ensemble",
        description="Which students compete for champion. linear: TF-IDF + logistic regression only (the "
        "floor, trained in seconds, thousands of docs/s); encoder: the fine-tuned `model` and the floor; ensemble: both "
        "plus their temperature-calibrated weighted average (weights fitted on the validation split). The champion "
        'rule (README "Students") picks among them by gold-probe score and measured docs/s.',
    )
    soft_labels: bool = Field(
        True,
        description="Train on the teacher's label distribution (choice mode's label_probs) with a distillation "
        "loss instead of its argmax; answers without probabilities (generate mode, audit, gold) stay hard labels.",
    )
    distill_temperature: float = Field(
        1.0,
        gt=0,
        description="Soft labels: the teacher distribution is p^(1/T), renormalised (T>1 softer, T<1 sharper).",
    )
    confidence: Literal["none", "weight", "filter"] = Field(
        "none",
        description="Teacher confidence per label: weight (loss weighted by the teacher's probability of "
        "its label) or filter (drop labels below min_confidence). Needs choice-mode probabilities.",
    )
    min_confidence: float = Field(
        0.6, ge=0.0, le=1.0, description="confidence: filter drops teacher labels below this."
    )
    class_weight: Literal["balanced", "none"] = Field(
        "balanced",
        description="balanced: each class weighs as much as the others in the loss (skewed label sets "
        "must not collapse to the majority class).",
    )
    min_train_steps: int = Field(
        240,
        ge=0,
        description="Small label sets get more epochs: at least this many optimizer steps (epochs is the "
        "minimum; capped by max_epochs). 250 labels at batch 16 give 48 steps in 3 epochs: too few to leave the prior.",
    )
    max_epochs: int = Field(12, ge=1)
    early_stopping_patience: int = Field(
        2,
        ge=0,
        description="Stop after this many epochs without a better "
        "validation score (0: run every epoch); the best epoch is kept either way.",
    )
    linear_char_ngrams: bool = Field(
        False,
        description="Linear student: add character 2-5-grams (+0.3 pt on IMDb at 1,000 labels, 8x slower to label).",
    )
    champion_tolerance: float = Field(
        0.005,
        ge=0.0,
        le=0.2,
        description="Champion rule: eligible candidates within this of the best score are as good; "
        "among those, speed decides only when material (champion_speedup).",
    )
    champion_speedup: float = Field(
        1.5,
        ge=1.0,
        description="Champion rule: among the as-good candidates, those within this factor of the fastest one's "
        "measured docs/s count as fast, and the best-scoring fast one wins. 1.0: the fastest as-good candidate "
        "always wins; 1.5 keeps a 2-3% docs/s difference (noise on shared cores) from outvoting a better score.",
    )
    # Measured (README "Students"): the defaults' candidates at 1,000 IMDb labels were within 0.006 probe macro-F1
    # of each other (500 probe documents: a standard error of ~0.014), and the rule took the encoder; scored on the
    # 22,642 IMDb test reviews outside the test slice and the pool (`python -m benchmarks.quality fresh`), its
    # ensemble was +0.95 points (95% +0.76 to +1.15) and the distilled ensemble +1.24 (+0.98 to +1.51) above it;
    # on the fixed 2,000-review slices every ensemble measured scored at or above its encoder (12 of 12 runs).
    champion_ensemble_margin: float = Field(
        0.015,
        ge=0.0,
        le=0.2,
        description="Champion rule: an ensemble (or distilled ensemble) within this of the best score is as good, "
        "and among the as-good candidates that are fast it is preferred to a single model: probe differences this "
        "small are noise, and ensembles beat their own encoder on unseen test reviews. 0: no preference.",
    )
    ensemble_weights: Literal["equal", "fitted"] = Field(
        "equal",
        description="Ensembles: each member's temperature is fitted on the validation split either way; equal "
        "(default) then averages the calibrated members, fitted also fits the mixing weight there (shrunk toward "
        "equal by the split's size). The split is a tenth of the LLM labels (100 at 1,000): the fitted weight "
        "over-trusted the encoder (0.67): on 22,642 unseen IMDb test reviews the first ensemble went from 89.24% "
        '(fitted) to 89.66% (equal), README "Students".',
    )
    route_max_changed: float = Field(
        0.003,
        ge=0.0,
        le=1.0,
        description="Routing in ensembles (0: off): the linear floor alone labels the documents it is sure of, and "
        "the encoder runs only on the rest. How sure is fitted per ensemble on `route_docs` unlabeled pool documents: "
        "the lowest top-probability threshold at which routing changes at most this share of all labels against "
        "the full ensemble (accuracy cannot move by more). A fixed threshold does not work: a floor trained on "
        "uncertainty-sampled documents is far less confident (docs/bench_quality.md).",
    )
    route_docs: int = Field(
        1000,
        ge=0,
        description="Routing: unlabeled pool documents the threshold is fitted on (the ensemble labels them once).",
    )
    self_distill: int = Field(
        6000,
        ge=0,
        description="Self-distillation (0: off): after the family is trained, the ensemble (the encoder for kind: "
        "encoder) labels this many pool documents the teacher never saw, with soft labels (students.distill_labels); "
        "an encoder trains on the teacher's labels plus those (`distilled`), under kind: ensemble so does the floor's "
        "TF-IDF model (`distilled_linear`, seconds), and the two are ensembled (`distilled_ensemble`); all compete. "
        "Skipped when no unsampled pool document is left, and under kind: linear. 6,000 rather than 2,000 on IMDb at "
        "1,000 uncertainty labels: the product's champion 89.23% -> 90.04% on the 25,000 test reviews, the bench's "
        "90.14% -> 90.42% on 22,642 unseen ones (the teacher: 90.7%), for 184 s more training on 2 cores "
        '(README "Students", docs/bench_quality.md).',
    )
    distill_from: Literal["base", "encoder"] = Field(
        "encoder",
        description="Self-distillation's starting weights. encoder (default): continue the first generation's "
        "fine-tuned encoder for `distill_epochs` epochs on the teacher's labels plus the pseudo-labels; base: a fresh "
        "`model` under the usual epochs rule. IMDb, 1,000 uncertainty labels, same session: 443 s instead of 1,149 s "
        "(distilled encoder 88.55% vs 88.85%, its ensemble 89.05% vs 89.25%; the champion, the first-generation "
        "ensemble at 88.9%, the same), `make run` projected at 0.95x the paper recipe's wall time instead of 1.10x "
        "(docs/bench_quality.md).",
    )
    distill_epochs: int = Field(
        1, ge=1, description="distill_from: encoder: epochs of the continued training (no min_train_steps rule)."
    )
    infer_batch_size: int = Field(
        16,
        ge=1,
        description="Documents per forward pass when labeling the corpus. `make bench-student "
        "BENCH_ARGS=batches` (MiniLM, bf16, 2 cores, 500 IMDb reviews, two interleaved rounds): 256 tokens: 16 -> "
        "73.5-84.6 docs/s, 32 -> 74.6-77.3, 8 -> 70.0-83.6; 512 tokens: 16 -> 51.8-52.4, 32 -> 47.0-47.5, "
        "8 -> 52.7-55.2 (64 did 64.6 at 256 earlier). Past 16 the activations spill out of cache.",
    )
    infer_max_length: int = Field(256, ge=8, le=8192)
    chunk_rows: int = Field(4096, ge=64, description="Rows per DuckDB write during whole-corpus labeling.")
    champion_metric: Literal["probe_accuracy", "probe_f1", "val_accuracy", "val_f1"] = Field(
        "probe_f1",
        description="How checkpoints compete for champion (macro-F1 by default: on a skewed task accuracy rewards "
        "predicting the majority class). probe_*: on the fixed gold probe, the same documents "
        "for every checkpoint (falls back to val_* when the corpus has no gold train labels); val_*: on each "
        "checkpoint's own validation split (not comparable across label sources).",
    )
    probe_size: int = Field(
        500,
        ge=0,
        description="Gold train documents held out of every recipe's training to compare checkpoints "
        "on (at most a fifth of the gold documents; 0: no probe).",
    )


class SampleConfig(_Strict):
    size: int = Field(1000, ge=1, description="LLM calls: documents the teacher labels.")
    seed: int = 0
    strategy: Literal["random", "uncertainty"] = Field(
        "uncertainty",
        description="random: a seeded random sample of the pool (the paper's way). uncertainty "
        "(default: +3 points for the MiniLM student at 500 IMDb LLM labels, docs/bench_quality.md): a random seed "
        "round, then rounds of the pool documents the linear floor (trained on the labels so far) is least sure of, "
        'mixed with random picks (llambert/sampling.py; README "Students").',
    )
    round_size: int = Field(
        250,
        ge=1,
        description="uncertainty: documents per round (the seed round too). Fixed, "
        "so a larger sample.size re-derives the same earlier rounds from cached answers.",
    )
    random_share: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="uncertainty: share of each later round picked at "
        "random from the pool (coverage) rather than by the floor's uncertainty.",
    )
    score_pool: int = Field(
        20000,
        ge=1,
        description="uncertainty: pool documents (in the pool's seeded order, not yet "
        "sampled) the floor rescores each round.",
    )
    pool_splits: list[str] = Field(default_factory=lambda: ["train", "unsup"])
    exclude_splits: list[str] = Field(default_factory=lambda: ["test"], description="Never sampled.")

    @model_validator(mode="after")
    def _disjoint(self) -> SampleConfig:
        both = set(self.pool_splits) & set(self.exclude_splits)
        if both:
            raise ValueError(f"split(s) {sorted(both)} are both in pool_splits and exclude_splits")
        return self


class CheckConfig(_Strict):
    """Bounds of the data contracts (llambert/contracts.py, data_contracts/); see README "Data contracts"."""

    min_minority_share: float = Field(
        0.3,
        ge=0.0,
        le=0.5,
        description="Blocking: the rarest label's share of "
        "the parsed LLM labels (and of a batch's predictions) is at least this.",
    )
    max_discard_rate: float = Field(
        0.05, ge=0.0, le=1.0, description="Blocking: share of LLM answers the parser discards."
    )
    max_balance_shift: float = Field(
        0.15,
        ge=0.0,
        le=1.0,
        description="Blocking: the largest change of any label's "
        "share against the previous run (parsed labels) or the other batches (predictions).",
    )
    min_teacher_gold_accuracy: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        description="Warning: the teacher's accuracy on the sampled documents that have a gold label (the gold probe).",
    )
    min_student_teacher_agreement: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        description="The champion's agreement with the "
        "teacher on a batch's sampled documents (blocking) and the newest "
        "checkpoint's on held-out LLM labels (warning).",
    )
    collapse_ratio: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="Blocking: a student whose predicted share of some class is below this "
        "fraction of that class's true share (gold probe; for a batch's predictions, the teacher's labels) has "
        "collapsed: it is never champion, and such predictions fail the batch.",
    )
    max_rejected_share: float = Field(
        0.05, ge=0.0, le=1.0, description="Warning: share of a batch's input rows that went to raw.rejected."
    )
    max_validated_rows: int = Field(
        200_000,
        ge=1_000,
        description="Row-level expectations (great_expectations) see at "
        "most this many rows of a table or partition (a seeded sample beyond); keys, "
        "coverage and the statistical gates always run in SQL over every row.",
    )


class InboxConfig(_Strict):
    """Where new reviews arrive and how their files are read (see README "Labeling new reviews")."""

    dir: Path | None = Field(None, description="Folder watched for new files; None: <home>/inbox.")
    poll_seconds: int = Field(30, ge=1, description="How often the Dagster sensor looks at the folder.")
    settle_seconds: float = Field(
        2.0, ge=0, description="A file is taken only once unchanged this long (still being written otherwise)."
    )
    max_files_per_tick: int = Field(
        20, ge=1, description="At most this many new files become partitions per sensor tick."
    )
    split: str | None = Field(
        "inbox",
        description="Split of every new row; None: a 'split' column or the file stem. "
        "The default keeps new reviews out of the LLM sample pool and out of the evaluation split.",
    )
    text_column: str = "text"
    id_column: str | None = "id"
    label_column: str | None = "label"


class AuditConfig(_Strict):
    """Per-batch LLM audit of the student and when to ask for a retrain."""

    enabled: bool = Field(
        False, description="Send the student's least confident documents of each new batch to the teacher."
    )
    k: int = Field(32, ge=1, description="Documents audited per batch (the least confident ones).")
    audit_initial: bool = Field(
        False, description="Audit the initial batch too (its sample is labeled by the LLM already)."
    )
    retrain_min_new_labels: int = Field(
        200, ge=1, description="Request a retrain once this many audit labels are newer than the champion."
    )
    retrain_min_agreement: float = Field(
        0.8, ge=0.0, le=1.0, description="Request a retrain when a batch's student-teacher agreement is below this."
    )
    min_audited_for_agreement: int = Field(
        8, ge=1, description="Agreement on fewer parsed answers than this never triggers a retrain."
    )
    auto_retrain: bool = Field(
        False, description="A sensor launches the train_student job when a retrain is requested."
    )


class InferenceConfig(_Strict):
    """Whole-corpus labeling: in this process (local) or as a Ray Data job over many workers (README "Scaling out")."""

    engine: Literal["local", "ray"] = Field(
        "local",
        description="local: this process labels the batch in chunks. ray: the pending documents are "
        "exported as Parquet shards and labeled by Ray Data actors (pip install 'llambert[ray]').",
    )
    ray_address: str | None = Field(
        None,
        description="ray: None starts a local Ray with inference.num_cpus; 'auto' or 'ray://host:10001' "
        "joins a running cluster (llambert must be importable on its nodes).",
    )
    num_cpus: int | None = Field(None, ge=1, description="ray, local Ray only: CPUs it may use (None: all cores).")
    workers: int = Field(2, ge=1, description="ray: actors labeling at once; each loads the champion once.")
    cpus_per_worker: float = Field(1.0, gt=0, description="ray: CPUs reserved per actor (also its torch threads).")
    gpus_per_worker: float = Field(0.0, ge=0, description="ray: GPUs per actor (0: CPU).")
    shard_rows: int = Field(10_000, ge=1, description="ray: documents per exported Parquet shard (a Ray block).")
    batch_rows: int = Field(1024, ge=1, description="ray: documents per map_batches call (sorted by length inside).")
    actor_start_timeout_s: float = Field(
        600,
        gt=0,
        description="ray: how long the job waits for all inference.workers actors to load the champion before "
        "any block is handed out (a cluster without room for them fails with a message, instead of waiting).",
    )
    staging_dir: Path | None = Field(
        None,
        description="ray: where shards and staged predictions go; None: <home>/staging. On a cluster, a "
        "folder every node sees (NFS) at the same path.",
    )


class PredictionsConfig(_Strict):
    """Where predictions.labels keeps its rows."""

    storage: Literal["table", "parquet"] = Field(
        "table",
        description="table: a DuckDB table (one writer). parquet: a Parquet dataset under "
        "<home>/predictions (folders per batch) with the view predictions.labels over it, so loading a Ray "
        "job's output is a file move, not an insert.",
    )


class Settings(_Strict):
    home: Path = Field(PROJECT_ROOT / "var", description="Warehouse, checkpoints, Dagster home.")
    model_cache: Path | None = Field(
        None,
        description="Where offline models are converted, shared by every home (env LLAMBERT_MODEL_CACHE). "
        "None: ~/.cache/llambert/models ($XDG_CACHE_HOME/llambert/models), except for a home that already holds "
        "converted models in <home>/models, which keeps using that folder.",
    )
    data_dir: Path = Field(PROJECT_ROOT.parent / "shared" / "data" / "imdb")
    task: str = Field("imdb_sentiment", description="A task name shipped in llambert/tasks or a YAML path.")
    eval_split: str = "test"
    sources: list[CorpusSource] | None = Field(
        None, description="None: the IMDb parquet files (train, test, unsup) in data_dir."
    )
    sample: SampleConfig = Field(default_factory=SampleConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    checks: CheckConfig = Field(default_factory=CheckConfig)
    inbox: InboxConfig = Field(default_factory=InboxConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    predictions: PredictionsConfig = Field(default_factory=PredictionsConfig)
    threads: int | None = Field(None, ge=1, description="torch threads; None: all cores.")

    @field_validator("home", "data_dir", "model_cache", mode="before")
    @classmethod
    def _expand(cls, v: Any) -> Any:
        return Path(os.path.expandvars(str(v))).expanduser() if v is not None else v

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def checkpoints_dir(self) -> Path:
        return self.home / "checkpoints"

    @property
    def predictions_dir(self) -> Path:
        """predictions.storage parquet: the dataset behind the view predictions.labels."""
        return self.home / "predictions"

    @property
    def staging_dir(self) -> Path:
        d = self.inference.staging_dir
        if d is None:
            return self.home / "staging"
        d = Path(os.path.expandvars(str(d))).expanduser()
        return d if d.is_absolute() else self.home / d

    @property
    def models_dir(self) -> Path:
        """The model cache: where offline models are looked up and converted (see ``model_cache``)."""
        if self.model_cache is not None:
            return self.model_cache
        from llambert.models.registry import MANIFEST_NAME, default_model_cache

        legacy = self.home / "models"  # before the shared cache: keep using what this home converted
        if any(legacy.glob(f"*/hf/{MANIFEST_NAME}")):
            return legacy
        return default_model_cache()

    @property
    def inbox_dir(self) -> Path:
        if self.inbox.dir is not None:  # relative: under home
            d = Path(os.path.expandvars(str(self.inbox.dir))).expanduser()
            return d if d.is_absolute() else self.home / d
        return self.home / "inbox"

    def corpus_sources(self) -> list[CorpusSource]:
        """The configured sources, or the IMDb default."""
        if self.sources is not None:
            return self.sources
        return [
            CorpusSource(name="imdb", path=f"{split}.parquet", format="parquet", split=split)
            for split in ("train", "test", "unsup")
        ]

    def resolve_source_path(self, source: CorpusSource) -> Path:
        p = Path(os.path.expandvars(source.path)).expanduser()
        return p if p.is_absolute() else self.data_dir / p


_ENV_OVERRIDES = {
    "LLAMBERT_HOME": ("home",),
    "LLAMBERT_MODEL_CACHE": ("model_cache",),
    "LLAMBERT_DATA_DIR": ("data_dir",),
    "LLAMBERT_TASK": ("task",),
    "LLAMBERT_TEACHER": ("teacher", "model"),
    "LLAMBERT_TEACHER_MODE": ("teacher", "mode"),
    "LLAMBERT_STUDENT": ("student", "model"),
    "LLAMBERT_SAMPLE_SIZE": ("sample", "size"),
}


def _set_path(d: dict, keys: tuple[str, ...], value: Any) -> None:
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def default_config_path() -> Path | None:
    env = os.environ.get("LLAMBERT_CONFIG")
    if env:
        p = Path(env).expanduser()
        if not p.exists():
            raise ConfigError(f"LLAMBERT_CONFIG points at {p}, which does not exist.")
        return p
    for p in (Path.cwd() / "llambert.yaml", PROJECT_ROOT / "llambert.yaml"):  # yours first, then the project's
        if p.exists():
            return p
    return None


def load_settings(path: str | Path | None = None, overrides: dict | None = None) -> Settings:
    """Read settings from YAML + environment + ``overrides`` (a nested dict), validated."""
    raw: dict = {}
    path = Path(path) if path else default_config_path()
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of settings, not {type(raw).__name__}.")
        base = Path(path).resolve().parent
        for key in ("home", "data_dir", "model_cache"):
            if (
                key in raw
                and raw[key] is not None
                and not Path(os.path.expandvars(str(raw[key]))).expanduser().is_absolute()
            ):
                raw[key] = str(base / os.path.expandvars(str(raw[key])))
    for env, keys in _ENV_OVERRIDES.items():
        if os.environ.get(env):
            _set_path(raw, keys, os.environ[env])
    if os.environ.get("LLAMBERT_OVERRIDES"):  # any settings, as a YAML/JSON mapping (CI, tests): over the file
        try:
            more = yaml.safe_load(os.environ["LLAMBERT_OVERRIDES"])
        except yaml.YAMLError as e:
            raise ConfigError(f"LLAMBERT_OVERRIDES is not valid YAML: {e}") from e
        if not isinstance(more, dict):
            raise ConfigError("LLAMBERT_OVERRIDES must be a YAML mapping of settings, e.g. '{sample: {size: 200}}'.")
        raw = _deep_merge(raw, more)
    if overrides:
        raw = _deep_merge(raw, overrides)
    try:
        return Settings.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            lines.append(f"  setting '{loc}': {err['msg']} (got {err.get('input')!r})")
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid llambert configuration{where}:\n" + "\n".join(lines)) from None


def parse_overrides(items: list[str]) -> dict:
    """``["sample.size=200", "teacher.mode=choice"]`` -> a nested dict of YAML-typed values."""
    overrides: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set needs KEY=VALUE (e.g. sample.size=200), got {item!r}")
        key, value = item.split("=", 1)
        node = overrides
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return overrides
