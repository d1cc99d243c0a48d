"""raw.corpus, raw.occurrences, raw.rejected: one batch's input rows (the initial corpus, or a file that arrived)."""

import dagster as dg

from dagster_project.partitions import batches_partitions
from dagster_project.resources import LlambertResource
from llambert import pipeline
from llambert.reporting import dict_table, markdown_table

_RAW = {"group_name": "ingest", "partitions_def": batches_partitions, "code_version": "1"}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            ["raw", "occurrences"],
            kinds={"duckdb", "polars"},
            **_RAW,
            description="Every accepted input row of the batch (source file, row, id, split, gold label) with the "
            "doc_id of its text: a text seen twice has two occurrences and one raw.corpus row.",
        ),
        dg.AssetSpec(
            ["raw", "corpus"],
            deps=[["raw", "occurrences"]],
            kinds={"duckdb", "polars"},
            **_RAW,
            description="One row per distinct text (doc_id = md5 of the text) with source, split and gold label; "
            "every input row in raw.occurrences, unusable rows in raw.rejected with their reason.",
        ),
        dg.AssetSpec(
            ["raw", "rejected"],
            kinds={"duckdb", "polars"},
            **_RAW,
            description="Input rows of the batch that could not be used (no text, a label outside the task, ...), "
            "each with its source row and the reason.",
        ),
    ],
)
def raw_corpus(context: dg.AssetExecutionContext, llambert: LlambertResource):
    batch = context.partition_key
    with llambert.warehouse() as con:
        stats = pipeline.ingest_batch(con, llambert.settings(), batch)
        preview = con.execute(
            "SELECT doc_id, split, gold_label, n_copies, left(text, 120) AS text FROM raw.corpus WHERE batch = ? "
            "LIMIT 5",
            [batch],
        ).pl()
        splits = dict(
            con.execute(
                "SELECT split, count(*) FROM raw.corpus WHERE batch = ? GROUP BY 1 ORDER BY 1", [batch]
            ).fetchall()
        )
        reasons = dict(
            con.execute(
                "SELECT reason, count(*) FROM raw.rejected WHERE batch = ? GROUP BY 1 ORDER BY 2 DESC", [batch]
            ).fetchall()
        )
    yield dg.MaterializeResult(
        asset_key=["raw", "occurrences"],
        metadata={"dagster/row_count": stats.accepted_rows, "duplicate_rows": stats.duplicate_rows},
    )
    yield dg.MaterializeResult(
        asset_key=["raw", "corpus"],
        metadata={
            "dagster/row_count": stats.documents,
            **stats.metadata(),
            "documents_by_split": dg.MetadataValue.md(dict_table(splits, "split", "documents")),
            "preview": dg.MetadataValue.md(markdown_table(preview)),
        },
    )
    yield dg.MaterializeResult(
        asset_key=["raw", "rejected"],
        metadata={
            "dagster/row_count": stats.rejected_rows,
            "reasons": dg.MetadataValue.md(dict_table(reasons or {"(none)": 0}, "reason", "rows")),
        },
    )
