"""README "Your own data in five commands", run as written: the commands are read from the README
block between ``<!-- walkthrough:begin`` and ``<!-- walkthrough:end -->`` and each one is run by
bash in a fresh folder holding a small CSV, so the README and this test cannot drift.

``llambert`` there is a shim for ``sys.executable -m llambert.cli``. The README's config names no
models: the environment points the run at the tiny test models and the tiny suite's bounds
(``LLAMBERT_OVERRIDES``, the settings of tests/conftest.py's ``tiny_settings_dict``), as a CI job
would; the commands themselves are untouched.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

from llambert.config import PROJECT_ROOT
from tests.conftest import tiny_settings_dict

README = PROJECT_ROOT / "README.md"

POSITIVE = ["loved it", "wonderful", "great value", "really good", "the best one I have"]
NEGATIVE = ["hated it", "terrible", "awful quality", "really bad", "the worst one I have"]
THINGS = ["the kettle", "this lamp", "the delivery", "the blender", "this chair", "the app"]


def readme_commands() -> list[str]:
    """The walkthrough's shell commands, in order; a here-document stays one command."""
    text = README.read_text()
    m = re.search(r"<!-- walkthrough:begin[^>]*-->\s*```bash\n(.*?)```\s*<!-- walkthrough:end -->", text, re.S)
    assert m, "README has no walkthrough block"
    commands, lines = [], m.group(1).splitlines()
    while lines:
        line = lines.pop(0)
        if not line.strip():
            continue
        here = re.search(r"<<'?(\w+)'?\s*$", line)
        if here:
            body = []
            while lines and lines[0] != here.group(1):
                body.append(lines.pop(0))
            assert lines, f"here-document {here.group(1)} is not closed"
            line = "\n".join([line, *body, lines.pop(0)])
        commands.append(line)
    return commands


def test_readme_walkthrough_runs_end_to_end(tmp_path, tiny_models):
    commands = readme_commands()
    assert len(commands) == 5 and commands[2] == "llambert run"

    work, bin_dir = tmp_path / "mydata", tmp_path / "bin"
    work.mkdir()
    bin_dir.mkdir()
    shim = bin_dir / "llambert"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m llambert.cli "$@"\n')
    shim.chmod(0o755)
    texts = [f"{thing}: {p}" for thing in THINGS for p in POSITIVE + NEGATIVE]
    with open(work / "reviews.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        writer.writerows([t] for t in texts)

    tiny = tiny_settings_dict(tmp_path, tmp_path, tiny_models)
    overrides = {k: tiny[k] for k in ("sample", "teacher", "student", "checks")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMBERT_")}
    env |= {
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "LLAMBERT_OVERRIDES": json.dumps(overrides),
        "LLAMBERT_MODEL_CACHE": str(tmp_path / "model-cache"),
        "LLAMBERT_NO_PROGRESS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    outputs = []
    for cmd in commands:
        proc = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{cmd}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
    task_out, config_out, run_out, sql_out, status_out = outputs

    assert (work / "feedback.yaml").is_file() and (work / "llambert.yaml").is_file()
    # llambert run: the whole pipeline, with its summary; everything under the config's home.
    assert "llambert run summary" in run_out
    assert f"documents labeled               {len(texts)} of {len(texts)}" in run_out
    assert (work / "llambert-home" / "warehouse.duckdb").is_file()
    # llambert sql ... > labels.csv: one label per text, least confident first.
    with open(work / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["text_start"] for r in rows) == sorted(texts)
    assert {r["label"] for r in rows} <= {"negative", "positive"}
    probs = [float(r["probability"]) for r in rows]
    assert probs == sorted(probs) and all(0.5 <= p <= 1.0 for p in probs)
    # llambert status: the batch is labeled, nothing pending, and a champion is named.
    assert re.search(rf"^initial\s+{len(texts)}\s+0\s+{len(texts)}\s+-\s+{len(texts)}\s+0\b", status_out, re.M), (
        status_out
    )
    assert "pending work: 0 document(s)" in status_out and "champion:" in status_out
