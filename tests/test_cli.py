"""The `llambert` command as people use it: help, `llambert sql`, errors, progress bars.

Every command runs as a real subprocess on a real DuckDB warehouse (ingested from the small
IMDb corpus; no models needed).
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import duckdb
import pytest
import yaml

from llambert import pipeline
from llambert.cli import build_parser
from llambert.cli.sql import format_table
from llambert.config import PROJECT_ROOT, load_settings
from llambert.warehouse import open_warehouse

SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001


def llambert(*args: str, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llambert.cli", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory, small_corpus) -> Path:
    root = tmp_path_factory.mktemp("cli")
    settings = load_settings(overrides={"home": str(root / "home"), "data_dir": str(small_corpus)})
    with open_warehouse(settings.warehouse_path) as con:
        pipeline.ingest_batch(con, settings)
    return settings.warehouse_path


def test_top_level_help_lists_every_subcommand():
    r = llambert("--help")
    assert r.returncode == 0
    assert "sql" in SUBCOMMANDS and "run" in SUBCOMMANDS
    for name in SUBCOMMANDS:
        assert re.search(rf"^\s+{name}\s+\S", r.stdout, re.M), f"{name} has no one-line help in:\n{r.stdout}"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(name):
    r = llambert(name, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: llambert {name}")
    assert len(r.stdout.splitlines()) > 3


def test_no_command_prints_help_and_fails():
    r = llambert()
    assert r.returncode == 2 and "usage: llambert" in r.stdout


def test_sql_prints_an_aligned_table(warehouse):
    r = llambert(
        "sql",
        "--warehouse",
        str(warehouse),
        "SELECT split, count(*) AS documents, NULL AS nothing FROM raw.corpus GROUP BY 1 ORDER BY 1",
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["split", "documents", "nothing"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    body = lines[2:-1]
    assert [l.split()[0] for l in body] == ["test", "train", "unsup"]
    assert {l.split()[1] for l in body} == {"40", "60"}
    # Numbers right-aligned: every count ends in the same column, under the header's end.
    ends = {l.index(l.split()[1]) + len(l.split()[1]) for l in body}
    assert ends == {lines[0].index("documents") + len("documents")}
    assert "NULL" in body[0]
    assert lines[-1] == "(3 rows)"


def test_sql_csv_and_json_match_duckdb(warehouse):
    q = "SELECT doc_id, split, gold_label, n_copies FROM raw.corpus ORDER BY doc_id"
    con = duckdb.connect(str(warehouse), read_only=True)
    expected = con.execute(q).fetchall()
    con.close()
    r = llambert("sql", "--warehouse", str(warehouse), "--format", "csv", q)
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["doc_id", "split", "gold_label", "n_copies"]
    assert [tuple(x) for x in rows[1:]] == [(d, s, "" if g is None else str(g), str(n)) for d, s, g, n in expected]
    r = llambert("sql", "--warehouse", str(warehouse), "--format", "json", q)
    assert json.loads(r.stdout) == [dict(zip(["doc_id", "split", "gold_label", "n_copies"], row)) for row in expected]


def test_sql_reads_stdin_and_files_and_the_saved_views(warehouse, tmp_path):
    r = llambert("sql", "--warehouse", str(warehouse), "-", stdin="SELECT stage, rows_total FROM views.stage_costs")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[2].split() == ["ingest", "160"]
    f = tmp_path / "q.sql"
    f.write_text("SELECT 41 + 1 AS answer")
    r = llambert("sql", "--warehouse", str(warehouse), "-f", str(f), "--format", "json")
    assert json.loads(r.stdout) == [{"answer": 42}]


def test_sql_is_read_only_unless_write(warehouse, tmp_path):
    home = tmp_path / "user"
    r = llambert("sql", "--warehouse", str(warehouse), "DELETE FROM raw.corpus", env={"HOME": str(home)})
    assert r.returncode == 1
    first = r.stderr.splitlines()[0]
    assert first.startswith("llambert sql: PermissionError") and "--write" in first
    log = home / ".cache" / "llambert" / "cli.log"
    assert "Traceback" in log.read_text() and "read-only" in log.read_text()
    assert f"details in {log}" in r.stderr
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute("SELECT count(*) FROM raw.corpus").fetchone()[0] == 160
    con.close()

    r = llambert(
        "sql", "--warehouse", str(warehouse), "--write", "CREATE OR REPLACE TABLE ops.cli_note AS SELECT 7 AS x"
    )
    assert r.returncode == 0, r.stderr
    r = llambert("sql", "--warehouse", str(warehouse), "--format", "json", "FROM ops.cli_note")
    assert json.loads(r.stdout) == [{"x": 7}]


def test_failures_are_one_clear_line_and_nonzero(warehouse, tmp_path):
    env = {"HOME": str(tmp_path)}
    r = llambert("sql", "--warehouse", str(tmp_path / "missing.duckdb"), "SELECT 1", env=env)
    assert r.returncode == 1
    assert r.stderr.splitlines()[0].startswith("llambert sql: FileNotFoundError: no warehouse at")
    r = llambert("sql", "--warehouse", str(warehouse), "SELECT nope FROM raw.corpus", env=env)
    assert r.returncode == 1 and "nope" in r.stderr.splitlines()[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"sample": {"size": -3}}))
    r = llambert("--config", str(bad), "sql", "SELECT 1", env=env)
    assert r.returncode == 1 and "sample.size" in r.stderr
    assert "Traceback" not in r.stderr


def test_format_table_cuts_long_cells_and_says_what_it_left_out():
    out = format_table(["id", "text"], [(i, "x" * 100) for i in range(5)], max_rows=3, max_width=10).splitlines()
    assert out[2].split() == ["0", "x" * 9 + "…"]
    assert len(out) == 2 + 3 + 1
    assert out[-1] == "(5 rows, first 3 shown; --max-rows 0 shows all)"


def test_progress_bar_shows_rate_and_eta_in_a_terminal():
    """On a terminal the bars show a rate and an ETA; LLAMBERT_NO_PROGRESS turns them off."""
    code = (
        "import time\nfrom llambert.progress import progress\n"
        "with progress(40, 'student labels batch initial', 'doc') as bar:\n"
        "    for _ in range(40):\n        time.sleep(0.03); bar.update(1)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LLAMBERT_NO_PROGRESS"}
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a terminal 120 columns wide
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
    )
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=30)
    os.close(master)
    text = out.decode(errors="replace")
    assert "student labels batch initial" in text
    assert re.search(r"\d+/40 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ ?doc/s\]", text), text[-500:]
    quiet = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env={**env, "LLAMBERT_NO_PROGRESS": "1"},
    )
    assert quiet.stderr == ""
