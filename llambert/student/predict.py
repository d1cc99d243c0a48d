"""Labeling documents with a fine-tuned student: bf16 weights where the hardware has bf16 (else fp32), inference mode, length-sorted
batches with dynamic padding. Callers feed chunks, so memory stays flat at any corpus size.
"""

from __future__ import annotations

import polars as pl
import torch

from llambert.hardware import resolve_bf16
from llambert.student.encoding import encode, pad_batch, sorted_batches


class StudentPredictor:
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

    def predict(self, texts: list[str]) -> tuple[list[int], list[float]]:
        """Task label ids and their probabilities, in input order."""
        ids = encode(self.tokenizer, texts, self.max_length, self.truncation)
        labels = [0] * len(ids)
        probs = [0.0] * len(ids)
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for batch in sorted_batches([len(x) for x in ids], self.batch_size):
                logits = self.model(**pad_batch([ids[i] for i in batch], pad)).logits.float()
                top = logits.softmax(-1).max(-1)
                for j, i in enumerate(batch):
                    labels[i] = self.label_ids[int(top.indices[j])]
                    probs[i] = float(top.values[j])
        return labels, probs

    def predict_frame(self, frame: pl.DataFrame) -> pl.DataFrame:
        """(doc_id, text) -> (doc_id, label, probability)."""
        labels, probs = self.predict(frame["text"].to_list())
        return pl.DataFrame(
            {"doc_id": frame["doc_id"], "label": labels, "probability": probs},
            schema={"doc_id": pl.Utf8, "label": pl.Int64, "probability": pl.Float64},
        )
