"""kill -9 of `llambert run` during teacher labeling, student training and corpus prediction, then the
same command again (issue 13: "nothing lost, nothing paid twice").

A real Dagster instance and DuckDB warehouse in tmp, the tiny student, and as the teacher a loopback
OpenAI-compatible server that this test starts: it counts every prompt it is sent (the spend), answers
each by a hash of the document, stops by itself after a few minutes and refuses past a bounded number of
requests. The whole process group of `llambert run` is killed with SIGKILL at a point it is provably in:
the teacher while a batch of requests is held by the server, training and prediction at a line printed by
tests/kill_points/sitecustomize.py, which then blocks. After the re-run: every corpus document has exactly
one prediction, every sampled document one answer, no answer was paid for twice beyond the killed run's
uncommitted ones (at most commit_every), and labeling.llm_runs accounts every prompt the server was sent.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest
import yaml

from llambert.config import PROJECT_ROOT
from tests.conftest import tiny_settings_dict

SAMPLE, BATCH, COMMIT_EVERY = 40, 4, 8
MAX_REQUESTS, LIFETIME_S = 200, 300.0


class _Teacher:
    """Chat-completions on 127.0.0.1. Requests past ``hold_after`` are held (never answered) and
    ``batch_held`` is set once a whole batch of them arrived: that batch is in flight."""

    def __init__(self, hold_after: int | None = None) -> None:
        self.total, self.asked = 0, {}
        self.lock, self.release, self.batch_held = threading.Lock(), threading.Event(), threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["messages"][-1]["content"]
                with outer.lock:
                    outer.total += 1
                    n = outer.total
                    outer.asked[doc] = outer.asked.get(doc, 0) + 1
                if n > MAX_REQUESTS:
                    return self._send(410, b"too many requests for this test")
                if hold_after is not None and n > hold_after and not outer.release.is_set():
                    if n == hold_after + BATCH:
                        outer.batch_held.set()
                    outer.release.wait(LIFETIME_S)
                    return  # the client is gone (killed): no answer
                label = "positive" if hashlib.md5(doc.encode()).digest()[0] % 2 else "negative"
                self._send(
                    200,
                    json.dumps(
                        {
                            "id": "x",
                            "object": "chat.completion",
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": label},
                                    "finish_reason": "stop",
                                }
                            ],
                            "usage": {"prompt_tokens": 11, "completion_tokens": 1},
                        }
                    ).encode(),
                )

            def _send(self, status, data):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self._timer = threading.Timer(LIFETIME_S, self.close)
        self._timer.daemon = True
        self._timer.start()

    def close(self) -> None:
        self.release.set()
        self._timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def teacher(request):
    servers = []

    def start(hold_after=None) -> _Teacher:
        servers.append(_Teacher(hold_after))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _setup(tmp_path, small_corpus, tiny_models, url: str, kind: str) -> tuple[list[str], dict, Path]:
    cfg = tmp_path / "llambert.yaml"
    cfg.write_text(
        yaml.safe_dump(
            tiny_settings_dict(
                tmp_path / "home",
                small_corpus,
                tiny_models,
                threads=1,
                sample={"size": SAMPLE},
                teacher={
                    "backend": "openai",
                    "base_urls": [url],
                    "batch_size": BATCH,
                    "concurrency": BATCH,
                    "commit_every": COMMIT_EVERY,
                    "api_key_env": "LLAMBERT_TEST_NO_KEY",
                },
                student={"kind": kind, "chunk_rows": 64},
            )
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMBERT_TEST_KILL_POINT")}
    env |= {
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    return (
        [sys.executable, "-m", "llambert.cli", "--config", str(cfg), "run"],
        env,
        tmp_path / "home" / "warehouse.duckdb",
    )


def _start(cmd, env) -> subprocess.Popen:
    # Its own session: the group is `llambert run` and the pipeline process it starts.
    return subprocess.Popen(
        cmd,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _group_alive(pgid: int) -> list[int]:
    """Processes of the group that are not zombies (a zombie waits for its parent, it runs nothing)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _kill_group(proc: subprocess.Popen) -> str:
    os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid):  # the pipeline child too
        if time.monotonic() > deadline:
            pytest.fail(f"processes of the killed group are still alive: {_group_alive(proc.pid)}")
        time.sleep(0.05)
    return err


def _kill_at_line(proc: subprocess.Popen, marker: str, timeout: float = 240) -> str:
    """Read stderr until the kill point's line, then kill the group; returns stderr so far."""
    seen = []
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        for line in proc.stderr:
            seen.append(line)
            if line.startswith(f"[kill-point] {marker}"):
                break
        else:
            pytest.fail(f"`llambert run` ended before {marker!r}:\n{''.join(seen)[-3000:]}")
    finally:
        timer.cancel()
    return "".join(seen) + _kill_group(proc)


def _rerun(cmd, env) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "student accuracy on test split" in out.stdout
    return out


