"""Ingest and label new files at once, in this process, through Dagster (no daemon needed).

``python -m dagster_project.ingest_now FILE...`` (what ``llambert ingest --now`` calls): each file
is checked (type, text column), then claimed like the inbox sensor would (copied into
``<inbox>/.batches/<partition>/``) and its partition added to the project's instance, under the
inbox lock (so the sensor never launches a run for it too), and ``ingest_and_label_batch`` runs
for it. With no FILE it does one sensor tick by hand: everything waiting in the inbox.

A batch is done when the last ``ingest_and_label_batch`` run of its partition succeeded and the
warehouse agrees (``llambert.inbox.unfinished_batches``: its rows were ingested and labeled). A
batch whose last run failed, or was killed (the run is still "started" but the process that ran
it is gone: it is marked failed here), is run again, with or without FILE: the steps are
idempotent per batch, so what was committed is replaced or kept, never doubled. A run still going
(queued or launched by the daemon, or another ``--now`` alive) is left alone.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from dagster_project.instance import ensure_dagster_home
from llambert.config import ConfigError, load_settings, parse_overrides


def ingest_now(
    files: list[str], config_path: str | None = None, overrides: dict | None = None, log_level: str = "WARNING"
) -> int:
    settings = load_settings(config_path, overrides)
    ensure_dagster_home(settings.home / "dagster_home")

    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        return _ingest_on(instance, settings, files, log_level)


PROCESS_TAG = "llambert/process"  # host:pid:start of the process running an in-process run


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) of a live process from /proc; None when there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        if Path("/proc/self/stat").exists():
            return None
        try:  # no /proc (macOS): only whether the pid exists
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "R", ""


def process_tag() -> str:
    stat = _proc_stat(os.getpid())
    return f"{socket.gethostname()}:{os.getpid()}:{stat[1] if stat else ''}"


def process_gone(run) -> str | None:
    """Why an unfinished run is dead: its process (recorded in PROCESS_TAG) no longer exists; else None.

    Runs without the tag (the daemon's) are left to Dagster's run monitoring: None.
    """
    tag = run.tags.get(PROCESS_TAG)
    if not tag:
        return None
    host, pid, start = tag.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    stat = _proc_stat(int(pid))
    if stat is None or stat[0] in ("Z", "X") or (start and stat[1] and stat[1] != start):
        return f"the process that ran it (pid {pid}) is gone (killed?); marked failed by `llambert ingest --now`"
    return None


def batch_state(instance, partition: str, warehouse: dict[str, str] | None) -> tuple[str, str]:
    """('new' | 'done' | 'running' | 'unfinished', why) for a claimed batch.

    ``warehouse`` is :func:`llambert.inbox.unfinished_batches` ({batch: why}), or None when the
    warehouse could not be read (a run holds it): then Dagster's run status alone decides.
    """
    import dagster as dg

    from dagster_project.jobs import ingest_and_label_job

    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=ingest_and_label_job.name, tags={"dagster/partition": partition}), limit=1
    )
    why = (warehouse or {}).get(partition)
    if not runs:  # never run by this job: new, unless the warehouse has it all (materialized otherwise)
        return ("done", "") if warehouse is not None and why is None else ("new", "no run yet")
    run = runs[0]
    if not run.is_finished:
        gone = process_gone(run)
        if gone is None:
            return "running", f"run {run.run_id[:8]} is {run.status.value.lower()}"
        instance.report_run_failed(run, gone)
        return "unfinished", f"run {run.run_id[:8]} was interrupted: its process is gone"
    if run.status != dg.DagsterRunStatus.SUCCESS:
        return "unfinished", f"run {run.run_id[:8]} ended {run.status.value.lower()}"
    if why:
        return "unfinished", why
    return "done", ""


def _warehouse_unfinished(settings) -> dict[str, str] | None:
    """The warehouse's view of unfinished batches; None if it cannot be read now (no warehouse, a run writing)."""
    import duckdb

    from llambert.inbox import unfinished_batches
    from llambert.warehouse import connect, table_exists

    if not settings.warehouse_path.exists():
        return None
    try:
        con = connect(settings.warehouse_path, read_only=True, retries=1)
    except (duckdb.Error, OSError):
        return None
    try:
        if not (table_exists(con, "raw.inbox_files") and table_exists(con, "ops.stage_runs")):
            return None
        return unfinished_batches(con, settings)
    except duckdb.Error:
        return None
    finally:
        con.close()


def _ingest_on(instance, settings, files: list[str], log_level: str) -> int:
    from dagster_project.definitions import build_definitions
    from dagster_project.jobs import ingest_and_label_job
    from dagster_project.partitions import BATCHES
    from llambert.context import Run
    from llambert.inbox import InboxError, check_inbox_file, claim_file, inbox_lock, known_batches, scan_inbox
    from llambert.warehouse import open_warehouse

    def add_partition(batch) -> None:
        if not instance.has_dynamic_partition(BATCHES, batch.partition):
            instance.add_dynamic_partitions(BATCHES, [batch.partition])

    def say(msg: str) -> None:
        print(f"[llambert] {msg}", file=sys.stderr, flush=True)

    todo = []
    if files:
        try:
            for f in files:  # every file checked before any is claimed: a bad one leaves no batch behind
                check_inbox_file(settings, f)
            claimed = []
            with inbox_lock(settings):  # claim + partition together: the sensor never sees one without the other
                for f in files:
                    batch, new = claim_file(settings, f, move=False)
                    add_partition(batch)
                    claimed.append((f, batch, new))
        except InboxError as e:
            print(f"llambert: {e}", file=sys.stderr)
            return 2
        warehouse = _warehouse_unfinished(settings)
        for f, batch, new in claimed:
            if new:
                todo.append(batch)
                continue
            state, why = batch_state(instance, batch.partition, warehouse)
            if state == "done":
                say(f"{f}: same bytes as batch {batch.partition} (already ingested); nothing to do")
            elif state == "running":
                say(f"{f}: same bytes as batch {batch.partition}, whose {why}; leaving it to that run")
            else:
                if state == "unfinished":
                    say(
                        f"{f}: same bytes as batch {batch.partition}, whose last run did not finish ({why}); "
                        f"running it again"
                    )
                todo.append(batch)
    else:
        with inbox_lock(settings):
            scan = scan_inbox(settings, now=float("inf"))  # by hand: no need to wait for files to settle
            batches = sorted(known_batches(settings).values(), key=lambda b: (b.detected_at, b.partition))
            for b in batches:
                add_partition(b)
        for name, partition in scan.duplicates:
            say(f"{name}: same bytes as batch {partition}; set aside in .duplicates/")
        for name, why in scan.refused:
            say(f"{name}: refused ({why}); it stays in the inbox, no batch was made")
        warehouse = _warehouse_unfinished(settings)
        for b in batches:
            state, why = batch_state(instance, b.partition, warehouse)
            if state == "running":
                say(f"batch {b.partition}: {why}; leaving it to that run")
            elif state == "unfinished":
                say(f"batch {b.partition}: last run did not finish ({why}); running it again")
                todo.append(b)
            elif state == "new":
                todo.append(b)
        if not todo:
            say(f"nothing new or unfinished in {settings.inbox_dir}")
    # The settings validated above are the run's: no re-reading of the file or the environment.
    job = build_definitions(Run.of(settings)).resolve_job_def(ingest_and_label_job.name)
    failed = 0
    for batch in todo:
        say(f"{batch.file_name} -> batch {batch.partition} ...")
        result = job.execute_in_process(
            instance=instance,
            partition_key=batch.partition,
            raise_on_error=False,
            tags={
                "llambert/inbox_file": batch.file_name,
                "llambert/sha256": batch.sha256[:16],
                PROCESS_TAG: process_tag(),
            },
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
        if not result.success:
            failed += 1
            for e in result.all_events:
                if e.is_failure:
                    say(f"step failed: {e.message}")
            say(
                f"batch {batch.partition} failed (run {result.run_id}); see `make ui`, fix the cause and run "
                f"`llambert ingest --now` to run it again"
            )
            continue
        with open_warehouse(settings.warehouse_path, read_only=True) as con:
            row = con.execute(
                "SELECT f.input_rows, f.rejected_rows, f.new_documents, f.known_documents, "
                "(SELECT count(*) FROM predictions.labels p WHERE p.batch = f.batch AND p.checkpoint_id = "
                " (SELECT checkpoint_id FROM students.champion)), a.audited, a.agreement, a.retrain_requested "
                "FROM raw.inbox_files f LEFT JOIN labeling.audit_runs a USING (batch) WHERE f.batch = ?",
                [batch.partition],
            ).fetchone()
        rows, rejected, new_docs, known_docs, labeled, audited, agreement, retrain = row
        audit = (
            f"; audit: {audited} documents, agreement {agreement:.3f}"
            if audited and agreement is not None
            else "; audit: off or nothing to audit"
        )
        print(
            f"[llambert] batch {batch.partition}: {rows} rows ({rejected} rejected), {new_docs} new documents, "
            f"{known_docs} already known, {labeled} labeled by the champion{audit}"
            f"{'; retrain requested' if retrain else ''} (run {result.run_id[:8]})"
        )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m dagster_project.ingest_now",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
