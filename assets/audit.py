"""labeling.audit_labels: the teacher's verdict on the student's least confident documents of a batch."""

import dagster as dg

from dagster_project.partitions import batches_partitions
from dagster_project.resources import LlambertResource

_AUDIT = {"partitions_def": batches_partitions, "group_name": "labeling", "code_version": "1"}
AUDIT_LABELS = dg.AssetKey(["labeling", "audit_labels"])


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            AUDIT_LABELS,
            deps=[dg.AssetKey(["predictions", "labels"]), dg.AssetKey(["students", "champion"])],
            kinds={"duckdb", "pytorch"},
            **_AUDIT,
            description="With audit.enabled: the champion's k least confident documents of the batch, labeled by "
            "the teacher (cached answers are reused). Parsed labels join the training pool; agreement goes to "
            "labeling.audit_runs; a retrain is requested in students.retrain_requests when the policy says so.",
        ),
        dg.AssetSpec(
            ["labeling", "audit_runs"],
            deps=[AUDIT_LABELS],
            kinds={"duckdb", "sql"},
            **_AUDIT,
            description="One row per audited batch: student-teacher agreement on its least confident documents.",
        ),
        dg.AssetSpec(
            ["students", "retrain_requests"],
            deps=[["labeling", "audit_runs"]],
            kinds={"duckdb", "sql"},
            **_AUDIT,
            description="A retrain asked for by an audit (enough new labels, or agreement below the bound), one per "
            "(champion, batch).",
        ),
    ],
)
def audit_labels(context: dg.AssetExecutionContext, llambert: LlambertResource):
    from llambert.audit import audit_batch

    with llambert.warehouse() as con:
        stats = audit_batch(con, llambert.settings(), context.partition_key)
        runs = con.execute("SELECT count(*) FROM labeling.audit_runs").fetchone()[0]
        requests = con.execute("SELECT count(*) FROM students.retrain_requests").fetchone()[0]
        newest = con.execute(
            "SELECT checkpoint_id FROM students.checkpoints ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
    if stats.retrain_requested:
        context.log.warning(f"retrain requested: {stats.retrain_reason}")
    yield dg.MaterializeResult(
        asset_key=AUDIT_LABELS,
        metadata={
            "dagster/row_count": stats.audited,
            **stats.metadata(),
            "newest_checkpoint": newest[0] if newest else "",
        },
    )
    yield dg.MaterializeResult(asset_key=["labeling", "audit_runs"], metadata={"dagster/row_count": runs})
    yield dg.MaterializeResult(
        asset_key=["students", "retrain_requests"],
        metadata={"dagster/row_count": requests, "requested_now": bool(stats.retrain_requested)},
    )
