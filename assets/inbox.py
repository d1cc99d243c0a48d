"""raw.inbox_files: which inbox file each new batch came from, and what ingesting it gave."""

import dagster as dg

from dagster_project.partitions import batches_partitions
from dagster_project.resources import LlambertResource
from llambert.pipeline import INITIAL_BATCH


@dg.asset(
    key=["raw", "inbox_files"],
    deps=[dg.AssetKey(["raw", "corpus"])],
    partitions_def=batches_partitions,
    group_name="ingest",
    kinds={"duckdb"},
    code_version="1",
    description="One row per inbox file that became a batch: file name, sha256, size, input and rejected rows, "
    "documents that were new and documents the corpus already had. The initial batch has no row.",
)
def inbox_files(context: dg.AssetExecutionContext, llambert: LlambertResource) -> dg.MaterializeResult:
    from llambert.inbox import register_batch

    batch = context.partition_key
    if batch == INITIAL_BATCH:
        return dg.MaterializeResult(metadata={"note": "the initial batch is the configured corpus, not an inbox file"})
    with llambert.warehouse() as con:
        stats = register_batch(con, llambert.settings(), batch)
    return dg.MaterializeResult(metadata={"dagster/row_count": 1, **stats.metadata()})
