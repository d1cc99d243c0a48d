"""Sensors: new files in the inbox become partitions and runs; audits that ask for it retrain the student.

The inbox sensor never opens the DuckDB warehouse (one writing process at a time, and runs hold
it): its registry is the inbox's ``.batches/`` folder (see ``llambert/inbox.py``) plus the
instance's dynamic partitions. A claimed file whose partition does not exist yet (say the daemon
stopped between claiming and adding it) is picked up again on the next tick, and the run key
(= partition key) keeps Dagster from launching a batch twice. ``llambert ingest --now`` claims a
file and adds its partition under the inbox lock, and the sensor decides what lacks a partition
under that lock too: a file claimed by ``--now`` is never launched again by the sensor.
"""

from __future__ import annotations

import dagster as dg

from dagster_project.jobs import ingest_and_label_job, train_student_job
from dagster_project.partitions import BATCHES, batches_partitions
from dagster_project.resources import LlambertResource, settings_of
from llambert.context import Run

AUDIT_KEY = dg.AssetKey(["labeling", "audit_labels"])


def inbox_sensor_result(instance: dg.DagsterInstance, settings) -> dg.SensorResult | dg.SkipReason:
    """Claim settled new inbox files; request a partition and a run for each batch without one."""
    from llambert.inbox import inbox_lock, known_batches, scan_inbox

    with inbox_lock(settings):  # `ingest --now` claims + adds the partition under it: never half of that
        scan = scan_inbox(settings)
        existing = set(instance.get_dynamic_partitions(BATCHES))
        todo = sorted(
            (b for b in known_batches(settings).values() if b.partition not in existing),
            key=lambda b: (b.detected_at, b.partition),
        )
    if not todo:
        parts = []
        if scan.duplicates:
            parts.append("duplicates of claimed files: " + ", ".join(f"{f} (= {p})" for f, p in scan.duplicates))
        if scan.waiting:
            parts.append("still being written: " + ", ".join(scan.waiting))
        if scan.ignored:
            parts.append("not parquet/CSV/JSONL: " + ", ".join(scan.ignored))
        if scan.refused:
            parts.append("refused: " + "; ".join(f"{f} ({why})" for f, why in scan.refused))
        return dg.SkipReason("; ".join(parts) or f"no new file in {settings.inbox_dir}")
    keys = [b.partition for b in todo]
    return dg.SensorResult(
        dynamic_partitions_requests=[batches_partitions.build_add_request(keys)],
        run_requests=[
            dg.RunRequest(
                partition_key=b.partition,
                run_key=b.partition,
                tags={"llambert/inbox_file": b.file_name, "llambert/sha256": b.sha256[:16]},
            )
            for b in todo
        ],
        cursor=keys[-1],
    )


def build_sensors(resource: LlambertResource | Run) -> list[dg.SensorDefinition]:
    """The inbox and retrain sensors; the poll interval comes from ``inbox.poll_seconds``."""
    try:
        poll = settings_of(resource).inbox.poll_seconds
    except Exception:  # a broken config must not stop the code location from loading; runs will say why
        poll = 30

    @dg.sensor(
        name="inbox_sensor",
        job=ingest_and_label_job,
        minimum_interval_seconds=poll,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Each new parquet/CSV/JSONL file in the inbox becomes a batch partition and an "
        "ingest_and_label_batch run; a file with the same bytes as a claimed one is set aside in .duplicates/.",
    )
    def inbox_sensor(context: dg.SensorEvaluationContext, llambert: LlambertResource):
        return inbox_sensor_result(context.instance, llambert.settings())

    @dg.asset_sensor(
        asset_key=AUDIT_KEY,
        name="retrain_sensor",
        job=train_student_job,
        minimum_interval_seconds=poll,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="With audit.auto_retrain: launches train_student when a batch audit requests a retrain "
        "(at most once per newest checkpoint).",
    )
    def retrain_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry, llambert: LlambertResource):
        mat = asset_event.asset_materialization
        meta = {k: getattr(v, "value", v) for k, v in (mat.metadata if mat else {}).items()}
        if not meta.get("retrain_requested"):
            return dg.SkipReason(f"audit of batch {mat.partition if mat else '?'} requested no retrain")
        if not llambert.settings().audit.auto_retrain:
            return dg.SkipReason(f"retrain requested ({meta.get('retrain_reason')}) but audit.auto_retrain is off")
        return dg.RunRequest(
            run_key=f"retrain-after-{meta.get('newest_checkpoint')}",
            tags={"llambert/retrain_reason": str(meta.get("retrain_reason"))[:200], "llambert/warehouse": "write"},
        )

    return [inbox_sensor, retrain_sensor]
