"""evaluation.report: teacher and student quality, agreement, discard rate, time per stage."""

import dagster as dg

from dagster_project.resources import LlambertResource
from llambert import pipeline
from llambert.reporting import markdown_table


@dg.asset(
    key=["evaluation", "report"],
    deps=[dg.AssetKey(["predictions", "labels"]), dg.AssetKey(["labeling", "parsed_labels"])],
    group_name="quality",
    kinds={"duckdb", "sql"},
    code_version="1",
    description="Accuracy and macro-F1 of the teacher (against gold where the sample has it) and of the student "
    "(on the evaluation split), their agreement, the discard rate, and rows and seconds per stage.",
)
def report(llambert: LlambertResource) -> dg.MaterializeResult:
    with llambert.warehouse() as con:
        frame = pipeline.build_report(con, llambert.settings())
    value = lambda s, m: pipeline.report_value(frame, s, m)  # noqa: E731
    meta = {
        "report": dg.MetadataValue.md(markdown_table(frame, max_rows=50)),
        "dagster/row_count": frame.height,
    }
    for subject, metric in (("teacher", "accuracy_vs_gold"), ("student", "accuracy_vs_gold"),
                            ("student", "agreement_with_teacher"), ("teacher", "discard_rate")):
        v = value(subject, metric)
        if v is not None:
            meta[f"{subject}_{metric}"] = float(v)
    return dg.MaterializeResult(metadata=meta)
