"""Progress on long work: a tqdm bar on a terminal, plain log lines everywhere else.

On a terminal (stderr is a TTY and ``LLAMBERT_NO_PROGRESS`` is unset) a tqdm bar with rate and ETA.
Elsewhere (Dagster compute logs, CI, ``nohup``, ``LLAMBERT_NO_PROGRESS=1``) one plain line every
``LLAMBERT_PROGRESS_INTERVAL`` seconds (default 30; 0 turns the lines off), from a timer, so a step
that makes no visible progress still says so::

    [llambert] teacher transformers/generate: 120/1,000 prompt (12%; 31% of prompt chars), 3.70 s/prompt,
    ETA 0:16:28 (by prompt chars), elapsed 0:07:24

Work of uneven size passes ``weights`` (the teacher: each prompt's length, longest first): then the
ETA is elapsed x remaining weight / weight done, not by count, which would overstate the time left
while the long prompts go first. Lines also go to every sink registered with :func:`also_log_to`
(the Dagster assets send them to the run log). Work shorter than one interval prints nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from tqdm.auto import tqdm

_SINKS: list[Callable[[str], None]] = []


@contextlib.contextmanager
def also_log_to(sink: Callable[[str], None]) -> Iterator[None]:
    """Send the plain progress lines to ``sink`` too (e.g. a Dagster ``context.log.info``) while inside."""
    _SINKS.append(sink)
    try:
        yield
    finally:
        _SINKS.remove(sink)


def emit(text: str, stream=None) -> None:
    """One plain line to stderr (or ``stream``) and to every registered sink."""
    try:
        print(text, file=stream or sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
    for sink in list(_SINKS):
        try:
            sink(text)
        except Exception:  # a log sink must never break the work
            pass


def interval_s() -> float:
    try:
        return float(os.environ.get("LLAMBERT_PROGRESS_INTERVAL", "30"))
    except ValueError:
        return 30.0


def interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("LLAMBERT_NO_PROGRESS")


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Counts done out of ``total`` (and weight done out of the weights' sum); computes rate and ETA.

    ``clock`` is injectable so the figures can be tested without waiting.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "it",
        weights: Sequence[float] | None = None,
        weight_unit: str = "weight",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.weights = list(weights) if weights is not None else None
        if self.weights is not None and len(self.weights) != total:
            raise ValueError(f"{len(self.weights)} weights for {total} items")
        self.weight_total = float(sum(self.weights)) if self.weights is not None else None
        self.weight_unit = weight_unit
        self.clock = clock
        self.t0 = clock()
        self.n = 0
        self.weight_done = 0.0
        self.postfix = ""

    def update(self, n: int = 1, weight: float | None = None) -> None:
        """``n`` more items done; their weight defaults to the next ``n`` weights (work done in order)."""
        if self.weights is not None:
            self.weight_done += float(sum(self.weights[self.n : self.n + n]) if weight is None else weight)
        self.n += n

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    @property
    def elapsed(self) -> float:
        return self.clock() - self.t0

    @property
    def fraction(self) -> float:
        """How much of the work is done: by weight when there are weights, else by count."""
        if self.weights is not None:
            return self.weight_done / self.weight_total if self.weight_total else (1.0 if self.n >= self.total else 0.0)
        return self.n / self.total if self.total else 1.0

    def eta(self) -> float | None:
        """Seconds left at the rate so far (by weight when there are weights); None before anything is done."""
        f = self.fraction
        if f <= 0:
            return None
        return self.elapsed * (1 - f) / f

    def rate(self) -> str:
        if not self.n or self.elapsed <= 0:
            return f"? {self.unit}/s"
        per_s = self.n / self.elapsed
        return f"{per_s:.2f} {self.unit}/s" if per_s >= 1 else f"{1 / per_s:.2f} s/{self.unit}"

    def line(self) -> str:
        done = (
            f"{self.n:,}/{self.total:,} {self.unit} ({self.n / self.total:.0%}"
            if self.total
            else f"{self.n:,} {self.unit} (100%"
        )
        by = ""
        if self.weights is not None:
            done += f"; {self.fraction:.0%} of {self.weight_unit}"
            by = f" (by {self.weight_unit})"
        out = (
            f"[llambert] {self.desc}: {done}), {self.rate()}, ETA {_hms(self.eta())}{by}, elapsed {_hms(self.elapsed)}"
        )
        return out + (f", {self.postfix}" if self.postfix else "")


class _Lines:
    """A timer thread that writes :meth:`Progress.line` every ``interval`` seconds while the work runs."""

    def __init__(self, prog: Progress, interval: float, stream) -> None:
        self.prog, self.interval, self.stream = prog, interval, stream
        self.stop = threading.Event()
        self.printed = 0
        self.thread = threading.Thread(target=self._run, name=f"progress {prog.desc}", daemon=True)
        self.thread.start()

    def emit(self) -> None:
        emit(self.prog.line(), self.stream)
        self.printed += 1

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self.emit()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        if self.printed:  # the end of work that was long enough to report on
            self.emit()


class _Bar:
    """The terminal form: a tqdm bar (with the weighted ETA in its postfix when there are weights)."""

    def __init__(self, prog: Progress) -> None:
        self.prog = prog
        fmt = None
        if prog.weights is not None:
            fmt = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"
        self.tqdm = tqdm(
            total=prog.total,
            desc=prog.desc,
            unit=prog.unit,
            dynamic_ncols=True,
            mininterval=0.5,
            disable=prog.total == 0,
            file=sys.stderr,
            bar_format=fmt,
        )

    def update(self, n: int, weight: float | None) -> None:
        self.tqdm.update(n)
        if self.prog.weights is not None:
            self.tqdm.set_postfix_str(self._postfix(), refresh=False)

    def _postfix(self) -> str:
        eta = f"ETA {_hms(self.prog.eta())} by {self.prog.weight_unit}"
        return f"{eta}, {self.prog.postfix}" if self.prog.postfix else eta

    def set_postfix_str(self, s: str, refresh: bool) -> None:
        self.tqdm.set_postfix_str(self._postfix() if self.prog.weights is not None else s, refresh=refresh)

    def close(self) -> None:
        self.tqdm.close()


class ProgressHandle:
    """What ``with progress(...) as bar`` gives: ``bar.update(n[, weight])`` and ``bar.set_postfix_str(s)``."""

    def __init__(self, prog: Progress, bar: _Bar | None) -> None:
        self.progress, self._bar = prog, bar

    def update(self, n: int = 1, weight: float | None = None) -> None:
        self.progress.update(n, weight)
        if self._bar is not None:
            self._bar.update(n, weight)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.progress.set_postfix_str(s)
        if self._bar is not None:
            self._bar.set_postfix_str(s, refresh)


@contextlib.contextmanager
def progress(
    total: int, desc: str, unit: str = "it", weights: Sequence[float] | None = None, weight_unit: str = "weight"
) -> Iterator[ProgressHandle]:
    """A bar on a terminal; plain lines every ``LLAMBERT_PROGRESS_INTERVAL`` s elsewhere (see the module doc)."""
    prog = Progress(total, desc, unit, weights, weight_unit)
    bar = lines = None
    if interactive():
        bar = _Bar(prog)
    elif total > 0 and interval_s() > 0:
        lines = _Lines(prog, interval_s(), sys.stderr)
    try:
        yield ProgressHandle(prog, bar)
    finally:
        if bar is not None:
            bar.close()
        if lines is not None:
            lines.close()
