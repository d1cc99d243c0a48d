"""`llambert run`: the whole pipeline through Dagster (the library itself never imports Dagster)."""

from __future__ import annotations

import argparse
import subprocess
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run every step of the pipeline through Dagster and print a summary",
        description="Ingest, label the sample with the LLM, train the student, label the corpus, evaluate.",
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting, e.g. --set sample.size=200"
    )
    p.add_argument("--batch", default="initial", help="corpus batch (partition) to ingest and label")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cmd = [sys.executable, "-m", "dagster_project.run", "--batch", args.batch]
    if args.config:
        cmd += ["--config", args.config]
    for s in args.set:
        cmd += ["--set", s]
    return subprocess.call(cmd)
