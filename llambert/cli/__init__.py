"""The `llambert` command. Each subcommand lives in its own module here and registers itself.

Errors print one clear line (and exit non-zero); the full traceback goes to a log file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import traceback
from pathlib import Path

LOG = Path.home() / ".cache" / "llambert" / "cli.log"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llambert",
        description="Label a whole corpus for the price of labeling a sample (LlamBERT) over a DuckDB warehouse.",
        epilog="examples:\n"
        "  llambert run --set sample.size=200      the whole pipeline through Dagster, then a summary\n"
        '  llambert sql "FROM views.stage_costs"   SQL on the warehouse (read-only), or --format csv|json\n'
        "  llambert models                         which offline models are installed\n"
        "  llambert COMMAND --help                 each command's options\n\n"
        f"A failure prints one line and exits non-zero; the traceback goes to {LOG}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="llambert YAML file (default: LLAMBERT_CONFIG or ./llambert.yaml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("llambert: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line for people, the detail in the log
        LOG.parent.mkdir(parents=True, exist_ok=True)
        with LOG.open("a") as f:
            f.write(traceback.format_exc() + "\n")
        print(f"llambert {args.command}: {type(e).__name__}: {e}\n(details in {LOG})", file=sys.stderr)
        logging.getLogger("llambert").debug("command failed", exc_info=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
