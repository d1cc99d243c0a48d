"""The student family trained from one set of labels: the linear floor, the fine-tuned encoder and
their ensemble. Every member sees the same training examples and the same held-out validation
split (the ensemble's weights are fitted on it); the gold probe, never trained on, judges them
(``sql/students/champion.sql``). No database here: llambert.pipeline stores and compares them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llambert.config import StudentConfig
from llambert.metrics import classification_metrics
from llambert.student.train import Phase, split_validation

KINDS_FOR = {"linear": ["linear"], "encoder": ["linear", "encoder"], "ensemble": ["linear", "encoder", "ensemble"]}
# student.self_distill: the second generation, trained after (and taught by) the first. Under kind: ensemble
# both members learn again: the distilled encoder and a floor-like linear model on the same teacher labels +
# pseudo-labels (seconds of training; the distilled ensemble averages the two).
DISTILLED_FOR = {
    "linear": [],
    "encoder": ["distilled"],
    "ensemble": ["distilled", "distilled_linear", "distilled_ensemble"],
}
# Linear (TF-IDF) kinds: the floor is only `linear` (the teacher's labels alone), but an ensemble routes
# through whichever linear member it has.
LINEAR_KINDS = ("linear", "distilled_linear")


def kinds_for(cfg: StudentConfig) -> list[str]:
    """The candidates one training step produces, in training order (each may need the ones before it)."""
    return KINDS_FOR[cfg.kind] + (DISTILLED_FOR[cfg.kind] if cfg.self_distill else [])


def distill_source(kinds: list[str]) -> str:
    """Which first-generation member teaches the distilled encoder: the ensemble where there is one."""
    return "ensemble" if "ensemble" in kinds else "encoder"


def distill_start(cfg: StudentConfig, base_path: str, encoder_path: str | Path) -> tuple[str, StudentConfig]:
    """Where the distilled encoder starts and how long it trains: a fresh ``base_path`` under the usual rules, or
    (``distill_from: encoder``) the first generation's encoder for ``distill_epochs`` epochs, no step floor."""
    if cfg.distill_from == "encoder":
        return str(encoder_path), cfg.model_copy(
            update={"epochs": cfg.distill_epochs, "max_epochs": cfg.distill_epochs, "min_train_steps": 0}
        )
    return str(base_path), cfg


@dataclass
class Trained:
    """What one member's training produced (the encoder also has per-epoch history)."""

    kind: str
    path: Path
    n_train: int
    n_val: int
    metrics: dict
    seconds: float
    history: list[dict] = field(default_factory=list)
    train_examples_per_s: float = 0.0
    best_epoch: int | None = None


def split_phases(phases: list[Phase], cfg: StudentConfig) -> tuple[list[Phase], Phase]:
    """Hold out ``val_fraction`` of the last phase (the labels the final model must fit), as train_student does."""
    phases = [p for p in phases if p.texts]
    if not phases:
        raise ValueError("no training examples: the label source is empty (see labeling.parsed_labels)")
    last = phases[-1]
    tr, va = split_validation(len(last.texts), cfg.val_fraction, cfg.seed)
    return phases[:-1] + [last.subset(tr)], last.subset(va, "val")


def val_metrics(predictor, val: Phase, label_ids: list[int]) -> dict:
    if not val.texts:
        return {}
    labels, _ = predictor.predict(val.texts)
    m = classification_metrics(val.labels, labels, label_ids)
    return {"val_accuracy": m["accuracy"], "val_f1": m["macro_f1"]}


def _targets(phases: list[Phase], label_ids: list[int], cfg: StudentConfig):
    """Texts, class indexes, soft targets (n x k) and confidence weights over all phases."""
    to_index = {lid: i for i, lid in enumerate(label_ids)}
    texts, y, probs, weights = [], [], [], []
    for p in phases:
        for i, (t, lab) in enumerate(zip(p.texts, p.labels)):
            dist = p.probs[i] if p.probs else None
            row = np.eye(len(label_ids))[to_index[lab]]
            conf = 1.0
            if dist:
                v = np.array([max(float(dist.get(lid, 0.0)), 0.0) for lid in label_ids])
                if v.sum() > 0:
                    v = v / v.sum()
                    conf = float(v.max())
                    if cfg.soft_labels:
                        v = np.maximum(v, 1e-12) ** (1.0 / cfg.distill_temperature)
                        row = v / v.sum()
            texts.append(t)
            y.append(to_index[lab])
            probs.append(row)
            weights.append(conf if cfg.confidence == "weight" else 1.0)
    return texts, np.array(y, dtype=int), np.array(probs), np.array(weights)


