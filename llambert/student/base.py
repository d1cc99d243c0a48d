"""What every student kind answers: ``log_probs(texts)`` and, from it, ``predict`` and ``predict_frame``.

The floor of :mod:`llambert.student`: the encoder (:mod:`~llambert.student.predict`), the linear floor and
the ensemble all build on it, and it imports none of them.
"""

from __future__ import annotations

import numpy as np
import polars as pl


class Predicts:
    """``predict`` and ``predict_frame`` for any student that has ``log_probs`` and ``label_ids``."""

    label_ids: list[int]

    def log_probs(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def predict(self, texts: list[str]) -> tuple[list[int], list[float]]:
        """Task label ids and their probabilities, in input order."""
        return top_labels(self.log_probs(texts), self.label_ids)

    def predict_frame(self, frame: pl.DataFrame) -> pl.DataFrame:
        """(doc_id, text) -> (doc_id, label, probability)."""
        return predict_frame(self, frame)


def top_labels(log_probs: np.ndarray, label_ids: list[int]) -> tuple[list[int], list[float]]:
    """Argmax label ids and their probabilities (ties: the first label, as torch.max does)."""
    if len(log_probs) == 0:
        return [], []
    top = log_probs.argmax(axis=1)
    return [label_ids[i] for i in top], [float(np.exp(log_probs[j, i])) for j, i in enumerate(top)]


def predict_frame(predictor, frame: pl.DataFrame) -> pl.DataFrame:
    """(doc_id, text) -> (doc_id, label, probability) with any predictor."""
    labels, probs = predictor.predict(frame["text"].to_list())
    return pl.DataFrame(
        {"doc_id": frame["doc_id"], "label": labels, "probability": probs},
        schema={"doc_id": pl.Utf8, "label": pl.Int64, "probability": pl.Float64},
    )
