"""The warehouse is readable while a run writes (issue 16, part 1).

DuckDB lets one process write a file or many read it, never both at once. Teacher labeling and
corpus labeling hold the write lock only while they commit (``llambert.warehouse.Warehouse``), so
`llambert sql` and `llambert status`, real subprocesses here, read the warehouse mid-run, and see
the counts grow by exactly what was committed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest
import yaml

from llambert import pipeline
from llambert.config import PROJECT_ROOT, load_settings
from llambert.warehouse import Warehouse, connect, open_warehouse
from tests.conftest import tiny_settings_dict, train_through

SAMPLE, BATCH, COMMIT_EVERY = 40, 4, 4
LIFETIME_S = 300.0


class _GatedTeacher:
    """Chat-completions on 127.0.0.1 that answers request n only once ``allow(m)`` with m >= n was called:
    the test decides how far the teacher gets, and reads the warehouse while a batch is held."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.arrived, self.allowed, self.closed = 0, 0, False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                with outer.cond:
                    outer.arrived += 1
                    n = outer.arrived
                    outer.cond.notify_all()
                    outer.cond.wait_for(lambda: n <= outer.allowed or outer.closed, LIFETIME_S)
                body = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "positive" if n % 2 else "negative"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 1},
                    }
                ).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def allow(self, n: int) -> None:
        with self.cond:
            self.allowed = n
            self.cond.notify_all()

    def wait_arrived(self, n: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.arrived >= n, timeout)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()


def _cli(config, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llambert.cli", "--config", str(config), *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMBERT_TEST_")}
    return env | {
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }


def _count(config, table: str) -> int:
    r = _cli(config, "sql", f"SELECT count(*) AS n FROM {table}", "--format", "csv")
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.split()[1])


def test_sql_and_status_read_the_warehouse_while_the_teacher_labels(tmp_path, small_corpus, tiny_models):
    """A real `llambert run` (Dagster, the openai backend on a gated loopback teacher) is held mid-labeling
    twice; each time `llambert sql` and `llambert status` succeed, and the cache holds exactly the answers
    committed so far (batches of 4, committed every 4, before the next batch is sent)."""
    server = _GatedTeacher()
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
                    "base_urls": [server.url],
                    "batch_size": BATCH,
                    "concurrency": BATCH,
                    "commit_every": COMMIT_EVERY,
                    "api_key_env": "LLAMBERT_TEST_NO_KEY",
                },
                student={"kind": "linear"},
            )
        )
    )
    # Progress lines every 0.5 s (no terminal here): they show in the run's log while the teacher is held.
    env = _env() | {"DAGSTER_HOME": str(tmp_path / "dagster_home"), "LLAMBERT_PROGRESS_INTERVAL": "0.5"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llambert.cli", "--config", str(cfg), "run"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        counts = []
        for answered in (2 * BATCH, 5 * BATCH):
            server.allow(answered)
            # The next batch is held by the server: the runner committed every answer before sending it.
            if not server.wait_arrived(answered + BATCH, 300):
                proc.kill()
                pytest.fail(f"the teacher never got request {answered + BATCH}:\n{proc.communicate()[1][-3000:]}")
            counts.append(_count(cfg, "labeling.llm_cache"))
            status = _cli(cfg, "status", "--json")
            assert status.returncode == 0, status.stderr[-2000:] + status.stdout[-2000:]
            report = json.loads(status.stdout)
            assert [b["batch"] for b in report["batches"]] == ["initial"] and report["batches"][0]["documents"] == 160
            assert proc.poll() is None, "the run ended while its teacher was held"
        assert counts == [2 * BATCH, 5 * BATCH]
        server.allow(10**6)
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-3000:]
        assert "student accuracy on test split" in out
        Path(tmp_path / "run_stderr.txt").write_text(err)
        progress = [ln for ln in err.splitlines() if "[llambert] teacher openai/generate: " in ln]
        assert any(f"{2 * BATCH}/{SAMPLE} prompt (" in ln and "(by prompt chars)" in ln for ln in progress), err[-3000:]
        # The same lines are in the Dagster run log (the asset sends them to context.log).
        import dagster as dg

        with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
            logged = [
                e.user_message
                for r in instance.get_runs()
                for e in instance.all_logs(r.run_id)
                if "[llambert] teacher openai/generate: " in (e.user_message or "")
            ]
        assert logged and set(logged) <= set(progress)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
        server.close()
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM labeling.llm_cache").fetchone()[0] == SAMPLE
        assert con.execute("SELECT status, prompts, answered FROM labeling.llm_runs ORDER BY started_at").fetchall()[
            0
        ] == ("done", SAMPLE, SAMPLE)


def test_corpus_labeling_lets_readers_in_between_chunks(tmp_path, small_corpus, tiny_models):
    """predict_batch on a Warehouse holds no connection while the student predicts: a reader in another
    process sees every chunk committed before the one being predicted."""
    settings = load_settings(
        overrides=tiny_settings_dict(
            tmp_path / "home", small_corpus, tiny_models, student={"kind": "linear", "chunk_rows": 64}
        )
    )
    with open_warehouse(settings.warehouse_path) as con:
        train_through(con, settings)
    seen: list[int] = []
    real_open = pipeline._open_predictor

    def open_predictor(*args, **kwargs):
        predictor = real_open(*args, **kwargs)
        real_frame = predictor.predict_frame

        def predict_frame(frame):
            code = (
                "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True); "
                "print(c.execute('SELECT count(*) FROM predictions.labels').fetchone()[0])"
            )
            r = subprocess.run(
                [sys.executable, "-c", code, str(settings.warehouse_path)], capture_output=True, text=True, timeout=60
            )
            assert r.returncode == 0, r.stderr[-1000:]  # no lock held while predicting
            seen.append(int(r.stdout))
            return real_frame(frame)

        predictor.predict_frame = predict_frame
        return predictor

    pipeline._open_predictor = open_predictor
    try:
        stats = pipeline.predict_batch(Warehouse(settings.warehouse_path), settings)
    finally:
        pipeline._open_predictor = real_open
    assert stats["predicted_now"] == stats["rows"] == 160
    assert seen == [0, 64, 128]


def test_a_reader_waits_for_the_lock_then_says_who_holds_it(tmp_path):
    """Past its --wait, `llambert sql` fails with one line naming the process that holds the lock."""
    path = tmp_path / "w.duckdb"
    with open_warehouse(path):
        pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        r = subprocess.run(
            [sys.executable, "-m", "llambert.cli", "sql", "--warehouse", str(path), "--wait", "1", "SELECT 1"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
        )
        assert r.returncode == 1
        assert "the pipeline is writing" in r.stderr and "retrying for up to 1 s" in r.stderr
        assert f"locked by PID {holder.pid}" in r.stderr and "WarehouseLocked" in r.stderr, r.stderr
        with pytest.raises(duckdb.IOException, match=f"PID {holder.pid}"):
            connect(path, read_only=True, wait_s=0.2)
    finally:
        holder.kill()
        holder.wait()
    assert _count_direct(path) == 1


def _count_direct(path) -> int:
    from llambert.cli.sql import run_sql

    return len(run_sql(path, "SELECT 1")[1])
