"""What a teacher run cost, and what labeling the whole corpus would cost with and without LlamBERT."""

from __future__ import annotations

import duckdb

from llambert.config import Settings
from llambert.tasks import Task
from llambert.warehouse import run_model, write_task_labels


def project_costs(con: duckdb.DuckDBPyConnection, settings: Settings, task: Task, run_id: str) -> dict:
    """Append this run's row to labeling.cost_projection (parsing the answers first) and return it.

    The discard rate comes from the task's parser (sql/labeling/answer_matches.sql) over the
    sample's answers, so it is the rate the student's training data will see.
    """
    write_task_labels(con, task)
    run_model(con, "labeling.answer_matches")
    t = settings.teacher
    run_model(
        con,
        "labeling.cost_projection",
        {
            "run_id": run_id,
            "price_in_per_1m": float(t.price_per_1m_input_tokens),
            "price_out_per_1m": float(t.price_per_1m_output_tokens),
        },
    )
    frame = con.execute("SELECT * FROM labeling.cost_projection WHERE run_id = ?", [run_id]).pl()
    return frame.row(0, named=True) if frame.height else {}


def projection_markdown(row: dict) -> str:
    """A small table for asset metadata: LLM alone versus LlamBERT over the whole corpus."""

    def fmt(v, unit=""):
        return "n/a" if v is None else (f"{v:,.2f}{unit}" if isinstance(v, float) else f"{v:,}{unit}")

    money = bool(row.get("price_in_per_1m") or row.get("price_out_per_1m"))
    lines = [
        "| | LLM alone | LlamBERT |",
        "|---|---|---|",
        f"| documents the LLM reads | {fmt(row.get('corpus_docs'))} | {fmt(row.get('sample_docs'))} |",
        f"| hours | {fmt(row.get('llm_only_hours'))} | {fmt(row.get('llambert_hours'))} |",
    ]
    if money:
        lines.append(f"| LLM cost | {fmt(row.get('llm_only_cost'))} | {fmt(row.get('llambert_llm_cost'))} |")
    lines.append("")
    lines.append(
        f"LLM {fmt(row.get('prompts_per_s'))} prompts/s (throughput from run {row.get('throughput_from_run')}); "
        f"student {fmt(row.get('student_docs_per_s'))} docs/s (n/a until predictions ran); "
        f"discard rate {fmt(row.get('discard_rate'))}."
    )
    return "\n".join(lines)
