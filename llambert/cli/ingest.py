"""`llambert ingest FILE`: new reviews into the inbox (for the sensor), or ingested and labeled at once."""

from __future__ import annotations

import argparse
import subprocess
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="add files of new reviews: queue them in the inbox, or --now ingest and label them",
        description="Copy parquet/CSV/JSONL files into the inbox, where the Dagster inbox sensor turns each into a "
        "batch partition and a run (ingest, label with the champion student, audit). With --now, do that at once "
        "in a Dagster run in this process (no daemon needed); --now without FILE processes what waits in the inbox. "
        "--now also re-runs batches whose last run did not finish (killed or failed; `llambert status` lists them).",
    )
    p.add_argument("files", nargs="*", metavar="FILE")
    p.add_argument("--now", action="store_true", help="ingest and label at once through Dagster")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting for --now, e.g. --set audit.enabled=true",
    )
    p.set_defaults(func=_ingest)


def _ingest(args: argparse.Namespace) -> int:
    if args.now:  # Dagster runs in a child process: the library never imports it
        cmd = [sys.executable, "-m", "dagster_project.ingest_now", *args.files]
        if args.config:
            cmd += ["--config", args.config]
        for s in args.set:
            cmd += ["--set", s]
        rc = subprocess.call(cmd)
        if rc < 0:  # killed by a signal (kill -9, the OOM killer): the batch's run did not finish
            print(
                f"llambert ingest: the ingest process was killed by signal {-rc}; `llambert status` lists the "
                f"unfinished batch and `llambert ingest --now` finishes it",
                file=sys.stderr,
            )
            return 128 - rc
        return rc
    if not args.files:
        print("llambert ingest: name at least one FILE (or use --now to process the inbox)", file=sys.stderr)
        return 2
    from llambert.config import load_settings
    from llambert.inbox import queue_file

    settings = load_settings(args.config)
    for f in args.files:
        target = queue_file(settings, f)
        print(f"queued {f} -> {target}")
    print(
        f"the inbox sensor takes it within {settings.inbox.poll_seconds}s while Dagster's daemon runs "
        f"(`make ui`); or run `llambert ingest --now`"
    )
    return 0
