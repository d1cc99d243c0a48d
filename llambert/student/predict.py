"""Labeling documents with a student: bf16 weights where the hardware has bf16 (else fp32), inference mode, length-sorted
batches with dynamic padding. Callers feed chunks, so memory stays flat at any corpus size.

Every student kind (fine-tuned encoder, linear floor, ensemble) answers the same two calls:
``log_probs(texts)`` (n x k, columns in the task's label-id order) and ``predict(texts)``;
:func:`load_predictor` opens any of them from its folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from llambert.hardware import resolve_bf16
from llambert.student.encoding import encode, pad_batch, sorted_batches


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


class StudentPredictor(Predicts):
    def __init__(self, path: str, max_length: int = 256, batch_size: int = 64, truncation: str = "head",
                 bf16: bool | str = "auto", threads: int | None = None) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=torch.bfloat16 if resolve_bf16(bf16) else torch.float32
        )
        self.model.eval()
        cfg = self.model.config
        n = cfg.num_labels
        self.label_ids: list[int] = list(getattr(cfg, "llambert_label_ids", None) or range(n))
        self.max_length = max_length
        self.batch_size = batch_size
        self.truncation = truncation

    def log_probs(self, texts: list[str]) -> np.ndarray:
        """Per-class log-probabilities, n x k, in input order."""
        ids = encode(self.tokenizer, texts, self.max_length, self.truncation)
        out = np.zeros((len(ids), len(self.label_ids)))
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for batch in sorted_batches([len(x) for x in ids], self.batch_size):
                logits = self.model(**pad_batch([ids[i] for i in batch], pad)).logits.float()
                out[batch] = torch.log_softmax(logits, -1).numpy()
        return out



def top_labels(log_probs: np.ndarray, label_ids: list[int]) -> tuple[list[int], list[float]]:
    """Argmax label ids and their probabilities (ties: the first label, as torch.max does)."""
    if len(log_probs) == 0:
        return [], []
    top = log_probs.argmax(axis=1)
    return [label_ids[i] for i in top], [float(np.exp(log_probs[j, i])) for j, i in enumerate(top)]


def student_kind(path: str | Path) -> str:
    """'linear', 'ensemble' or 'encoder' (a Hugging Face folder), from the files in the folder."""
    from llambert.student.ensemble import MANIFEST as ENSEMBLE
    from llambert.student.linear import MANIFEST as LINEAR

    folder = Path(path)
    if (folder / LINEAR).exists():
        return "linear"
    if (folder / ENSEMBLE).exists():
        return "ensemble"
    return "encoder"


def load_predictor(path: str | Path, max_length: int = 256, batch_size: int = 16, truncation: str = "head",
                   bf16: bool | str = "auto", threads: int | None = None):
    """Any student folder as a predictor with ``log_probs``/``predict``/``predict_frame``."""
    kind = student_kind(path)
    if kind == "linear":
        from llambert.student.linear import LinearStudent

        return LinearStudent.load(Path(path))
    if kind == "ensemble":
        from llambert.student.ensemble import EnsembleStudent

        return EnsembleStudent.load(Path(path), max_length, batch_size, truncation, bf16, threads)
    return StudentPredictor(str(path), max_length, batch_size, truncation, bf16=bf16, threads=threads)


def predict_frame(predictor, frame: pl.DataFrame) -> pl.DataFrame:
    """(doc_id, text) -> (doc_id, label, probability) with any predictor."""
    labels, probs = predictor.predict(frame["text"].to_list())
    return pl.DataFrame(
        {"doc_id": frame["doc_id"], "label": labels, "probability": probs},
        schema={"doc_id": pl.Utf8, "label": pl.Int64, "probability": pl.Float64},
    )
