"""`llambert ui` (what `make ui` runs): Ctrl-C stops `dagster dev` and every process it started, always.

Issue 13 defect 6: `dagster dev` under load ignored SIGINT and SIGTERM for 25 s and left five processes.
The launcher runs it in a process group of its own, forwards the stop signal to the group and kills
what is left after the grace period. Two tests: a stubborn group (a parent and a child that ignore
SIGINT and SIGTERM) must be gone grace + a little after one SIGINT, or at once after a second; and the
real `dagster dev` on a free loopback port with a temp DAGSTER_HOME is gone, every process of it,
within grace + 5 s of SIGINT to the launcher.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from llambert.cli.ui import group_members
from llambert.config import PROJECT_ROOT

GRACE = 4.0


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        for c in _children(todo.pop()):
            out.add(c)
            todo.append(c)
    return out


def _running(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            alive.add(pid)
    return alive


def _wait_gone(launcher: subprocess.Popen, pids: set[int], pgid: int, limit: float) -> float:
    """Seconds until the launcher exited and none of ``pids`` nor of group ``pgid`` runs; fails past ``limit``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if launcher.poll() is not None and not _running(pids) and not group_members(pgid):
            return time.monotonic() - t0
        time.sleep(0.1)
    left = _running(pids) | set(group_members(pgid))
    for pid in left:  # never leave them to the rest of the suite
        os.kill(pid, signal.SIGKILL)
    launcher.kill()
    pytest.fail(
        f"after {limit:.0f}s: launcher {'running' if launcher.poll() is None else 'exited'}, "
        f"processes left: {sorted(left)}"
    )


STUBBORN = textwrap.dedent("""
    import os, signal, sys, time
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    if os.fork() == 0:  # a child that ignores them too (inherited)
        time.sleep(300); os._exit(0)
    print("ready", flush=True)
    time.sleep(300)
""")


@pytest.mark.parametrize("second_sigint", [False, True])
def test_a_group_that_ignores_sigint_is_killed_after_the_grace_period(second_sigint):
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from llambert.cli.ui import run_process_group; "
            f"sys.exit(run_process_group([sys.executable, '-c', {STUBBORN!r}], grace={GRACE}))",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert launcher.stdout.readline().strip() == "ready"
    [leader] = _children(launcher.pid)
    pids = {leader} | _descendants(leader)
    assert len(pids) == 2 and os.getpgid(leader) == leader != os.getpgid(launcher.pid)
    os.kill(launcher.pid, signal.SIGINT)
    if second_sigint:
        time.sleep(0.5)
        os.kill(launcher.pid, signal.SIGINT)
    took = _wait_gone(launcher, pids, leader, GRACE + 5)
    err = launcher.stderr.read()
    assert launcher.returncode == 0, err
    if second_sigint:
        assert took < GRACE and "a second stop signal" in err, (took, err)
    else:
        assert took >= GRACE - 0.5 and f"still running after {GRACE:g}s" in err, (took, err)
    assert "killing them (SIGKILL)" in err and "no process left behind" in err


def test_llambert_ui_stops_dagster_dev_and_all_its_processes_on_sigint(tmp_path):
    from tests.test_browser import free_port, wait_for_server

    cfg = tmp_path / "llambert.yaml"
    cfg.write_text(yaml.safe_dump({"home": str(tmp_path / "home")}))
    port, grace = free_port(), 10.0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLAMBERT_", "DAGSTER_"))}
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        launcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llambert.cli",
                "--config",
                str(cfg),
                "ui",
                "--port",
                str(port),
                "--grace",
                str(grace),
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_server(f"http://127.0.0.1:{port}", launcher, log, timeout=240)
    except BaseException:
        os.killpg(launcher.pid, signal.SIGKILL)
        for child in _children(launcher.pid):
            os.killpg(child, signal.SIGKILL)
        raise
    text = log.read_text()
    assert "Ctrl-C stops the UI and its daemon" in text and f"http://127.0.0.1:{port}" in text
    [dev] = _children(launcher.pid)
    pids = {dev} | _descendants(dev)
    assert len(pids) >= 4, f"dagster dev, webserver, daemon, code server(s): {sorted(pids)}"
    assert os.getpgid(dev) == dev and all(os.getpgid(p) == dev for p in pids)

    os.kill(launcher.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends (make and the launcher)
    took = _wait_gone(launcher, pids, dev, grace + 5)
    assert launcher.returncode == 0, log.read_text()[-3000:]
    assert "no process left behind" in log.read_text()
    print(f"dagster dev ({len(pids)} processes) stopped {took:.1f}s after SIGINT")
