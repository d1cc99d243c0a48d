"""Batches whose run did not finish (killed, failed) are finished by `llambert ingest --now`.

A real Dagster instance in tmp, a real DuckDB warehouse, the tiny models; the kill is a real
SIGKILL of the ingest child while its raw.corpus step is provably running: the claimed copy of the
file is a FIFO, so the step blocks opening it until the test opens the other end.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml

from llambert.config import PROJECT_ROOT, load_settings
from tests.conftest import tiny_settings_dict

BATCHES = "batches"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def _write_config(root: Path, home: Path, small_corpus, tiny_models) -> Path:
    cfg = root / "llambert.yaml"
    # The linear student (trained in seconds) is the champion: what is tested here is the batch's runs.
    cfg.write_text(
        yaml.safe_dump(
            tiny_settings_dict(
                home, small_corpus, tiny_models, inbox={"settle_seconds": 0}, threads=1, student={"kind": "linear"}
            )
        )
    )
    return cfg


@pytest.fixture(scope="module")
def initial_state(tmp_path_factory, small_corpus, tiny_models):
    """The initial pipeline, run once through Dagster: a warehouse with a champion, and an instance."""
    from dagster_project.run import run_pipeline

    root = tmp_path_factory.mktemp("recovery_initial")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(root / "dagster_home"))
        assert run_pipeline(str(_write_config(root, root / "home", small_corpus, tiny_models))) == 0
    return root


@pytest.fixture
def recovery(initial_state, tmp_path, small_corpus, tiny_models, monkeypatch):
    """A private copy of the initial state (warehouse + Dagster instance)."""
    import dagster as dg

    shutil.copytree(initial_state / "home", tmp_path / "home")
    shutil.copytree(initial_state / "dagster_home", tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    cfg = _write_config(tmp_path, tmp_path / "home", small_corpus, tiny_models)
    with dg.DagsterInstance.get() as instance:
        yield {"cfg": cfg, "settings": load_settings(cfg), "instance": instance}


def _fresh_texts(settings, imdb_dir, n: int, seed: int) -> list[str]:
    texts = pl.read_parquet(imdb_dir / "unsup.parquet").sample(n + 4, seed=seed)["text"].str.slice(0, 200).to_list()
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        known = {r[0] for r in con.execute("SELECT doc_id FROM raw.corpus").fetchall()}
    texts = list(dict.fromkeys(t for t in texts if _md5(t) not in known))[:n]
    assert len(texts) == n
    return texts


def _runs(instance, partition: str):
    import dagster as dg

    return instance.get_runs(
        filters=dg.RunsFilter(job_name="ingest_and_label_batch", tags={"dagster/partition": partition})
    )


def _wait_for_reader(fifo: Path, proc: subprocess.Popen, timeout: float = 240) -> int:
    """Open the FIFO's writing end once a process has it open for reading; that process is in raw.corpus."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        if proc.poll() is not None:
            pytest.fail(f"`llambert ingest --now` ended before reading the batch's file:\n{proc.communicate()[1]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the ingest child did not reach the raw.corpus step within {timeout}s")


