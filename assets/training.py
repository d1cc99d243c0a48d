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
    code_version="2",
    description="One row per fine-tuned student (base model, recipe, label source, data sizes, metrics, gold-probe "
    "score, path); the model folder loads with transformers.pipeline. Re-materializing with the same base model, "
    "training settings and labels reuses the checkpoint (fingerprint) instead of retraining. students.champion "
    "says which one labels the corpus, and why.",
)
def checkpoints(context: dg.AssetExecutionContext, llambert: LlambertResource) -> dg.MaterializeResult:
    import polars as pl

    from llambert.progress import also_log_to

    with llambert.warehouse() as con, also_log_to(context.log.info):  # progress lines in the run log too
        stats = pipeline.train_checkpoint(con, llambert.settings())
    history = pl.DataFrame(stats.pop("history"))
    context.log.info(f"checkpoint {stats['checkpoint_id']}: val accuracy {stats.get('val_accuracy')}")
    return dg.MaterializeResult(
        metadata={
            **{k: v for k, v in stats.items() if v is not None and not isinstance(v, (dict, list))},
            "path": dg.MetadataValue.path(stats["path"]),
            "epochs": dg.MetadataValue.md(markdown_table(history)),
            "training_curve": dg.MetadataValue.md(_curve(history)),
        }
    )


def _curve(history) -> str:
    """Loss and validation accuracy/F1 per epoch as a PNG (students.training_log holds the same)."""
    from llambert.plots import training_curve

    if history.is_empty():
        return "(no epochs)"
    col = lambda c: history[c].to_list() if c in history.columns else []  # noqa: E731
    return training_curve(
        col("epoch"), {"train loss": col("train_loss"), "val loss": col("val_loss")},
        {"val accuracy": col("val_accuracy"), "val macro-F1": col("val_f1")},
        title="student training: loss and validation accuracy per epoch",
    )
