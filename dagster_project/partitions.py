"""Batches of documents: the initial corpus is one, every file that arrives is another."""

import dagster as dg

BATCHES = "batches"
batches_partitions = dg.DynamicPartitionsDefinition(name=BATCHES)
