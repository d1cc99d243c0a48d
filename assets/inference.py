"""predictions.labels: the champion student labels every document of a batch."""

import dagster as dg

from dagster_project.partitions import batches_partitions
from dagster_project.resources import LlambertResource
from llambert import pipeline
from llambert.plots import bar_chart
from llambert.reporting import dict_table


@dg.asset(
    key=["predictions", "labels"],
    deps=[dg.AssetKey(["raw", "corpus"]), dg.AssetKey(["students", "champion"])],
    partitions_def=batches_partitions,
    group_name="inference",
    kinds={"duckdb", "pytorch"},
    code_version="1",
    description="The champion student's label and probability for every document of the batch. Only documents "
    "without a prediction from the current champion (students.champion) are computed.",
)
def labels(context: dg.AssetExecutionContext, llambert: LlambertResource) -> dg.MaterializeResult:
    from llambert.progress import also_log_to

    batch = context.partition_key
    # Short write sessions: no connection is open while the student predicts, so `llambert sql` can read.
    with also_log_to(context.log.info):  # progress lines in the run log too
        stats = pipeline.predict_batch(llambert.sessions(), llambert.settings(), batch)
    with llambert.warehouse() as con:
        dist = dict(
            con.execute(
                "SELECT label, count(*) FROM predictions.labels WHERE batch = ? AND checkpoint_id = ? GROUP BY 1 "
                "ORDER BY 1",
                [batch, stats.checkpoint_id],
            ).fetchall()
        )
    names = {lab.id: lab.name for lab in llambert.task.labels}  # label ids -> names, for charts people can read
    named = {names.get(k, str(k)): v for k, v in dist.items()}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": stats.rows,
            **stats.metadata(),
            "label_distribution": dg.MetadataValue.md(dict_table(dist, "label", "documents")),
            "label_distribution_chart": dg.MetadataValue.md(
                bar_chart(named, f"student labels in batch {batch}", ylabel="documents")
            ),
            "throughput": dg.MetadataValue.md(
                f"{stats.predicted_now:,} documents labeled now"
                + (f" at {stats.docs_per_s:,} docs/s" if stats.docs_per_s else " (all were labeled already)")
            ),
        }
    )
