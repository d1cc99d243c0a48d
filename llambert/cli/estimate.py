"""`llambert estimate`: time the configured teacher and student on a few documents of the configured
corpus, then project the run's teacher, training and corpus-labeling time (llambert/estimate.py)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "estimate",
        help="measure the configured teacher and student on N documents of your corpus; project the run",
        description="Before paying for a run: label N documents of the configured corpus (stratified by length) "
        "with the configured teacher, time the student on them, and print the projected teacher, training and "
        "corpus-labeling time for sample.size (and half and double), with the assumptions. The teacher's answers "
        "go to the warehouse's cache, so the run that follows does not pay for them again.",
        epilog="examples:\n  llambert estimate\n  llambert estimate -n 40 --set sample.size=2000\n"
        "  llambert --config my.yaml estimate --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-n",
        "--docs",
        type=int,
        default=20,
        metavar="N",
        help="documents to measure (default 20; more: a steadier figure, a longer wait)",
    )
    p.add_argument("--seed", type=int, default=0, help="which documents of each length bin (default 0)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set sample.size=2000 (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=_estimate)


def _estimate(args: argparse.Namespace) -> int:
    import yaml

    from llambert.config import load_settings
    from llambert.estimate import estimate, format_estimate

    overrides: dict = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if not _ or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. sample.size=2000")
        node = overrides
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    if args.docs < 1:
        raise ValueError("-n must be at least 1")
    settings = load_settings(args.config, overrides or None)
    result = estimate(settings, n=args.docs, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print("\n".join(format_estimate(result)))
    return 0
