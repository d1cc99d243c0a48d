"""Run the whole LlamBERT pipeline through Dagster, in order, and print a summary.

``python -m dagster_project.run`` (what ``make run`` calls): ingest the initial batch, label the
sample with the LLM, parse, train a student, label the corpus, evaluate. Each step is a job
run on the project's persistent instance, so every run shows up in ``make ui``.
"""

from __future__ import annotations

import argparse
import sys
import time

from dagster_project.instance import ensure_dagster_home
from llambert.config import ConfigError, load_settings, parse_overrides
from llambert.models import ModelNotAvailable
from llambert.preflight import check_ready

STEPS = [("ingest_batch", True), ("teach_and_train", False), ("label_corpus", True), ("evaluate", False)]


def run_pipeline(
    config_path: str | None = None, overrides: dict | None = None, batch: str = "initial", log_level: str = "WARNING"
) -> int:
    settings = load_settings(config_path, overrides)  # validated once: every job below gets this object
    check_ready(settings)
    from llambert.models.install import configured_models, ensure_models

    # Offline models not installed yet are installed and prepared now, before any work (issue 16).
    ensure_models(configured_models(settings), settings.models_dir)
    ensure_dagster_home(settings.home / "dagster_home")

    import dagster as dg

    from dagster_project.definitions import build_definitions
    from dagster_project.partitions import BATCHES
    from llambert import pipeline
    from llambert.context import Run
    from llambert.reporting import summary_lines

    instance = dg.DagsterInstance.get()
    if not instance.has_dynamic_partition(BATCHES, batch):
        instance.add_dynamic_partitions(BATCHES, [batch])
    run = Run.of(settings)  # the resource every asset gets: no re-reading of the file or the environment
    defs = build_definitions(run)
    t_all = time.perf_counter()
    run_ids: list[str] = []
    for job_name, partitioned in STEPS:
        print(f"[llambert] {job_name}{f' (batch {batch})' if partitioned else ''} ...", file=sys.stderr, flush=True)
        t_job = time.perf_counter()
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance,
            partition_key=batch if partitioned else None,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
        if not result.success:
            setting = _config_error(result)
            if setting:  # a setting found wrong mid-run (sample.pool_splits, student.recipe, ...): as at the start
                raise ConfigError(setting)
            failed = [e for e in result.all_events if e.is_failure or e.event_type_value == "ASSET_CHECK_EVALUATION"]
            for e in failed:
                if e.is_failure:
                    print(f"[llambert] step failed: {e.message}", file=sys.stderr)
            for ev in result.get_asset_check_evaluations():
                if not ev.passed:
                    print(
                        f"[llambert] check {ev.check_name} on {ev.asset_key.to_user_string()} failed: {ev.description}",
                        file=sys.stderr,
                    )
            print(
                f"[llambert] job {job_name} failed (run {result.run_id}); see `make ui` for the full log.",
                file=sys.stderr,
            )
            return 1
        print(
            f"[llambert] {job_name} done in {time.perf_counter() - t_job:.1f}s (run {result.run_id[:8]})",
            file=sys.stderr,
        )
        run_ids.append(result.run_id)
    with run.warehouse() as con:
        report = pipeline.build_report(con, settings)
        stages = con.execute(
            "SELECT stage, rows, seconds FROM (SELECT DISTINCT ON (stage, partition) * FROM ops.stage_runs "
            "ORDER BY stage, partition, finished_at DESC) ORDER BY CASE stage WHEN 'ingest' THEN 1 WHEN 'sample' THEN 2 "
            "WHEN 'teacher' THEN 3 WHEN 'parse' THEN 4 WHEN 'train' THEN 5 WHEN 'predict' THEN 6 ELSE 7 END"
        ).fetchall()
        from llambert.contracts import failures

        warned = failures(con, run_ids)  # non-blocking contracts that failed: said here, not only in the UI
        candidates = pipeline.candidate_summary(con)
    stages.append(("total (this run)", None, time.perf_counter() - t_all))
    print("\n".join(summary_lines(report, str(settings.warehouse_path), stages, candidates)))
    for table, partition, contract, description in warned:
        print(
            f"[llambert] contract warning: {table}{f' [{partition}]' if partition else ''} {contract}: {description}",
            file=sys.stderr,
        )
    return 0


def _config_error(result) -> str | None:
    """The message of a :class:`ConfigError` that failed a step of this run, if one did."""
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        error = event.step_failure_data.error
        while error is not None:
            if error.cls_name == ConfigError.__name__:
                return error.message.strip().removeprefix(f"{ConfigError.__module__}.").removeprefix("ConfigError: ")
            error = error.cause
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m dagster_project.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", help="llambert YAML file (default: LLAMBERT_CONFIG or ./llambert.yaml)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set sample.size=200 --set teacher.model=qwen2.5-coder-0.5b-instruct",
    )
    ap.add_argument("--batch", default="initial", help="the corpus batch (partition) to ingest and label")
    args = ap.parse_args(argv)
    try:
        overrides = parse_overrides(args.set)
        return run_pipeline(args.config, overrides or None, args.batch)
    except ConfigError as e:
        print(f"llambert: {e}", file=sys.stderr)
        return 2
    except ModelNotAvailable as e:
        print(f"llambert: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
