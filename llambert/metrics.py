"""Classification metrics without scikit-learn: accuracy, macro-F1, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int]) -> list[list[int]]:
    """Rows are true labels, columns predicted, both in the order of ``labels``."""
    index = {l: i for i, l in enumerate(labels)}
    m = [[0] * len(labels) for _ in labels]
    for t, p in zip(y_true, y_pred):
        if t in index and p in index:
            m[index[t]][index[p]] += 1
    return m


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int]) -> dict:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    n = len(y_true)
    cm = confusion_matrix(y_true, y_pred, labels)
    f1s = []
    for i in range(len(labels)):
        tp = cm[i][i]
        fp = sum(cm[r][i] for r in range(len(labels))) - tp
        fn = sum(cm[i]) - tp
        f1s.append(0.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    correct = sum(1 for t, p in zip(y_true, y_pred) if t == p)
    return {
        "n": n,
        "accuracy": correct / n if n else float("nan"),
        "macro_f1": sum(f1s) / len(f1s) if f1s else float("nan"),
        "per_label_f1": dict(zip(labels, f1s)),
        "confusion": cm,
    }


def min_share_ratio(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int]) -> float:
    """The smallest (predicted share / true share) over the classes the truth holds: near 0 when a model
    (almost) never predicts one of them, i.e. it collapsed.

    Counts are add-one smoothed, (predicted + 1) / (true + 1): on a large judge set this is the plain
    share ratio, but on a 10-document probe one missed document no longer reads as a collapse (1 of 5
    predicted scores 0.33, not 0.20), while never predicting a class still scores 1 / (true + 1).
    """
    ratios = [(list(y_pred).count(l) + 1) / (list(y_true).count(l) + 1) for l in labels if l in y_true]
    if not ratios:
        raise ValueError("min_share_ratio needs at least one true label among the classes")
    return min(ratios)