def test_killed_batch_is_listed_and_finished_by_ingest_now(recovery, imdb_dir, tmp_path):
    """kill -9 during raw.corpus; `llambert status` lists the batch; the same `ingest FILE --now` finishes it."""
    from llambert.cli.status import format_report, status_report
    from llambert.inbox import claim_file

    settings, instance, cfg = recovery["settings"], recovery["instance"], recovery["cfg"]
    texts = _fresh_texts(settings, imdb_dir, 8, seed=21)
    f = tmp_path / "big.csv"
    pl.DataFrame({"id": [f"b{i}" for i in range(len(texts))], "text": texts}).write_csv(f)
    # The claimed copy (what `--now` makes first) becomes a FIFO: the run's raw.corpus step blocks opening it.
    batch, _ = claim_file(settings, f)
    key = batch.partition
    stored = settings.inbox_dir / ".batches" / key / f.name
    stored.unlink()
    os.mkfifo(stored)

    cmd = [sys.executable, "-m", "llambert.cli", "--config", str(cfg), "ingest", str(f), "--now"]
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fd = _wait_for_reader(stored, proc)
    try:
        [child] = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        os.kill(int(child), signal.SIGKILL)  # the ingest child, mid raw.corpus
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(fd)
    stored.unlink()
    shutil.copy2(f, stored)

    # The partition exists and its run is stuck "started"; status says the batch is unfinished and what to do.
    assert instance.has_dynamic_partition(BATCHES, key)
    assert [r.status.value for r in _runs(instance, key)] == ["STARTED"]
    report = status_report(settings)
    assert report["unfinished_batches"] == [{"batch": key, "file": "big.csv", "reason": "not ingested"}]
    text = "\n".join(format_report(report))
    assert f"{key} (big.csv): not ingested" in text and "llambert ingest --now" in text
    assert proc.returncode == 128 + signal.SIGKILL and "killed by signal 9" in err, err

    # The same command again finishes the batch.
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "did not finish" in out.stderr and "running it again" in out.stderr
    assert f"{len(texts)} new documents" in out.stdout and f"{len(texts)} labeled by the champion" in out.stdout
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert con.execute(
            "SELECT count(*), count(DISTINCT doc_id) FROM raw.corpus WHERE batch = ?", [key]
        ).fetchone() == (len(texts), len(texts))
        assert {r[0] for r in con.execute("SELECT doc_id FROM raw.corpus WHERE batch = ?", [key]).fetchall()} == {
            _md5(t) for t in texts
        }
        assert con.execute("SELECT count(*) FROM raw.occurrences WHERE batch = ?", [key]).fetchone()[0] == len(texts)
        assert con.execute(
            "SELECT count(*), count(DISTINCT doc_id) FROM predictions.labels WHERE batch = ?", [key]
        ).fetchone() == (len(texts), len(texts))
        assert con.execute("SELECT count(*) FROM raw.inbox_files WHERE batch = ?", [key]).fetchone()[0] == 1
    # The killed run is marked failed; the new one succeeded; nothing is left unfinished.
    assert [r.status.value for r in _runs(instance, key)] == ["SUCCESS", "FAILURE"]
    report = status_report(settings)
    assert report["unfinished_batches"] == [] and "unfinished" not in "\n".join(format_report(report))


def test_sensor_skips_files_claimed_by_ingest_now_and_failed_runs_are_rerun(
    recovery, imdb_dir, tmp_path, monkeypatch, capsys
):
    """While `--now` runs its first file the sensor launches nothing; `--now` without FILE re-runs failed batches."""
    import dagster as dg

    from dagster_project.definitions import build_definitions
    from dagster_project.ingest_now import ingest_now
    from dagster_project.resources import LlambertResource
    from llambert import pipeline
    from llambert.cli.status import status_report

    settings, instance, cfg = recovery["settings"], recovery["instance"], recovery["cfg"]
    defs = build_definitions(LlambertResource(config_path=str(cfg)))
    texts = _fresh_texts(settings, imdb_dir, 6, seed=23)
    files = []
    for i, name in enumerate(["first.csv", "second.csv"]):
        files.append(tmp_path / name)
        pl.DataFrame({"text": texts[3 * i : 3 * i + 3]}).write_csv(files[-1])

    ticks = []
    real_ingest, real_predict = pipeline.ingest_batch, pipeline.predict_batch

    def sensor_then_ingest(con, settings, batch):  # raw.corpus of each batch: what would the daemon's sensor do now?
        with dg.build_sensor_context(
            instance_ref=instance.get_ref(), definitions=defs, resources={"llambert": defs.resources["llambert"]}
        ) as context:
            ticks.append((batch, defs.resolve_sensor_def("inbox_sensor").evaluate_tick(context)))
        if batch.startswith("first-"):
            raise RuntimeError("the first batch's run fails in raw.corpus")
        return real_ingest(con, settings, batch)

    def fail(*args, **kwargs):
        raise RuntimeError("the second batch's run fails in predictions.labels")

    monkeypatch.setattr(pipeline, "ingest_batch", sensor_then_ingest)
    monkeypatch.setattr(pipeline, "predict_batch", fail)
    assert ingest_now([str(f) for f in files], str(cfg)) == 1
    keys = sorted(p for p in instance.get_dynamic_partitions(BATCHES) if p != "initial")
    assert [k.split("-")[0] for k in keys] == ["first", "second"]
    assert [b for b, _ in ticks] == keys
    for batch, data in ticks:
        assert data.run_requests == [], (
            f"the sensor launched {[r.partition_key for r in data.run_requests]} during {batch}"
        )
    assert all([r.status.value for r in _runs(instance, k)] == ["FAILURE"] for k in keys)
    assert "run it again" in capsys.readouterr().err
    assert status_report(settings)["unfinished_batches"] == [
        {"batch": keys[0], "file": "first.csv", "reason": "not ingested"},
        {"batch": keys[1], "file": "second.csv", "reason": "ingested, not labeled by the champion"},
    ]

    # `--now` without FILE (it used to say "nothing new") re-runs both failed batches.
    monkeypatch.setattr(pipeline, "ingest_batch", real_ingest)
    monkeypatch.setattr(pipeline, "predict_batch", real_predict)
    assert ingest_now([], str(cfg)) == 0
    err = capsys.readouterr().err
    assert all(f"batch {k}: last run did not finish" in err for k in keys), err
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.corpus WHERE batch IN (?, ?)", keys).fetchone()[0] == 6
        assert con.execute("SELECT count(*) FROM predictions.labels WHERE batch IN (?, ?)", keys).fetchone()[0] == 6
        assert con.execute("SELECT count(*) FROM raw.occurrences WHERE batch IN (?, ?)", keys).fetchone()[0] == 6
    assert status_report(settings)["unfinished_batches"] == []
    assert ingest_now([], str(cfg)) == 0
    assert "nothing new or unfinished" in capsys.readouterr().err


