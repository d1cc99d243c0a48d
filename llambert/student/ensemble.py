"""The ensemble student: a weighted average of temperature-calibrated member probabilities.

A fine-tuned encoder and the TF-IDF floor make different mistakes (the encoder reads word order,
the linear model counts every word of a long review), so their average beats both (IMDb, 1,000
labels: docs/bench_quality.md). Temperatures (and, with ``student.ensemble_weights: fitted``, the weight) are
fitted on the validation split (the held-out teacher labels), never on test or on the gold probe, which stays the
judge; by default the calibrated members are averaged with equal weights.
The folder holds only ``ensemble.json``: its members are the sibling checkpoint folders.

**Routing** (``student.route_max_changed``): the floor is thousands of times cheaper than the encoder and,
where it is sure, as right as the ensemble (IMDb, 1,000 random LLM labels: 47.8% of the test reviews routed
at threshold 0.7, accuracy 89.00% -> 89.05%; `python -m benchmarks.quality routing`). So the floor runs first on every
document and the encoder only on the rest; a routed document gets the floor's calibrated distribution.
How sure is sure depends on the floor's training (trained on uncertainty-sampled documents it is far less
confident on ordinary ones), so the threshold is fitted per ensemble on unlabeled documents: :func:`fit_route`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llambert.student.base import Predicts

MANIFEST = "ensemble.json"
TEMPERATURES = tuple(float(t) for t in np.geomspace(0.25, 8.0, 21))
WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 21))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(log_probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of class indexes ``y``."""
    return float(-log_probs[np.arange(len(y)), y].mean()) if len(y) else 0.0


