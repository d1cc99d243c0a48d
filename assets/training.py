"""students.checkpoints: fine-tune an encoder on the parsed labels, then pick the champion."""

import dagster as dg

from dagster_project.resources import LlambertResource
from llambert import pipeline
from llambert.reporting import markdown_table


@dg.asset(
    key=["students", "checkpoints"],
    deps=[dg.AssetKey(["labeling", "parsed_labels"])],
    group_name="training",
    kinds={"duckdb", "pytorch"},
    code_version="1",
    description="One row per fine-tuned student (base model, recipe, label source, metrics, path); the model "
    "folder loads with transformers.pipeline. students.champion says which one labels the corpus.",
)
def checkpoints(context: dg.AssetExecutionContext, llambert: LlambertResource) -> dg.MaterializeResult:
    import polars as pl

    with llambert.warehouse() as con:
        stats = pipeline.train_checkpoint(con, llambert.settings())
    history = pl.DataFrame(stats.pop("history"))
    context.log.info(f"checkpoint {stats['checkpoint_id']}: val accuracy {stats.get('val_accuracy')}")
    return dg.MaterializeResult(
        metadata={
            **{k: v for k, v in stats.items() if v is not None and not isinstance(v, (dict, list))},
            "path": dg.MetadataValue.path(stats["path"]),
            "epochs": dg.MetadataValue.md(markdown_table(history)),
        }
    )
