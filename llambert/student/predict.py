"""Labeling documents with a student: bf16 weights where the hardware has bf16 (else fp32), inference mode, length-sorted
batches with dynamic padding. Callers feed chunks, so memory stays flat at any corpus size.

Every student kind (fine-tuned encoder, linear floor, ensemble) answers the same two calls:
``log_probs(texts)`` (n x k, columns in the task's label-id order) and ``predict(texts)``;
:func:`load_predictor` opens any of them from its folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from llambert.hardware import resolve_bf16
from llambert.student.base import Predicts, predict_frame, top_labels  # noqa: F401 (re-exported)
from llambert.student.encoding import encode, pad_batch, sorted_batches
from llambert.student.ensemble import MANIFEST as ENSEMBLE
from llambert.student.ensemble import EnsembleStudent
from llambert.student.linear import MANIFEST as LINEAR
from llambert.student.linear import LinearStudent


class StudentPredictor(Predicts):
    def __init__(
        self,
        path: str,
        max_length: int = 256,
        batch_size: int = 64,
        truncation: str = "head",
        bf16: bool | str = "auto",
        threads: int | None = None,
    ) -> None:
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


def student_kind(path: str | Path) -> str:
    """'linear', 'ensemble' or 'encoder' (a Hugging Face folder), from the files in the folder."""
    folder = Path(path)
    if (folder / LINEAR).exists():
        return "linear"
    if (folder / ENSEMBLE).exists():
        return "ensemble"
    return "encoder"


def load_predictor(
    path: str | Path,
    max_length: int = 256,
    batch_size: int = 16,
    truncation: str = "head",
    bf16: bool | str = "auto",
    threads: int | None = None,
):
    """Any student folder as a predictor with ``log_probs``/``predict``/``predict_frame``."""
    kind = student_kind(path)
    if kind == "linear":
        return LinearStudent.load(Path(path))
    if kind == "ensemble":
        return EnsembleStudent.load(
            Path(path), max_length, batch_size, truncation, bf16, threads, load_member=load_predictor
        )
    return StudentPredictor(str(path), max_length, batch_size, truncation, bf16=bf16, threads=threads)
