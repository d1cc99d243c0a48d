"""evaluation.report: teacher and student quality, agreement, discard rate, time per stage."""

import dagster as dg

from dagster_project.resources import LlambertResource
from llambert import pipeline
from llambert.reporting import markdown_table, recall_text, teacher_recall

REPORT = dg.AssetKey(["evaluation", "report"])
# Bookkeeping tables that several steps write. Dagster defines each asset key in exactly one asset definition
# (a key in two definitions is an error), and an asset's materialization is the event of the one step that
# produced it; so each of these is one asset, declared as a spec of the step that closes a run and writes or
# reads them last (the report: it rewrites labeling.task_labels, reads ops.stage_runs, and its check is the last
# to store ops.contract_results). Their deps name every step that also writes them, so lineage shows all writers.
_STEP_KEYS = [
    ["raw", "corpus"],
    ["labeling", "sample"],
    ["labeling", "llm_responses"],
    ["labeling", "parsed_labels"],
    ["students", "checkpoints"],
    ["predictions", "labels"],
    ["labeling", "audit_labels"],
]
BOOKKEEPING = {
    ("labeling", "task_labels"): (
        "The task's labels and the words that name them (the answer parser's vocabulary) with the match rule; "
        "rebuilt from the task file by the teacher, parse, audit and report steps.",
        [["labeling", "llm_responses"], ["labeling", "parsed_labels"], ["labeling", "audit_labels"]],
    ),
    ("ops", "stage_runs"): (
        "Seconds and rows of each stage of each run (ingest, sample, teacher, parse, train, "
        "predict, audit), for the report and the cost views.",
        _STEP_KEYS,
    ),
    ("ops", "contract_results"): (
        "Every evaluation of a data contract (asset checks of every step), one row "
        "per contract per table (and batch) per check run, with failing examples.",
        _STEP_KEYS,
    ),
}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            REPORT,
            deps=[
                dg.AssetKey(["predictions", "labels"]),
                dg.AssetKey(["labeling", "parsed_labels"]),
                dg.AssetKey(["students", "champion"]),
            ],
            group_name="quality",
            kinds={"duckdb", "sql"},
            code_version="2",
            description="Accuracy and macro-F1 of the teacher (against gold where the sample has it, with its recall "
            "per gold class: a teacher that leans one way shows there) and of the student "
            "(on the evaluation split), their agreement, the discard rate, and rows and seconds per stage.",
        ),
        *(
            dg.AssetSpec(
                list(key), deps=deps, group_name="ops", kinds={"duckdb", "sql"}, code_version="1", description=text
            )
            for key, (text, deps) in BOOKKEEPING.items()
        ),
    ],
)
def report(llambert: LlambertResource):
    with llambert.warehouse() as con:
        frame = pipeline.build_report(con, llambert.settings())
        visuals = _visuals(con, llambert)
        counts = {key: _count(con, ".".join(key)) for key in BOOKKEEPING}
    value = lambda s, m: pipeline.report_value(frame, s, m)  # noqa: E731
    meta = {
        "report": dg.MetadataValue.md(markdown_table(frame, max_rows=50)),
        "dagster/row_count": frame.height,
        **visuals,
    }
    for subject, metric in (
        ("teacher", "accuracy_vs_gold"),
        ("student", "accuracy_vs_gold"),
        ("student", "agreement_with_teacher"),
        ("teacher", "discard_rate"),
    ):
        v = value(subject, metric)
        if v is not None:
            meta[f"{subject}_{metric}"] = float(v)
    recall = teacher_recall(frame)  # the teacher's bias per class on the gold probe
    meta["teacher_recall_per_gold_class"] = recall_text(recall)
    for label, v, _ in recall:
        if v is not None:
            meta[f"teacher_recall_vs_gold_{label}"] = float(v)
    yield dg.MaterializeResult(asset_key=REPORT, metadata=meta)
    for key, rows in counts.items():
        yield dg.MaterializeResult(asset_key=list(key), metadata={"dagster/row_count": rows})


def _count(con, table: str) -> int:
    """Rows of a bookkeeping table; 0 while it does not exist yet (ops.contract_results before any check)."""
    from llambert.warehouse import table_exists

    return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] if table_exists(con, table) else 0


def _visuals(con, llambert: LlambertResource) -> dict:
    """Confusion matrices (student vs gold on the eval split, teacher vs gold on the sample) and
    time per stage, from the saved views (sql/views/confusion_matrix.sql, stage_costs.sql)."""
    from llambert.plots import confusion_matrices, stage_times
    from llambert.warehouse import create_views, set_variables

    settings = llambert.settings()
    create_views(con)
    set_variables(con, {"eval_split": settings.eval_split})
    labels = llambert.task.label_names
    cells = con.execute("SELECT who, gold_label, predicted_label, documents FROM views.confusion_matrix").fetchall()
    matrices = {}
    for who, title in (
        ("student", f"student vs gold ({settings.eval_split} split)"),
        ("teacher", "teacher vs gold (sample)"),
    ):
        m = [[0] * len(labels) for _ in labels]
        for w, gold, pred, n in cells:
            if w == who and gold in labels and pred in labels:
                m[labels.index(gold)][labels.index(pred)] = int(n)
        matrices[title] = m
    stages = con.execute("SELECT stage, last_rows, last_seconds, rows_per_s FROM views.stage_costs").fetchall()
    out = {
        "confusion_matrix": dg.MetadataValue.md(confusion_matrices(matrices, labels, "confusion matrices")),
        "confusion_counts": dg.MetadataValue.md(
            markdown_table(con.execute("FROM views.confusion_matrix").pl(), max_rows=50)
        ),
    }
    if stages:
        out["time_per_stage"] = dg.MetadataValue.md(stage_times([(s, r or 0, t or 0) for s, r, t, _ in stages]))
        out["stage_costs"] = dg.MetadataValue.md(
            markdown_table(con.execute("FROM views.stage_costs").pl(), max_rows=50)
        )
    return out