def _assert_whole(warehouse: Path) -> list[tuple]:
    """One prediction per corpus document, one answer per sampled document; returns llm_runs."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        n_docs = con.execute("SELECT count(*) FROM raw.corpus").fetchone()[0]
        assert n_docs == 160
        assert con.execute("SELECT count(*), count(DISTINCT doc_id) FROM predictions.labels").fetchone() == (
            n_docs,
            n_docs,
        )
        assert (
            con.execute(
                "SELECT count(DISTINCT doc_id) FROM predictions.labels WHERE checkpoint_id = "
                "(SELECT checkpoint_id FROM students.champion)"
            ).fetchone()[0]
            == n_docs
        )
        assert con.execute(
            "SELECT count(*), count(DISTINCT doc_id), count(DISTINCT prompt_hash) FROM labeling.llm_responses"
        ).fetchone() == (SAMPLE, SAMPLE, SAMPLE)
        assert con.execute("SELECT count(*), count(DISTINCT prompt_hash) FROM labeling.llm_cache").fetchone() == (
            SAMPLE,
            SAMPLE,
        )
        return con.execute(
            "SELECT status, prompts, answered, cached, prompt_tokens FROM labeling.llm_runs ORDER BY started_at"
        ).fetchall()


def test_kill9_during_teacher_labeling_then_rerun(tmp_path, small_corpus, tiny_models, teacher):
    """Killed with a batch in flight and a batch received but not committed: both are asked again (that is
    commit_every prompts), and llm_runs counts them in the killed run's row."""
    # Batches of 4, commits every 8: after 20 answers (16 committed, 4 in the buffer) the 6th batch is held.
    server = teacher(hold_after=20)
    cmd, env, warehouse = _setup(tmp_path, small_corpus, tiny_models, server.url, "linear")
    proc = _start(cmd, env)
    if not server.batch_held.wait(240):
        proc.kill()
        pytest.fail(f"the teacher never got its 6th batch:\n{proc.communicate()[1][-3000:]}")
    err = _kill_group(proc)
    server.release.set()
    asked_killed = server.total
    assert asked_killed == 24, err[-2000:]
    with duckdb.connect(str(warehouse), read_only=True) as con:  # the row was written before the batch was sent
        assert con.execute("SELECT status, prompts, answered, prompt_tokens FROM labeling.llm_runs").fetchall() == [
            ("running", 24, 16, 20 * 11)
        ]
        assert con.execute("SELECT count(*) FROM labeling.llm_cache").fetchone()[0] == 16

    _rerun(cmd, env)
    runs = _assert_whole(warehouse)
    assert runs[0] == ("killed", 24, 16, 0, 20 * 11)
    assert runs[1] == ("done", SAMPLE - 16, SAMPLE - 16, 16, (SAMPLE - 16) * 11)
    assert all(r[0] == "done" and r[1] == 0 for r in runs[2:])
    # Every prompt the server was sent is accounted; the ones sent twice are the killed run's lost ones.
    assert sum(r[1] for r in runs) == server.total == asked_killed + SAMPLE - 16
    assert len(server.asked) == SAMPLE and server.total - SAMPLE <= COMMIT_EVERY


def test_kill9_during_student_training_then_rerun(tmp_path, small_corpus, tiny_models, teacher):
    """Killed in the encoder's second epoch: the re-run asks the LLM nothing, reuses the floor, trains the encoder."""
    server = teacher()
    cmd, env, warehouse = _setup(tmp_path, small_corpus, tiny_models, server.url, "encoder")
    proc = _start(
        cmd,
        env
        | {
            "LLAMBERT_TEST_KILL_POINT": "train",
            "PYTHONPATH": f"{PROJECT_ROOT / 'tests' / 'kill_points'}{os.pathsep}{env['PYTHONPATH']}",
        },
    )
    _kill_at_line(proc, "train epoch 2")
    assert server.total == SAMPLE
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT kind FROM students.checkpoints").fetchall() == [("linear",)]
        assert con.execute("SELECT count(*) FROM predictions.labels").fetchone()[0] == 0

    _rerun(cmd, env)
    assert server.total == SAMPLE  # nothing paid twice
    runs = _assert_whole(warehouse)
    assert runs[0] == ("done", SAMPLE, SAMPLE, 0, SAMPLE * 11)
    assert all(r[:4] == ("done", 0, 0, SAMPLE) for r in runs[1:]) and len(runs) >= 2
    assert sum(r[1] for r in runs) == server.total
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert sorted(con.execute("SELECT kind FROM students.checkpoints").fetchall()) == [("encoder",), ("linear",)]


def test_kill9_during_corpus_prediction_then_rerun(tmp_path, small_corpus, tiny_models, teacher):
    """Killed labeling the corpus's second chunk: the re-run labels only the rest, with the same champion."""
    server = teacher()
    cmd, env, warehouse = _setup(tmp_path, small_corpus, tiny_models, server.url, "linear")
    proc = _start(
        cmd,
        env
        | {
            "LLAMBERT_TEST_KILL_POINT": "predict",
            "PYTHONPATH": f"{PROJECT_ROOT / 'tests' / 'kill_points'}{os.pathsep}{env['PYTHONPATH']}",
        },
    )
    _kill_at_line(proc, "predict chunk 2")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        first = con.execute(
            "SELECT doc_id, checkpoint_id, predicted_at FROM predictions.labels ORDER BY doc_id"
        ).fetchall()
        champion = con.execute("SELECT checkpoint_id FROM students.champion").fetchone()[0]
    assert len(first) == 64  # the first chunk was committed, the second was being computed

    _rerun(cmd, env)
    assert server.total == SAMPLE  # nothing paid twice
    runs = _assert_whole(warehouse)
    assert runs[0] == ("done", SAMPLE, SAMPLE, 0, SAMPLE * 11)
    assert all(r[:4] == ("done", 0, 0, SAMPLE) for r in runs[1:]) and sum(r[1] for r in runs) == server.total
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT checkpoint_id FROM students.champion").fetchone()[0] == champion
        assert con.execute("SELECT count(*) FROM students.checkpoints").fetchone()[0] == 1
        kept = con.execute(
            "SELECT doc_id, checkpoint_id, predicted_at FROM predictions.labels WHERE doc_id IN "
            f"({','.join('?' * len(first))}) ORDER BY doc_id",
            [r[0] for r in first],
        ).fetchall()
    assert kept == first  # committed predictions were kept, not computed again
