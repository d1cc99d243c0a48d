"""`llambert ui`: the Dagster UI (`dagster dev`) that Ctrl-C always stops, leaving no process behind.

`dagster dev` runs the webserver, the daemon and their code servers as child processes; under load it
was seen ignoring SIGINT and SIGTERM for 25 s and leaving five processes. Here it runs in a process
group of its own: SIGINT, SIGTERM or SIGHUP to this launcher is forwarded to the whole group, and
whatever is still running ``--grace`` seconds later (or at a second Ctrl-C) is killed with SIGKILL.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ui",
        help="the Dagster UI (dagster dev) on 127.0.0.1; Ctrl-C stops it and its daemon",
        description="Start `dagster dev` with the project's Dagster instance. Ctrl-C (or SIGTERM) "
        "stops the UI, its daemon and code servers; anything still running after --grace seconds "
        "is killed.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=3000, help="port (default 3000)")
    p.add_argument(
        "--grace", type=float, default=10.0, help="seconds between Ctrl-C and killing whatever is left (default 10)"
    )
    p.set_defaults(func=_ui)


def _ui(args: argparse.Namespace) -> int:
    from dagster_project.instance import ensure_dagster_home
    from llambert.config import PROJECT_ROOT, load_settings

    settings = load_settings(args.config)
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(ensure_dagster_home(settings.home / "dagster_home"))
    if args.config:  # the code location reads the same settings file
        env["LLAMBERT_CONFIG"] = str(Path(args.config).resolve())
    cmd = [
        str(Path(sys.executable).parent / "dagster"),
        "dev",
        "-w",
        str(PROJECT_ROOT / "workspace.yaml"),
        "-h",
        args.host,
        "-p",
        str(args.port),
    ]
    print(
        f"llambert ui: Dagster UI on http://{args.host}:{args.port} (DAGSTER_HOME={env['DAGSTER_HOME']}).\n"
        f"llambert ui: Ctrl-C stops the UI and its daemon (anything left after {args.grace:g}s is killed; "
        "a second Ctrl-C kills at once).",
        file=sys.stderr,
        flush=True,
    )
    return run_process_group(cmd, grace=args.grace, cwd=PROJECT_ROOT, env=env)


def group_members(pgid: int) -> list[int]:
    """Running (not zombie) processes of a process group."""
    proc = Path("/proc")
    if not proc.is_dir():  # no /proc (macOS): alive while the group can be signalled
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def run_process_group(cmd: list[str], grace: float = 10.0, **popen) -> int:
    """Run ``cmd`` in a new process group; stop signals go to the whole group, then SIGKILL after ``grace``.

    Returns the command's exit status when it ends on its own (after stopping what it left behind),
    0 when it was stopped on request.
    """
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in STOP_SIGNALS}
    try:
        child = subprocess.Popen(cmd, start_new_session=True, **popen)
        pgid = child.pid
        while child.poll() is None and not received:
            try:
                child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        if not received:  # it ended by itself: nothing of it may stay behind
            code = child.returncode
            _stop(pgid, signal.SIGTERM, grace, received, child)
            return code
        sig = received[0]
        name = signal.Signals(sig).name
        print(
            f"llambert ui: {name}: stopping dagster dev and its processes ({len(group_members(pgid))} running) ...",
            file=sys.stderr,
            flush=True,
        )
        _stop(pgid, sig if sig != signal.SIGHUP else signal.SIGTERM, grace, received, child)
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stop(pgid: int, sig: int, grace: float, received: list[int], child: subprocess.Popen) -> None:
    """Send ``sig`` to the group, wait up to ``grace`` s (or a further stop signal), then SIGKILL what is left."""
    asked = len(received)
    _signal_group(pgid, sig)
    deadline = time.monotonic() + grace
    while group_members(pgid) and time.monotonic() < deadline and len(received) <= asked:
        _reap(child)
        time.sleep(0.1)
    left = group_members(pgid)
    if left:
        why = "a second stop signal" if len(received) > asked else f"still running after {grace:g}s"
        print(f"llambert ui: {len(left)} process(es) {why}: killing them (SIGKILL)", file=sys.stderr, flush=True)
        _signal_group(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while group_members(pgid) and time.monotonic() < deadline:
            _reap(child)
            time.sleep(0.05)
    _reap(child)
    if child.returncode is None:
        child.wait(timeout=5)
    print(
        "llambert ui: stopped; no process left behind."
        if not group_members(pgid)
        else f"llambert ui: processes {group_members(pgid)} did not die",
        file=sys.stderr,
        flush=True,
    )


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _reap(child: subprocess.Popen) -> None:
    child.poll()  # the leader, once dead, must not linger as a zombie of ours
