"""Ingest and label new files at once, in this process, through Dagster (no daemon needed).

``python -m dagster_project.ingest_now FILE...`` (what ``llambert ingest --now`` calls): each file
is claimed like the inbox sensor would (copied into ``<inbox>/.batches/<partition>/``), its
partition is added to the project's instance, and ``ingest_and_label_batch`` runs for it. With
no FILE it does one sensor tick by hand: everything waiting in the inbox.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from dagster_project.instance import ensure_dagster_home
from llambert.config import ConfigError, load_settings, parse_overrides


def ingest_now(files: list[str], config_path: str | None = None, overrides: dict | None = None,
               log_level: str = "WARNING") -> int:
    settings = load_settings(config_path, overrides)
    ensure_dagster_home(settings.home / "dagster_home")

    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        return _ingest_on(instance, settings, files, config_path, overrides, log_level)


def _ingest_on(instance, settings, files: list[str], config_path: str | None, overrides: dict | None,
               log_level: str) -> int:
    from dagster_project.definitions import build_definitions
    from dagster_project.partitions import BATCHES
    from dagster_project.resources import LlambertResource
    from dagster_project.sensors import INGEST_AND_LABEL
    from llambert.inbox import InboxError, claim_file, known_batches, scan_inbox
    from llambert.warehouse import open_warehouse

    todo = []
    try:
        for f in files:
            batch, new = claim_file(settings, f, move=False)
            if not new and instance.has_dynamic_partition(BATCHES, batch.partition):
                print(f"[llambert] {f}: same bytes as batch {batch.partition} (already ingested); nothing to do",
                      file=sys.stderr)
                continue
            todo.append(batch)
    except InboxError as e:
        print(f"llambert: {e}", file=sys.stderr)
        return 2
    if not files:
        scan = scan_inbox(settings, now=float("inf"))  # by hand: no need to wait for files to settle
        for name, partition in scan.duplicates:
            print(f"[llambert] {name}: same bytes as batch {partition}; set aside in .duplicates/", file=sys.stderr)
        todo = sorted((b for b in known_batches(settings).values() if not instance.has_dynamic_partition(BATCHES, b.partition)),
                      key=lambda b: (b.detected_at, b.partition))
        if not todo:
            print(f"[llambert] nothing new in {settings.inbox_dir}", file=sys.stderr)
    resource = LlambertResource(config_path=config_path, overrides_yaml=yaml.safe_dump(overrides) if overrides else "")
    job = build_definitions(resource).resolve_job_def(INGEST_AND_LABEL)
    failed = 0
    for batch in todo:
        if not instance.has_dynamic_partition(BATCHES, batch.partition):
            instance.add_dynamic_partitions(BATCHES, [batch.partition])
        print(f"[llambert] {batch.file_name} -> batch {batch.partition} ...", file=sys.stderr, flush=True)
        result = job.execute_in_process(
            instance=instance, partition_key=batch.partition, raise_on_error=False,
            tags={"llambert/inbox_file": batch.file_name, "llambert/sha256": batch.sha256[:16]},
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
        if not result.success:
            failed += 1
            for e in result.all_events:
                if e.is_failure:
                    print(f"[llambert] step failed: {e.message}", file=sys.stderr)
            print(f"[llambert] batch {batch.partition} failed (run {result.run_id}); see `make ui`", file=sys.stderr)
            continue
        with open_warehouse(settings.warehouse_path, read_only=True) as con:
            row = con.execute(
                "SELECT f.input_rows, f.rejected_rows, f.new_documents, f.known_documents, "
                "(SELECT count(*) FROM predictions.labels p WHERE p.batch = f.batch AND p.checkpoint_id = "
                " (SELECT checkpoint_id FROM students.champion)), a.audited, a.agreement, a.retrain_requested "
                "FROM raw.inbox_files f LEFT JOIN labeling.audit_runs a USING (batch) WHERE f.batch = ?",
                [batch.partition]).fetchone()
        rows, rejected, new_docs, known_docs, labeled, audited, agreement, retrain = row
        audit = (f"; audit: {audited} documents, agreement {agreement:.3f}" if audited and agreement is not None
                 else "; audit: off or nothing to audit")
        print(f"[llambert] batch {batch.partition}: {rows} rows ({rejected} rejected), {new_docs} new documents, "
              f"{known_docs} already known, {labeled} labeled by the champion{audit}"
              f"{'; retrain requested' if retrain else ''} (run {result.run_id[:8]})")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dagster_project.ingest_now", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", metavar="FILE", help="parquet, CSV or JSONL files of new reviews")
    ap.add_argument("--config", help="llambert YAML file (default: LLAMBERT_CONFIG or ./llambert.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    args = ap.parse_args(argv)
    try:
        overrides = parse_overrides(args.set)
        return ingest_now(args.files, args.config, overrides or None)
    except ConfigError as e:
        print(f"llambert: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
