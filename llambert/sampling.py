"""Which documents the teacher labels next (``sample.strategy: uncertainty``).

A random sample spends most LLM calls on documents any student already gets right. Active
selection labels a random seed round, fits the linear floor on the teacher's labels so far (it
trains in seconds), rescores a seeded slice of the unlabeled pool, and sends the teacher the
documents the floor is least sure of (the smallest margin between its two most probable classes),
mixed with random picks so the sample still covers the pool and its label balance stays honest.

Everything here is deterministic given the labels: rounds of a fixed size, each a prefix of one
ordering, so growing ``sample.size`` re-derives the same earlier rounds and the teacher's answers
for them come from the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

PICKS_SCHEMA = {"doc_id": pl.Utf8, "picked_by": pl.Utf8, "student_margin": pl.Float64, "pick_order": pl.Int64}


@dataclass(frozen=True)
class RoundPlan:
    """How many documents the next round sends the teacher, and why.

    ``full_uncertain``/``full_random`` are a whole round's counts: a partial last round takes a
    prefix of each of the whole round's two lists, so a larger budget keeps its documents.
    """

    round: int
    n_uncertain: int
    n_random: int
    full_uncertain: int | None = None
    full_random: int | None = None

    @property
    def size(self) -> int:
        return self.n_uncertain + self.n_random


def seed_size(size: int, strategy: str, round_size: int) -> int:
    """Documents of round 0: the whole sample for ``random``, one round for ``uncertainty``."""
    return size if strategy == "random" else min(size, round_size)


def plan_round(round_no: int, n_sampled: int, size: int, round_size: int, random_share: float) -> RoundPlan | None:
    """The next round's plan, or None when the sample is full."""
    n = min(round_size, size - n_sampled)
    if n <= 0:
        return None
    full_random = int(round(round_size * random_share))
    full_uncertain = round_size - full_random
    n_uncertain = min(full_uncertain, n - min(full_random, int(round(n * random_share))))
    return RoundPlan(round_no, n_uncertain, n - n_uncertain, full_uncertain, full_random)


def margins(log_probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 class probability per row (0: a coin flip; 1: certain)."""
    p = np.exp(log_probs)
    p = p / p.sum(axis=1, keepdims=True)
    if p.shape[1] < 2:
        return np.ones(p.shape[0])
    top2 = np.sort(p, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def fit_scorer(texts: list[str], label_ids: list[int], labels: list[int], seed: int = 0):
    """The linear floor on the labels so far (a smaller C grid than the student's: it only ranks)."""
    from llambert.student.linear import LinearParams, LinearStudent

    index = {lab: i for i, lab in enumerate(label_ids)}
    y = np.array([index[v] for v in labels], dtype=int)
    params = LinearParams(c_grid=(1.0, 4.0), folds=3, seed=seed)
    return LinearStudent(label_ids=list(label_ids), params=params).fit(texts, y)


def pick_round(candidates: pl.DataFrame, scores: np.ndarray, plan: RoundPlan) -> pl.DataFrame:
    """The round's picks from ``candidates`` (doc_id, in the pool's seeded order) and their margins.

    The ``n_uncertain`` smallest margins first (ties in pool order), then the first ``n_random``
    of the rest in pool order. Returns doc_id, picked_by, student_margin, pick_order.
    """
    c = candidates.select("doc_id").with_columns(
        student_margin=pl.Series(scores, dtype=pl.Float64), pool_pos=pl.int_range(pl.len(), dtype=pl.Int64)
    )
    full_u = plan.n_uncertain if plan.full_uncertain is None else max(plan.full_uncertain, plan.n_uncertain)
    whole = c.sort(["student_margin", "pool_pos"]).head(full_u)  # the whole round's list of doubts
    unsure = whole.head(plan.n_uncertain).with_columns(picked_by=pl.lit("uncertainty"))
    rest = c.join(whole.select("doc_id"), on="doc_id", how="anti").sort("pool_pos").head(plan.n_random)
    rand = rest.with_columns(picked_by=pl.lit("random"))
    picks = pl.concat([unsure, rand]).with_columns(pick_order=pl.int_range(pl.len(), dtype=pl.Int64))
    return picks.select(list(PICKS_SCHEMA)).cast(PICKS_SCHEMA)


def next_round(
    labeled_texts: list[str],
    labels: list[int],
    label_ids: list[int],
    candidates: pl.DataFrame,
    plan: RoundPlan,
    seed: int = 0,
) -> pl.DataFrame:
    """Fit the floor on the labels so far, score ``candidates`` (doc_id, text), pick the round."""
    if candidates.is_empty() or plan.size == 0:
        return pl.DataFrame(schema=PICKS_SCHEMA)
    scorer = fit_scorer(labeled_texts, label_ids, labels, seed)
    return pick_round(candidates, margins(scorer.log_probs(candidates["text"].to_list())), plan)
