"""Small PNG charts for Dagster materialization metadata, as markdown images.

Each function returns a markdown string holding a base64 PNG (``![alt](data:image/png;base64,...)``)
so that the Dagster UI shows the chart inline. matplotlib is imported inside the functions
(Agg backend) so that loading the code location stays fast; figures are small (~10-25 KB).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

COLORS = ["#4F43DD", "#E0A030", "#2BA673", "#D44E6A", "#6E8CA8", "#9B5DE5"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def figure_markdown(fig: Any, alt: str, dpi: int = 90) -> str:
    """Render a matplotlib figure to a markdown image with an inline base64 PNG, and close it."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{data})"


def bar_chart(
    counts: Mapping[str, float], title: str, xlabel: str = "", ylabel: str = "rows", show_share: bool = True
) -> str:
    """Vertical bars, one per key, each labeled with its count (and share of the total)."""
    plt = _pyplot()
    keys = [str(k) for k in counts]
    values = [float(v or 0) for v in counts.values()]
    total = sum(values)
    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    bars = ax.bar(keys, values, color=[COLORS[i % len(COLORS)] for i in range(len(keys))])
    for bar, v in zip(bars, values):
        text = f"{v:,.0f}" + (f"\n{v / total:.0%}" if show_share and total else "")
        ax.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, max(values + [1]) * 1.3)
    ax.spines[["top", "right"]].set_visible(False)
    return figure_markdown(fig, title)


def confusion_matrices(
    matrices: Mapping[str, Sequence[Sequence[int]]], labels: Sequence[str], title: str = "confusion matrix"
) -> str:
    """One heat-mapped confusion matrix per subject (rows: gold, columns: predicted), side by side."""
    plt = _pyplot()
    n = max(len(matrices), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.3 * n, 3.0), squeeze=False)
    for ax, (who, m) in zip(axes[0], matrices.items()):
        total = sum(sum(r) for r in m)
        correct = sum(m[i][i] for i in range(min(len(m), len(labels))))
        ax.imshow(m, cmap="Blues", vmin=0)
        for i, row in enumerate(m):
            for j, v in enumerate(row):
                hi = v > 0.6 * max(max(r) for r in m)
                ax.text(j, i, f"{v:,}", ha="center", va="center", fontsize=9, color="white" if hi else "black")
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        acc = f"accuracy {correct / total:.1%}, n={total}" if total else "no documents with gold"
        ax.set_title(f"{who}\n{acc}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return figure_markdown(fig, title)


def training_curve(
    epochs: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    accuracy: Mapping[str, Sequence[float | None]] | None = None,
    title: str = "student training",
) -> str:
    """Loss curves on the left axis, accuracy/F1 curves on a right axis (0-1), per epoch."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    for i, (name, ys) in enumerate(series.items()):
        pts = [(x, y) for x, y in zip(epochs, ys) if y is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", color=COLORS[i % len(COLORS)], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.spines[["top"]].set_visible(False)
    handles, names = ax.get_legend_handles_labels()
    if accuracy:
        ax2 = ax.twinx()
        for i, (name, ys) in enumerate(accuracy.items(), start=len(series)):
            pts = [(x, y) for x, y in zip(epochs, ys) if y is not None]
            if pts:
                ax2.plot(*zip(*pts), marker="s", linestyle="--", color=COLORS[i % len(COLORS)], label=name)
        ax2.set_ylim(0, 1.05)
        ax2.set_ylabel("accuracy / F1")
        h2, n2 = ax2.get_legend_handles_labels()
        handles, names = handles + h2, names + n2
    if handles:
        ax.legend(handles, names, fontsize=8, loc="best")
    ax.set_xticks(list(epochs))
    ax.set_title(title, fontsize=10)
    return figure_markdown(fig, title)


def stage_times(stages: Sequence[tuple[str, float, float]], title: str = "time per stage (latest run)") -> str:
    """Horizontal bars of seconds per stage, each labeled with rows and rows/s.

    ``stages``: (stage, rows, seconds) in pipeline order.
    """
    plt = _pyplot()
    names = [s for s, _, _ in stages]
    secs = [float(t or 0) for _, _, t in stages]
    fig, ax = plt.subplots(figsize=(5.6, 0.45 * len(stages) + 1.0))
    y = list(range(len(stages)))[::-1]
    ax.barh(y, secs, color=[COLORS[i % len(COLORS)] for i in range(len(stages))])
    ax.set_yticks(y, names, fontsize=9)
    top = max(secs + [1e-9])
    for yi, (_, rows, t) in zip(y, stages):
        rate = f", {rows / t:,.1f}/s" if t and rows else ""
        ax.text((t or 0) + top * 0.01, yi, f"{t or 0:.1f}s  {int(rows or 0):,} rows{rate}", va="center", fontsize=8)
    ax.set_xlim(0, top * 1.6)
    ax.set_xlabel("seconds")
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return figure_markdown(fig, title)