def train_linear(
    phases: list[Phase], val: Phase, label_ids: list[int], cfg: StudentConfig, out: Path, kind: str = "linear"
) -> Trained:
    """The floor: TF-IDF + logistic regression on the same examples (soft targets as per-class weights).
    ``kind='distilled_linear'``: the same model on the phases :func:`with_pseudo` made (teacher + pseudo-labels)."""
    from llambert.student.linear import LinearParams, LinearStudent

    t0 = time.perf_counter()
    texts, y, probs, weights = _targets(phases, label_ids, cfg)
    params = LinearParams(
        char_ngrams=(2, 5) if cfg.linear_char_ngrams else None,
        seed=cfg.seed,
        class_weight="balanced" if cfg.class_weight == "balanced" else None,
    )
    model = LinearStudent(label_ids=list(label_ids), params=params).fit(texts, y, probs, weights)
    model.save(out)
    seconds = time.perf_counter() - t0
    metrics = val_metrics(model, val, label_ids) | {"cv_accuracy": model.cv_accuracy, "C": model.C}
    return Trained(
        kind,
        out,
        len(texts),
        len(val.texts),
        metrics,
        seconds,
        train_examples_per_s=len(texts) / seconds if seconds else 0.0,
    )


def build_ensemble(
    members: list[Trained],
    val: Phase,
    label_ids: list[int],
    cfg: StudentConfig,
    out: Path,
    threads: int | None = None,
    route_texts: list[str] | None = None,
) -> Trained:
    """Calibrate each member's temperature and the mixing weight on the validation split; with
    ``route_max_changed`` and unlabeled ``route_texts``, fit the floor's routing threshold on those."""
    from llambert.hardware import resolve_bf16
    from llambert.student.ensemble import EnsembleStudent, fit_ensemble, fit_route, mix, nll
    from llambert.student.predict import load_predictor

    t0 = time.perf_counter()
    preds = [
        load_predictor(
            m.path,
            cfg.infer_max_length,
            cfg.infer_batch_size,
            cfg.truncation,
            bf16=resolve_bf16(cfg.bf16),
            threads=threads,
        )
        for m in members
    ]
    to_index = {lid: i for i, lid in enumerate(label_ids)}
    y = np.array([to_index[v] for v in val.labels], dtype=int)
    val_lp = [p.log_probs(val.texts) for p in preds]
    temps, weights = fit_ensemble(val_lp, y, fit_weights=cfg.ensemble_weights == "fitted")
    floor = next((i for i, m in enumerate(members) if m.kind in LINEAR_KINDS), None)
    threshold, route = 0.0, {}
    if floor is not None and cfg.route_max_changed and route_texts:
        lps = [p.log_probs(route_texts) for p in preds]
        threshold, route = fit_route(lps[floor], mix(lps, temps, weights), cfg.route_max_changed)
    ens = EnsembleStudent(
        list(label_ids),
        [str(m.path) for m in members],
        temps,
        weights,
        preds,
        val_nll=nll(mix(val_lp, temps, weights), y) if len(y) else None,
        route_member=floor if threshold else None,
        route_threshold=threshold,
    )
    ens.save(out)
    metrics = (
        val_metrics(ens, val, label_ids)
        | {
            "temperatures": temps,
            "weights": weights,
            "members": [m.kind for m in members],
        }
        | route
    )
    return Trained("ensemble", out, members[0].n_train, len(val.texts), metrics, time.perf_counter() - t0)


def pseudo_phase(predictor, doc_ids: list[str], texts: list[str], label_ids: list[int]) -> Phase:
    """A trained student's soft labels for unlabeled documents (self-distillation): its argmax as the label,
    its probabilities as the distribution (soft targets under ``soft_labels``, confidence for the weights)."""
    lp = predictor.log_probs(texts) if texts else np.zeros((0, len(label_ids)))
    p = np.exp(lp)
    p = p / p.sum(axis=1, keepdims=True) if len(p) else p
    return Phase(
        "distilled",
        list(texts),
        [label_ids[i] for i in p.argmax(axis=1)] if len(p) else [],
        list(doc_ids),
        probs=[{lid: float(v) for lid, v in zip(label_ids, row)} for row in p],
    )


def with_pseudo(train_phases: list[Phase], pseudo: Phase) -> list[Phase]:
    """The pseudo-labeled documents join the first (LLM) phase: one stretch of training, shuffled together,
    as measured (benchmarks/quality_distill.py); a 'combined' recipe still ends on its gold phase."""
    first = train_phases[0]
    n = len(first.texts)
    merged = Phase(
        first.name,
        first.texts + pseudo.texts,
        first.labels + pseudo.labels,
        first.doc_ids + pseudo.doc_ids,
        (first.probs or [None] * n) + pseudo.probs,
        (first.weights + [1.0] * len(pseudo.texts)) if first.weights else None,
    )
    return [merged, *train_phases[1:]]
