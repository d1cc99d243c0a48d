"""raw.corpus: documents of one batch (the initial corpus, or a file that arrived)."""

import dagster as dg

from dagster_project.partitions import batches_partitions
from dagster_project.resources import LlambertResource
from llambert import pipeline
from llambert.reporting import dict_table, markdown_table


@dg.asset(
    key=["raw", "corpus"],
    group_name="ingest",
    kinds={"duckdb", "polars"},
    partitions_def=batches_partitions,
    code_version="1",
    description="One row per distinct text (doc_id = md5 of the text) with source, split and gold label; "
    "every input row in raw.occurrences, unusable rows in raw.rejected with their reason.",
)
def raw_corpus(context: dg.AssetExecutionContext, llambert: LlambertResource) -> dg.MaterializeResult:
    settings = llambert.settings()
    with llambert.warehouse() as con:
        stats = pipeline.ingest_batch(con, settings, context.partition_key)
        preview = con.execute(
            "SELECT doc_id, split, gold_label, n_copies, left(text, 120) AS text FROM raw.corpus WHERE batch = ? LIMIT 5",
            [context.partition_key],
        ).pl()
        splits = dict(con.execute(
            "SELECT split, count(*) FROM raw.corpus WHERE batch = ? GROUP BY 1 ORDER BY 1", [context.partition_key]
        ).fetchall())
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": stats["documents"],
            "input_rows": stats["input_rows"],
            "rejected_rows": stats["rejected_rows"],
            "duplicate_rows": stats["duplicate_rows"],
            "documents_by_split": dg.MetadataValue.md(dict_table(splits, "split", "documents")),
            "preview": dg.MetadataValue.md(markdown_table(preview)),
        }
    )