@pytest.fixture
def bare(tmp_path, monkeypatch):
    """Settings and an empty Dagster instance in tmp (no warehouse: nothing here gets that far)."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    cfg = tmp_path / "llambert.yaml"
    cfg.write_text(yaml.safe_dump({"home": str(tmp_path / "home"), "inbox": {"settle_seconds": 0}}))
    return cfg, load_settings(cfg)


def _partitions(settings) -> list[str]:
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        parts = instance.get_dynamic_partitions(BATCHES)
    batches = settings.inbox_dir / ".batches"
    return parts + (sorted(p.name for p in batches.iterdir()) if batches.is_dir() else [])


def test_a_directory_named_csv_is_a_directory_not_a_missing_file(bare, tmp_path, capsys):
    from dagster_project.ingest_now import ingest_now
    from llambert.inbox import InboxError, queue_file

    cfg, settings = bare
    folder = tmp_path / "x.csv"
    folder.mkdir()
    assert ingest_now([str(folder)], str(cfg)) == 2
    err = capsys.readouterr().err
    assert f"{folder}: is a directory" in err and "no such file" not in err
    with pytest.raises(InboxError, match="is a directory"):
        queue_file(settings, folder)
    assert _partitions(settings) == []


def test_gzip_bytes_named_csv_are_refused_before_any_partition(bare, tmp_path, capsys):
    from dagster_project.ingest_now import ingest_now
    from llambert.inbox import scan_inbox

    cfg, settings = bare
    good = tmp_path / "good.csv"
    good.write_text("text\na fine review\n")
    packed = tmp_path / "packed.csv"
    packed.write_bytes(gzip.compress(b"text\na fine review\nanother one\n"))  # polars would read it happily
    # Every file is checked before any is claimed: the good one first in line leaves no batch either.
    assert ingest_now([str(good), str(packed)], str(cfg)) == 2
    err = capsys.readouterr().err
    assert "packed.csv: expected csv text but this is a gzip-compressed file" in err
    assert _partitions(settings) == []
    # Dropped in the inbox, the sensor's scan refuses it too (it stays there; no batch, no partition).
    settings.inbox_dir.mkdir(parents=True)
    shutil.copy(packed, settings.inbox_dir / "packed.csv")
    scan = scan_inbox(settings)
    assert scan.claimed == [] and [n for n, _ in scan.refused] == ["packed.csv"]
    assert "gzip" in scan.refused[0][1] and (settings.inbox_dir / "packed.csv").exists()
    assert _partitions(settings) == []
