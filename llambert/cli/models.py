"""`llambert models`: what the registry knows and whether it is installed."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the offline models and prepare one",
        description="List the registry's offline models, or prepare (assemble, verify, convert) one.",
    )
    p.add_argument("prepare", nargs="?", metavar="NAME", help="a model to prepare now (registry name, dir or hub id)")
    p.set_defaults(func=_models)


def _models(args: argparse.Namespace) -> int:
    from llambert.config import load_settings
    from llambert.models import OFFLINE_MODELS, install_command, is_installed, resolve_model

    settings = load_settings(args.config)
    if args.prepare:
        m = resolve_model(args.prepare, settings.models_dir)
        print(f"{m.name}: {m.path} ({m.kind}, {m.identity})")
        return 0
    for name in OFFLINE_MODELS:
        state = "installed" if is_installed(name) else f"not installed: {install_command(name)}"
        print(f"{name:32} {state}")
    print(
        f"\n`llambert run` installs a missing one on first use (LLAMBERT_NO_AUTO_INSTALL=1: it does not); "
        f"converted models are kept in {settings.models_dir}"
    )
    return 0
