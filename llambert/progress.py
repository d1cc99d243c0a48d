"""Progress bars with rate and ETA on long work (tqdm), quiet when not on a terminal."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from tqdm.auto import tqdm


@contextlib.contextmanager
def progress(total: int, desc: str, unit: str = "it") -> Iterator[tqdm]:
    """A tqdm bar; on a non-terminal (Dagster logs, CI) it prints a line every ~10% instead."""
    interactive = sys.stderr.isatty() and not os.environ.get("LLAMBERT_NO_PROGRESS")
    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        dynamic_ncols=True,
        mininterval=0.5 if interactive else 30.0,
        disable=total == 0 or bool(os.environ.get("LLAMBERT_NO_PROGRESS")),
        file=sys.stderr,
    )
    try:
        yield bar
    finally:
        bar.close()
