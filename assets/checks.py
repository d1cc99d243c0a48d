"""Data contracts as Dagster asset checks: one multi-asset check per table, one check per contract.

The contracts themselves live in ``data_contracts/<table>.json`` and ``<table>.gates.sql`` (engine:
``llambert/contracts.py``). Checks
on the partitioned tables (raw.corpus, predictions.labels) run per batch. Those that guard later
spending (schema, keys, label domain, label balance and its shift, discard rate, ...) are
blocking: a failure stops the assets after them. Every result is stored in
``ops.contract_results`` and shown in the UI with a markdown table of offending rows.
"""

import warnings

import dagster as dg

from dagster_project.partitions import batches_partitions
from dagster_project.resources import LlambertResource
from llambert.contracts import CATALOG, PARTITIONED, ContractResult


def _result(key: dg.AssetKey, r: ContractResult) -> dg.AssetCheckResult:
    from llambert.reporting import markdown_table

    meta: dict = {"engine": r.engine, "blocking": r.blocking}
    for name in ("observed", "bound", "rows_checked", "rows_failing"):
        value = getattr(r, name)
        if value is not None:
            meta[name] = float(value) if isinstance(value, float) else value
    if r.sampled:
        meta["sampled"] = True
    if r.skipped:
        meta["skipped"] = True
    if r.partition is not None:
        meta["partition"] = r.partition
    if r.failing is not None and r.failing.height:
        meta["failing_rows" if not r.passed else "rows"] = dg.MetadataValue.md(markdown_table(r.failing))
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=r.contract,
        passed=r.passed,
        severity=dg.AssetCheckSeverity.ERROR if r.error else dg.AssetCheckSeverity.WARN,
        description=r.description,
        metadata=meta,
    )


def _contract_checks(table: str) -> dg.AssetChecksDefinition:
    key = dg.AssetKey(table.split("."))
    partitions = batches_partitions if table in PARTITIONED else None
    with warnings.catch_warnings():  # partitioned checks are a Dagster preview feature: checked per batch here
        warnings.simplefilter("ignore")
        specs = [
            dg.AssetCheckSpec(
                s.name, asset=key, description=s.description, blocking=s.blocking, partitions_def=partitions
            )
            for s in CATALOG[table]
        ]

    @dg.multi_asset_check(
        specs=specs,
        name=f"{table.replace('.', '_')}_contracts",
        description=f"The data contracts of {table} (data_contracts/{table}.json + SQL gates).",
    )
    def _check(context: dg.AssetCheckExecutionContext, llambert: LlambertResource):
        from llambert.contracts import evaluate_and_record

        partition = context.partition_key if partitions is not None and context.has_partition_key else None
        with llambert.warehouse() as con:
            results = evaluate_and_record(con, llambert.settings(), table, partition, run_id=context.run.run_id)
        selected = {k.name for k in context.selected_asset_check_keys}
        for r in results:
            if r.contract not in selected:
                continue
            if not r.passed:
                context.log.warning(
                    f"contract {table}.{r.contract}{f' [{partition}]' if partition else ''} failed: {r.description}"
                )
            yield _result(key, r)

    return _check


CONTRACT_CHECKS = [_contract_checks(table) for table in CATALOG]