def fit_temperature(log_probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature (on a log grid) that minimises validation NLL; 1.0 without validation data."""
    if len(y) == 0:
        return 1.0
    return min(TEMPERATURES, key=lambda t: (nll(_log_softmax(log_probs / t), y), abs(np.log(t))))


def mix(member_log_probs: list[np.ndarray], temperatures: list[float], weights: list[float]) -> np.ndarray:
    """log of sum_i w_i softmax(log p_i / T_i)."""
    p = sum(w * np.exp(_log_softmax(lp / t)) for lp, t, w in zip(member_log_probs, temperatures, weights))
    return np.log(np.maximum(p, 1e-12))


# The validation split of a few hundred labels is 25-100 documents: the weight that minimises NLL
# there is often 0 or 1 by chance. It is shrunk toward equal weights as w = 0.5 + (w* - 0.5) * n / (n + SHRINK_N),
# so a member is dropped only when many documents say so (equal weights: +1.7 points over MiniLM
# alone on IMDb at 1,000 gold labels, the students issue's measurement).
SHRINK_N = 200


def fit_ensemble(
    member_log_probs: list[np.ndarray], y: np.ndarray, fit_weights: bool = True
) -> tuple[list[float], list[float]]:
    """Temperatures per member, then (``fit_weights``) the two-member weight on a grid, both by validation NLL,
    the weight shrunk toward 1/2 by the validation size (ties and no data: equal weights).

    ``fit_weights=False`` (``student.ensemble_weights: equal``, the default) keeps equal weights over the
    calibrated members: a weight fitted on the 100 validation labels of a 1,000-label run over-trusted the
    encoder (0.67), and equal weights scored higher on unseen test reviews (README "Students")."""
    temps = [fit_temperature(lp, y) for lp in member_log_probs]
    if not fit_weights or len(member_log_probs) != 2 or len(y) == 0:
        n = len(member_log_probs)
        return temps, [1.0 / n] * n
    best = min(WEIGHTS, key=lambda w: (round(nll(mix(member_log_probs, temps, [w, 1 - w]), y), 6), abs(w - 0.5)))
    w = round(0.5 + (best - 0.5) * len(y) / (len(y) + SHRINK_N), 4)
    return temps, [w, 1.0 - w]


ROUTE_GRID = (0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def fit_route(floor_log_probs: np.ndarray, full_log_probs: np.ndarray, max_changed: float) -> tuple[float, dict]:
    """The lowest threshold on the floor's top probability at which routing changes at most ``max_changed`` of
    all labels against the full ensemble (documents routed to the floor where the two disagree), with at least
    20 documents and 2% routed. Accuracy cannot move by more than the labels it changes. No labels needed: the
    ensemble is the reference. Returns (threshold, figures); 0.0 when no threshold qualifies."""
    top = np.exp(floor_log_probs).max(axis=1)
    same = floor_log_probs.argmax(axis=1) == full_log_probs.argmax(axis=1)
    n = len(top)
    for t in ROUTE_GRID:
        take = top >= t
        k = int(take.sum())
        changed = float((take & ~same).mean()) if n else 1.0
        if k >= max(20, 0.02 * n) and changed <= max_changed:
            return t, {"route_threshold": t, "route_share": k / n, "route_changed": changed, "route_n": n}
    return 0.0, {"route_threshold": 0.0, "route_share": 0.0, "route_changed": None, "route_n": n}


@dataclass
class EnsembleStudent(Predicts):
    """Members are student folders (any kind but ensemble) predicting over the same label ids."""

    label_ids: list[int]
    member_paths: list[str]
    temperatures: list[float]
    weights: list[float]
    members: list = field(default_factory=list)
    val_nll: float | None = None
    # Routing: documents on which member ``route_member`` (the linear floor) has a top probability of at
    # least ``route_threshold`` are labeled by it alone; 0 or no route member: every member on every document.
    route_member: int | None = None
    route_threshold: float = 0.0
    routed: int = 0  # documents labeled by the floor alone so far (for progress and stage details)
    seen: int = 0

    def log_probs(self, texts: list[str]) -> np.ndarray:
        r = self.route_member
        self.seen += len(texts)
        if r is None or not self.route_threshold or not texts:
            return mix([m.log_probs(texts) for m in self.members], self.temperatures, self.weights)
        first = self.members[r].log_probs(texts)
        sure = np.exp(first).max(axis=1) >= self.route_threshold
        self.routed += int(sure.sum())
        out = np.empty_like(first)
        out[sure] = _log_softmax(first[sure] / self.temperatures[r])
        rest = np.flatnonzero(~sure)
        if len(rest):
            sub = [texts[i] for i in rest]
            lps = [first[rest] if j == r else m.log_probs(sub) for j, m in enumerate(self.members)]
            out[rest] = mix(lps, self.temperatures, self.weights)
        return out

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MANIFEST).write_text(
            json.dumps(
                {
                    "kind": "ensemble",
                    "label_ids": self.label_ids,
                    "members": self.member_paths,
                    "temperatures": self.temperatures,
                    "weights": self.weights,
                    "val_nll": self.val_nll,
                    "route": {"member": self.route_member, "threshold": self.route_threshold},
                },
                indent=1,
            )
        )

    @classmethod
    def load(
        cls,
        folder: Path,
        max_length: int = 256,
        batch_size: int = 16,
        truncation: str = "head",
        bf16: bool | str = "auto",
        threads: int | None = None,
        *,
        load_member,
    ) -> EnsembleStudent:
        """``load_member(path, max_length, batch_size, truncation, bf16, threads)`` opens a member folder
        (:func:`llambert.student.predict.load_predictor`, which passes itself: this module stays below it)."""
        meta = json.loads((folder / MANIFEST).read_text())
        missing = [p for p in meta["members"] if not Path(p).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"ensemble {folder} needs member folders that are gone: {missing}; "
                "retrain (llambert run) or restore them"
            )
        members = [load_member(p, max_length, batch_size, truncation, bf16, threads) for p in meta["members"]]
        for p, m in zip(meta["members"], members):
            if list(m.label_ids) != list(meta["label_ids"]):
                raise ValueError(f"ensemble member {p} predicts labels {m.label_ids}, the ensemble {meta['label_ids']}")
        route = meta.get("route") or {}  # ensembles saved before routing existed: no routing
        return cls(
            list(meta["label_ids"]),
            list(meta["members"]),
            list(meta["temperatures"]),
            list(meta["weights"]),
            members,
            meta.get("val_nll"),
            route.get("member"),
            float(route.get("threshold") or 0.0),
        )
