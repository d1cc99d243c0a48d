"""labeling.audit_labels: the teacher's verdict on the student's least confident documents of a batch."""

import dagster as dg

from dagster_project.partitions import batches_partitions
from dagster_project.resources import LlambertResource


@dg.asset(
    key=["labeling", "audit_labels"],
    deps=[dg.AssetKey(["predictions", "labels"]), dg.AssetKey(["students", "champion"])],
    partitions_def=batches_partitions,
    group_name="labeling",
    kinds={"duckdb", "pytorch"},
    code_version="1",
    description="With audit.enabled: the champion's k least confident documents of the batch, labeled by the "
    "teacher (cached answers are reused). Parsed labels join the training pool; agreement goes to "
    "labeling.audit_runs; a retrain is requested in students.retrain_requests when the policy says so.",
)
def audit_labels(context: dg.AssetExecutionContext, llambert: LlambertResource) -> dg.MaterializeResult:
    from llambert.audit import audit_batch

    with llambert.warehouse() as con:
        stats = audit_batch(con, llambert.settings(), context.partition_key)
        newest = con.execute(
            "SELECT checkpoint_id FROM students.checkpoints ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
    if stats.retrain_requested:
        context.log.warning(f"retrain requested: {stats.retrain_reason}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": stats.audited,
            **stats.metadata(),
            "newest_checkpoint": newest[0] if newest else "",
        }
    )
