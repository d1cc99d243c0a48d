"""The charts in materialization metadata are real PNGs inside markdown the Dagster UI renders."""

from __future__ import annotations

import base64
import re
import struct

import pytest

from llambert import plots


def png_size(markdown: str) -> tuple[int, int]:
    m = re.fullmatch(r"!\[[^\]]+\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert m, markdown[:80]
    data = base64.b64decode(m.group(1))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) < 120_000, "keep metadata small"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize(
    "make",
    [
        lambda: plots.bar_chart({"negative": 18, "positive": 22}, "teacher labels in the sample"),
        lambda: plots.bar_chart({}, "nothing yet"),
        lambda: plots.confusion_matrices(
            {"student": [[23, 2], [5, 10]], "teacher": [[0, 0], [0, 0]]}, ["negative", "positive"]
        ),
        lambda: plots.training_curve(
            [1, 2, 3],
            {"train loss": [0.7, 0.5, 0.4], "val loss": [0.69, None, 0.45]},
            {"val accuracy": [0.5, 0.7, 0.8]},
        ),
        lambda: plots.stage_times([("ingest", 160, 1.2), ("teacher", 40, 3.0), ("train", 36, 0.0)]),
    ],
)
def test_charts_are_pngs_in_markdown(make):
    w, h = png_size(make())
    assert 150 < w < 1200 and 100 < h < 900
