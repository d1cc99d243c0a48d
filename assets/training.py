"""The student's half: training examples, checkpoints and their epochs, the candidates' verdicts, the champion.

One step (``pipeline.train_checkpoint``) writes them all: the champion is chosen right after training, and
the blocking ``champion`` contract of students.checkpoints reads it. Everything downstream (predictions,
audit, report) reads students.champion; nothing else rebuilds it.
"""

import dagster as dg

from dagster_project.resources import LlambertResource
from llambert import pipeline
from llambert.reporting import markdown_table

_STUDENTS = {"group_name": "training", "kinds": {"duckdb", "pytorch"}}
CHECKPOINTS = ["students", "checkpoints"]


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            ["students", "gold_probe"],
            deps=[["raw", "corpus"]],
            code_version="1",
            **_STUDENTS,
            description="A fixed, seeded set of gold-labeled train documents that no recipe trains on: every "
            "checkpoint of the task is scored on the very same documents. Kept while its settings are unchanged.",
        ),
        dg.AssetSpec(
            ["students", "training_examples"],
            deps=[["labeling", "parsed_labels"], ["students", "gold_probe"]],
            code_version="1",
            **_STUDENTS,
            description="The labeled documents the configured student.recipe trains on, phase by phase (LLM "
            "labels, then gold for 'combined'); never a document of the gold probe.",
        ),
        dg.AssetSpec(
            CHECKPOINTS,
            deps=[["students", "training_examples"]],
            code_version="2",
            **_STUDENTS,
            description="One row per fine-tuned student (base model, recipe, label source, data sizes, metrics, "
            "gold-probe score, path); the model folder loads with transformers.pipeline. Re-materializing with the "
            "same base model, training settings and labels reuses the checkpoint (fingerprint) instead of "
            "retraining. students.champion says which one labels the corpus, and why.",
        ),
        dg.AssetSpec(
            ["students", "training_log"],
            deps=[CHECKPOINTS],
            code_version="1",
            **_STUDENTS,
            description="Loss and validation accuracy / macro-F1 of every epoch of every trained checkpoint "
            "(a reused checkpoint adds no rows).",
        ),
        dg.AssetSpec(
            ["students", "distill_labels"],
            deps=[CHECKPOINTS, ["labeling", "pool"]],
            code_version="1",
            **_STUDENTS,
            description="Self-distillation (student.self_distill): the soft labels the first generation's ensemble "
            "gave pool documents the teacher never saw, and which checkpoint trained on them (`distilled`, the encoder; "
            "`distilled_linear`, the TF-IDF model of the distilled ensemble). Empty "
            "while self_distill is 0.",
        ),
        dg.AssetSpec(
            ["students", "candidates"],
            deps=[CHECKPOINTS],
            code_version="1",
            **_STUDENTS,
            description="Every checkpoint of the task with the champion rule's verdict on it: its score on the "
            "judge set, speed, class balance, and why it is (not) eligible (collapsed, below the linear floor).",
        ),
        dg.AssetSpec(
            ["students", "champion"],
            deps=[["students", "candidates"]],
            code_version="3",
            **_STUDENTS,
            description="The one checkpoint whose predictions are the product, and why (metric, score, reason): "
            "the best eligible candidate; among those within champion_tolerance of it (ensembles: within "
            "champion_ensemble_margin), the ones within champion_speedup of the fastest, an ensemble first, then the "
            "best score. Empty when no "
            "candidate is eligible (the blocking champion contract then stops the run).",
        ),
    ],
)
def student(context: dg.AssetExecutionContext, llambert: LlambertResource):
    import polars as pl

    from llambert.progress import also_log_to

    with llambert.warehouse() as con, also_log_to(context.log.info):  # progress lines in the run log too
        stats = pipeline.train_checkpoint(con, llambert.settings())
        counts = dict(
            con.execute(
                "SELECT 'gold_probe', count(*) FROM students.gold_probe UNION ALL "
                "SELECT 'training_examples', count(*) FROM students.training_examples UNION ALL "
                "SELECT 'training_log', count(*) FROM students.training_log UNION ALL "
                "SELECT 'distill_labels', count(*) FROM students.distill_labels UNION ALL "
                "SELECT 'candidates', count(*) FROM students.candidates"
            ).fetchall()
        )
        candidates = pipeline.candidate_summary(con)
    history = pl.DataFrame(stats.history)
    context.log.info(f"checkpoint {stats.checkpoint_id}: val accuracy {stats.get('val_accuracy')}")
    yield dg.MaterializeResult(
        asset_key=["students", "gold_probe"], metadata={"dagster/row_count": counts["gold_probe"]}
    )
    yield dg.MaterializeResult(
        asset_key=["students", "training_examples"],
        metadata={
            "dagster/row_count": counts["training_examples"],
            "label_source": stats.label_source,
            "recipe": stats.recipe,
        },
    )
    yield dg.MaterializeResult(
        asset_key=CHECKPOINTS,
        metadata={
            **stats.metadata(),
            "path": dg.MetadataValue.path(stats.path),
            "epochs": dg.MetadataValue.md(markdown_table(history)),
            "training_curve": dg.MetadataValue.md(_curve(history)),
        },
    )
    yield dg.MaterializeResult(
        asset_key=["students", "training_log"],
        metadata={"dagster/row_count": counts["training_log"], "new_epochs": history.height},
    )
    yield dg.MaterializeResult(
        asset_key=["students", "distill_labels"],
        metadata={
            "dagster/row_count": counts["distill_labels"],
            "self_distill": llambert.settings().student.self_distill,
        },
    )
    yield dg.MaterializeResult(
        asset_key=["students", "candidates"],
        metadata={"dagster/row_count": counts["candidates"], "newest": dg.MetadataValue.md(markdown_table(candidates))},
    )
    yield dg.MaterializeResult(
        asset_key=["students", "champion"],
        metadata={
            "dagster/row_count": 0 if stats.champion is None else 1,
            "checkpoint_id": stats.champion or "",
            "kind": stats.champion_kind or "",
            "reason": stats.champion_reason or "",
        },
    )


def _curve(history) -> str:
    """Loss and validation accuracy/F1 per epoch as a PNG (students.training_log holds the same)."""
    from llambert.plots import training_curve

    if history.is_empty():
        return "(no epochs)"
    col = lambda c: history[c].to_list() if c in history.columns else []  # noqa: E731
    return training_curve(
        col("epoch"),
        {"train loss": col("train_loss"), "val loss": col("val_loss")},
        {"val accuracy": col("val_accuracy"), "val macro-F1": col("val_f1")},
        title="student training: loss and validation accuracy per epoch",
    )
