"""Progress without a terminal (issue 16, part 2): plain lines on a timer, ETA weighted by the work's size."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from llambert.config import PROJECT_ROOT
from llambert.progress import Progress, also_log_to, progress


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_weighted_eta_follows_the_work_done_not_the_count():
    """Longest first, as the teacher answers: 4 prompts of 400 chars then 12 of 100 (1,600 + 1,200 chars).
    At 4 s per 400-char prompt (1 s per 100 chars), after the 4 long ones 16 s passed, 57% of the chars are
    done and 12 s are left; a count-based ETA would say 48 s."""
    clock = _Clock()
    weights = [400] * 4 + [100] * 12
    p = Progress(len(weights), "teacher", "prompt", weights=weights, weight_unit="prompt chars", clock=clock)
    assert p.eta() is None
    for _ in range(4):
        clock.t += 4.0
        p.update(1)  # weight taken from the list, in order
    assert p.fraction == pytest.approx(1600 / 2800)
    assert p.eta() == pytest.approx(12.0)
    assert p.elapsed * (p.total - p.n) / p.n == pytest.approx(48.0)  # what a count-based ETA would say
    line = p.line()
    assert line == (
        "[llambert] teacher: 4/16 prompt (25%; 57% of prompt chars), 4.00 s/prompt, ETA 0:00:12 "
        "(by prompt chars), elapsed 0:00:16"
    )
    clock.t += 6.0
    p.update(6, weight=600)  # an explicit weight
    assert p.eta() == pytest.approx(22.0 * 600 / 2200)
    unweighted = Progress(10, "student labels batch initial", "doc", clock=clock)
    clock.t += 5.0
    unweighted.update(5)
    assert unweighted.eta() == pytest.approx(5.0) and "2.00 s/doc" not in unweighted.line()
    assert "1.00 doc/s" in unweighted.line()


def test_without_a_terminal_lines_come_on_a_timer_and_reach_the_sinks(monkeypatch, capsys):
    monkeypatch.setenv("LLAMBERT_PROGRESS_INTERVAL", "0.1")
    monkeypatch.setenv("LLAMBERT_NO_PROGRESS", "1")
    got: list[str] = []
    import time

    with also_log_to(got.append):
        with progress(3, "train llm epoch 1", "ex") as bar:
            time.sleep(0.35)  # no update at all: the timer still says where it is
            bar.update(3)
    err = capsys.readouterr().err.splitlines()
    assert len(err) >= 3 and err == got
    assert err[0].startswith("[llambert] train llm epoch 1: 0/3 ex (0%), ? ex/s, ETA ?")
    assert err[-1].startswith("[llambert] train llm epoch 1: 3/3 ex (100%)")


def test_a_non_tty_run_prints_lines_and_short_work_prints_nothing():
    """A child with stderr to a pipe (not a terminal): weighted lines every interval; with the default interval
    (30 s) a short loop prints nothing, as before."""
    code = (
        "import time\nfrom llambert.progress import progress\n"
        "w = [400] * 4 + [100] * 12\n"
        "with progress(16, 'teacher openai/generate', 'prompt', weights=w, weight_unit='prompt chars') as bar:\n"
        "    for x in w:\n        time.sleep(x / 4000); bar.update(1)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMBERT_")}
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env | {"LLAMBERT_PROGRESS_INTERVAL": "0.3"},
    )
    lines = r.stderr.splitlines()
    assert r.returncode == 0 and len(lines) >= 3, r.stderr
    assert all(ln.startswith("[llambert] teacher openai/generate: ") and "(by prompt chars)" in ln for ln in lines)
    assert "16/16 prompt (100%; 100% of prompt chars)" in lines[-1]
    quiet = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, env=env
    )
    assert quiet.returncode == 0 and quiet.stderr == ""
