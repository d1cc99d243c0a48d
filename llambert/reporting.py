"""Small renderers for what people look at: markdown tables and the end-of-run summary."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl


def markdown_table(frame: pl.DataFrame, max_rows: int = 10, max_chars: int = 80) -> str:
    """A markdown table of the first rows, long cells cut, pipes escaped (no tabulate needed)."""
    head = frame.head(max_rows)

    def cell(v) -> str:
        s = "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))
        s = s.replace("\n", " ").replace("|", "\\|")
        return s if len(s) <= max_chars else s[: max_chars - 1] + "…"

    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in head.iter_rows()]
    if frame.height > max_rows:
        lines.append(f"\n… {frame.height - max_rows} more rows")
    return "\n".join(lines)


def dict_table(d: dict, key: str = "key", value: str = "value") -> str:
    return markdown_table(pl.DataFrame({key: [str(k) for k in d], value: [str(v) for v in d.values()]}), max_rows=50)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


RECALL_PREFIX = "recall_vs_gold_"


def teacher_recall(report: pl.DataFrame) -> list[tuple[str, float | None, int]]:
    """The teacher's recall per gold class on the gold probe, from evaluation.report's
    ``teacher / recall_vs_gold_<label>`` rows: (label, recall or None without gold of it, gold documents)."""
    rows = report.filter((pl.col("subject") == "teacher") & pl.col("metric").str.starts_with(RECALL_PREFIX))
    return [
        (m[len(RECALL_PREFIX) :], v, int(n or 0))
        for m, v, n in rows.select("metric", "value", "n").sort("metric").iter_rows()
    ]


def recall_text(recall: Sequence[tuple[str, float | None, int]]) -> str:
    """E.g. 'negative: 81.3% (of 150), positive: 97.9% (of 145)'; '-' when no sampled document has gold."""
    if not any(n for _, _, n in recall):
        return "-"
    return ", ".join(f"{label}: {'-' if v is None else f'{100 * v:.1f}%'} (of {n:,})" for label, v, n in recall)


def summary_lines(
    report: pl.DataFrame,
    warehouse: str,
    stages: Sequence[tuple[str, int | None, float]],
    candidates: pl.DataFrame | None = None,
) -> list[str]:
    from llambert.pipeline import report_value

    r = lambda s, m: report_value(report, s, m)  # noqa: E731
    n = lambda s, m: (report.filter((pl.col("subject") == s) & (pl.col("metric") == m))["n"].to_list() or [None])[0]  # noqa: E731
    lines = [
        "",
        "llambert run summary",
        "====================",
        f"teacher accuracy on gold        {pct(r('teacher', 'accuracy_vs_gold'))}  (n={n('teacher', 'accuracy_vs_gold')} sampled docs with gold)",
        f"teacher recall per gold class   {recall_text(teacher_recall(report))}",
        f"teacher discard rate            {pct(r('teacher', 'discard_rate'))}",
        f"student accuracy on test split  {pct(r('student', 'accuracy_vs_gold'))}  (n={n('student', 'accuracy_vs_gold')})",
        f"student macro-F1 on test split  {pct(r('student', 'macro_f1_vs_gold'))}",
        f"teacher-student agreement       {pct(r('student', 'agreement_with_teacher'))}",
        f"documents labeled               {int(r('corpus', 'documents_labeled') or 0):,} of {int(r('corpus', 'documents') or 0):,}",
    ]
    llm_h, ours_h = r("projection", "llm_only_hours"), r("projection", "llambert_hours")
    if llm_h and ours_h:
        lines.append(
            f"whole corpus, LLM alone         {llm_h:,.2f} h; with LlamBERT {ours_h:,.2f} h ({llm_h / ours_h:,.0f}x less)"
            "  (at this run's prompts/s and docs/s)"
        )
    if candidates is not None and candidates.height:
        lines += [
            "",
            f'students of this run, judged on {candidates["judge"][0]} (README "Students": the champion rule)',
            "   kind       accuracy  macro-F1    docs/s  verdict",
        ]
        for c in candidates.iter_rows(named=True):
            mark = "*" if c["champion"] else " "
            rate = "-" if c["docs_per_s"] is None else f"{c['docs_per_s']:,.0f}"
            lines.append(f" {mark} {c['kind']:<9} {pct(c['accuracy']):>9} {pct(c['f1']):>9} {rate:>9}  {c['verdict']}")
        lines.append("   (* the champion: its labels are the product; the linear row is the floor)")
    lines += [
        "",
        "stage          rows        wall time",
    ]
    for stage, rows, secs in stages:
        lines.append(f"{stage:<14} {'' if rows is None else format(rows, ','):>10}  {format_duration(secs):>10}")
    lines += [
        "",
        f"warehouse: {warehouse}",
        'try:  llambert sql "SELECT label, count(*) FROM predictions.labels GROUP BY label"',
        f'  or: duckdb -readonly {warehouse} "FROM evaluation.report"',
    ]
    return lines
