"""Jobs for the things people do. Partitioned steps (ingest, labeling the corpus) run per batch."""

import dagster as dg

from dagster_project.partitions import batches_partitions

CORPUS = dg.AssetKey(["raw", "corpus"])
PREDICTIONS = dg.AssetKey(["predictions", "labels"])
LLM_STEPS = dg.AssetSelection.assets(
    ["labeling", "pool"], ["labeling", "sample"], ["labeling", "llm_responses"], ["labeling", "parsed_labels"],
    ["labeling", "discarded"],
)

ingest_job = dg.define_asset_job(
    "ingest_batch", selection=dg.AssetSelection.assets(CORPUS), partitions_def=batches_partitions,
    description="Read one batch (the initial corpus, or a file that arrived) into raw.corpus.",
)
label_sample_job = dg.define_asset_job(
    "label_sample", selection=LLM_STEPS,
    description="Draw the sample, have the LLM label it (cached answers are reused), parse the answers.",
)
train_student_job = dg.define_asset_job(
    "train_student", selection=dg.AssetSelection.assets(["students", "checkpoints"]),
    description="Fine-tune a student on the parsed labels and update the champion.",
)
label_corpus_job = dg.define_asset_job(
    "label_corpus", selection=dg.AssetSelection.assets(PREDICTIONS), partitions_def=batches_partitions,
    description="The champion student labels every document of a batch that it has not labeled yet.",
)
report_job = dg.define_asset_job(
    "evaluate", selection=dg.AssetSelection.assets(["evaluation", "report"]),
    description="Rebuild evaluation.report.",
)
unpartitioned_pipeline_job = dg.define_asset_job(
    "teach_and_train", selection=LLM_STEPS | dg.AssetSelection.assets(["students", "checkpoints"]),
    description="The LLM labels the sample and a student is trained on its labels.",
)

# A new batch end to end (what the inbox sensor launches): ingest, record the file, label its
# documents with the champion, audit the least confident ones (when audit.enabled).
ingest_and_label_job = dg.define_asset_job(
    "ingest_and_label_batch",
    selection=dg.AssetSelection.assets(CORPUS, ["raw", "inbox_files"], PREDICTIONS, ["labeling", "audit_labels"]),
    partitions_def=batches_partitions,
    tags={"llambert/warehouse": "write"},  # one warehouse writer at a time (dagster_project/instance.py)
    description="Ingest one batch, label exactly its new documents with the champion student, audit it.",
)

JOBS = [ingest_job, label_sample_job, train_student_job, label_corpus_job, report_job, unpartitioned_pipeline_job, ingest_and_label_job]
