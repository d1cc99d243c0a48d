"""Jobs for the things people do. Partitioned steps (ingest, labeling the corpus) run per batch.

Every job defined here is found by ``dagster_project/definitions.py``; sensors take the job objects.
"""

import dagster as dg

from dagster_project.partitions import batches_partitions

CORPUS = dg.AssetKey(["raw", "corpus"])
PREDICTIONS = dg.AssetKey(["predictions", "labels"])
# The ingest step writes all three raw tables (assets/ingest.py).
INGEST_STEP = dg.AssetSelection.assets(CORPUS, ["raw", "occurrences"], ["raw", "rejected"])
# The training step writes the probe, the examples, the checkpoints, their epochs, the verdicts and the champion.
TRAIN_STEP = dg.AssetSelection.assets(
    ["students", "gold_probe"],
    ["students", "training_examples"],
    ["students", "checkpoints"],
    ["students", "training_log"],
    ["students", "distill_labels"],
    ["students", "candidates"],
    ["students", "champion"],
)
LLM_STEPS = dg.AssetSelection.assets(
    ["labeling", "pool"],
    ["labeling", "sample"],
    ["labeling", "llm_responses"],
    ["labeling", "parsed_labels"],
    ["labeling", "discarded"],
    # The teacher step's bookkeeping tables (assets/labeling.py).
    ["labeling", "llm_cache"],
    ["labeling", "llm_requests"],
    ["labeling", "llm_runs"],
    ["labeling", "cost_projection"],
)
# The audit step writes its labels, the batch's agreement and any retrain request (assets/audit.py).
AUDIT_STEP = dg.AssetSelection.assets(
    ["labeling", "audit_labels"], ["labeling", "audit_runs"], ["students", "retrain_requests"]
)

ingest_job = dg.define_asset_job(
    "ingest_batch",
    selection=INGEST_STEP,
    partitions_def=batches_partitions,
    description="Read one batch (the initial corpus, or a file that arrived) into raw.corpus.",
)
label_sample_job = dg.define_asset_job(
    "label_sample",
    selection=LLM_STEPS,
    description="Draw the sample, have the LLM label it (cached answers are reused), parse the answers.",
)
train_student_job = dg.define_asset_job(
    "train_student",
    selection=TRAIN_STEP,
    description="Fine-tune a student on the parsed labels and update the champion.",
)
label_corpus_job = dg.define_asset_job(
    "label_corpus",
    selection=dg.AssetSelection.assets(PREDICTIONS),
    partitions_def=batches_partitions,
    description="The champion student labels every document of a batch that it has not labeled yet.",
)
report_job = dg.define_asset_job(
    "evaluate",
    # The report step also owns the bookkeeping tables (assets/evaluation.py).
    selection=dg.AssetSelection.assets(["evaluation", "report"], ["labeling", "task_labels"], ["ops", "stage_runs"])
    | dg.AssetSelection.assets(["ops", "contract_results"]),
    description="Rebuild evaluation.report.",
)
unpartitioned_pipeline_job = dg.define_asset_job(
    "teach_and_train",
    selection=LLM_STEPS | TRAIN_STEP,
    description="The LLM labels the sample and a student is trained on its labels.",
)

# A new batch end to end (what the inbox sensor launches): ingest, record the file, label its
# documents with the champion, audit the least confident ones (when audit.enabled).
ingest_and_label_job = dg.define_asset_job(
    "ingest_and_label_batch",
    selection=INGEST_STEP | dg.AssetSelection.assets(["raw", "inbox_files"], PREDICTIONS) | AUDIT_STEP,
    partitions_def=batches_partitions,
    tags={"llambert/warehouse": "write"},  # one warehouse writer at a time (dagster_project/instance.py)
    description="Ingest one batch, label exactly its new documents with the champion student, audit it.",
)
