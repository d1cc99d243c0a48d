"""New reviews arriving in the inbox: a real Dagster instance, the real sensor, real runs, tiny models."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import duckdb
import polars as pl
import pytest
import yaml

from llambert.config import PROJECT_ROOT, load_settings
from tests.conftest import tiny_settings_dict

AUDIT = {"enabled": True, "k": 4, "retrain_min_new_labels": 2, "min_audited_for_agreement": 1}


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def _context(instance, defs):
    import dagster as dg

    # instance_ref, as the daemon passes it: run requests for partitions added in the same tick resolve.
    return dg.build_sensor_context(
        instance_ref=instance.get_ref(), definitions=defs, resources={"llambert": defs.resources["llambert"]}
    )


def _evaluate(instance, defs, name: str):
    """Evaluate a sensor as the daemon would (run requests resolved and validated against the job)."""
    with _context(instance, defs) as context:  # closes the instance the context opens from the ref
        return defs.resolve_sensor_def(name).evaluate_tick(context)


def _tick(instance, defs) -> list:
    """What the daemon does on a sensor tick: evaluate, add the partitions, launch the runs (in process)."""
    data = _evaluate(instance, defs, "inbox_sensor")
    for req in data.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    job = defs.resolve_job_def("ingest_and_label_batch")
    for rr in data.run_requests:
        result = job.execute_in_process(instance=instance, partition_key=rr.partition_key, tags=rr.tags)
        assert result.success
    return data.run_requests


def _counts(con) -> dict:
    return dict(
        zip(
            ["corpus", "occurrences", "rejected", "predictions", "audit_labels", "inbox_files"],
            con.execute(
                "SELECT (SELECT count(*) FROM raw.corpus), (SELECT count(*) FROM raw.occurrences), "
                "(SELECT count(*) FROM raw.rejected), (SELECT count(*) FROM predictions.labels), "
                "(SELECT count(*) FROM labeling.audit_labels), (SELECT count(*) FROM raw.inbox_files)"
            ).fetchone(),
        )
    )


def _write_config(root, home, small_corpus, tiny_models):
    cfg = root / "llambert.yaml"
    cfg.write_text(
        yaml.safe_dump(
            tiny_settings_dict(
                home,
                small_corpus,
                tiny_models,
                audit=AUDIT,
                inbox={"settle_seconds": 0},
                threads=1,
                student={"recipe": "llambert_extra"},
            )
        )
    )  # the recipe that trains on the whole LLM pool, audit labels included
    return cfg


@pytest.fixture(scope="module")
def initial_state(tmp_path_factory, small_corpus, tiny_models):
    """The initial pipeline, run once through Dagster: a warehouse, a champion and an instance to copy."""
    from dagster_project.run import run_pipeline

    root = tmp_path_factory.mktemp("initial")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(root / "dagster_home"))
        assert run_pipeline(str(_write_config(root, root / "home", small_corpus, tiny_models))) == 0
    return root


@pytest.fixture
def incremental(initial_state, tmp_path, small_corpus, tiny_models, monkeypatch):
    """A private copy of the initial state (warehouse + Dagster instance) and Definitions over it."""
    import dagster as dg

    from dagster_project.definitions import build_definitions
    from dagster_project.resources import LlambertResource

    shutil.copytree(initial_state / "home", tmp_path / "home")
    shutil.copytree(initial_state / "dagster_home", tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    cfg = _write_config(tmp_path, tmp_path / "home", small_corpus, tiny_models)
    # Entered, so Dagster's per-instance state (defs state storage) is this test's, not a previous one's.
    with dg.DagsterInstance.get() as instance:
        yield {
            "cfg": cfg,
            "settings": load_settings(cfg),
            "instance": instance,
            "defs": build_definitions(LlambertResource(config_path=str(cfg))),
        }


def test_inbox_sensor_ingests_labels_audits_and_never_duplicates(incremental, imdb_dir, tmp_path):
    import dagster as dg

    settings, instance, defs = incremental["settings"], incremental["instance"], incremental["defs"]
    wh = str(settings.warehouse_path)
    with duckdb.connect(wh, read_only=True) as con:
        before = _counts(con)
        known = [
            r[0]
            for r in con.execute("SELECT text FROM raw.corpus WHERE split = 'train' ORDER BY doc_id LIMIT 2").fetchall()
        ]
        champion = con.execute("SELECT checkpoint_id FROM students.champion").fetchone()[0]
    fresh = pl.read_parquet(imdb_dir / "test.parquet").sample(10, seed=11)["text"].str.slice(0, 300).to_list()
    fresh = [t for t in fresh if _md5(t) not in {_md5(k) for k in known}]
    texts = fresh + known + [fresh[0], "   "]  # a repeated text and a blank row
    drop = pl.DataFrame({"id": [f"n{i}" for i in range(len(texts))], "text": texts})
    staging = tmp_path / "drops"
    staging.mkdir()
    drop.write_parquet(staging / "new reviews.parquet")

    # Nothing in the inbox: the sensor skips.
    assert _tick(instance, defs) == []

    # Drop the file (through the CLI, as a user would) and tick.
    from llambert.cli import main as cli

    assert cli(["--config", str(incremental["cfg"]), "ingest", str(staging / "new reviews.parquet")]) == 0
    requests = _tick(instance, defs)
    assert len(requests) == 1
    key = requests[0].partition_key
    assert key.startswith("new_reviews-") and instance.has_dynamic_partition("batches", key)
    assert (settings.inbox_dir / ".batches" / key / "new reviews.parquet").exists()
    assert not (settings.inbox_dir / "new reviews.parquet").exists()

    expected = {_md5(t) for t in fresh}
    with duckdb.connect(wh, read_only=True) as con:
        after = _counts(con)
        assert {
            r[0] for r in con.execute("SELECT doc_id FROM raw.corpus WHERE batch = ?", [key]).fetchall()
        } == expected
        # Predictions for exactly the new documents, from the champion, under this partition.
        assert {
            r[0]
            for r in con.execute(
                "SELECT doc_id FROM predictions.labels WHERE batch = ? AND checkpoint_id = ?", [key, champion]
            ).fetchall()
        } == expected
        assert after["predictions"] == before["predictions"] + len(expected)
        assert after["occurrences"] == before["occurrences"] + len(texts) - 1
        assert after["rejected"] == before["rejected"] + 1
        assert con.execute(
            "SELECT input_rows, rejected_rows, new_documents, known_documents FROM raw.inbox_files WHERE batch = ?",
            [key],
        ).fetchone() == (len(texts), 1, len(expected), 2)
        # The audit: the k least confident new documents went to the teacher.
        audited = con.execute(
            "SELECT doc_id FROM labeling.audit_labels WHERE batch = ? ORDER BY doc_id", [key]
        ).fetchall()
        least = con.execute(
            "SELECT doc_id FROM predictions.labels WHERE batch = ? AND checkpoint_id = ? "
            "ORDER BY probability, doc_id LIMIT 4",
            [key, champion],
        ).fetchall()
        assert sorted(audited) == sorted(least) and len(audited) == 4
        run = con.execute(
            "SELECT audited, parsed, agreed, agreement, retrain_requested FROM labeling.audit_runs WHERE batch = ?",
            [key],
        ).fetchone()
        assert (
            run[0] == 4
            and run[1]
            == con.execute("SELECT count(label) FROM labeling.audit_labels WHERE batch = ?", [key]).fetchone()[0]
        )
        assert run[3] == (run[2] / run[1] if run[1] else None)
        requested = con.execute("SELECT count(*) FROM students.retrain_requests WHERE batch = ?", [key]).fetchone()[0]
        assert run[4] == (requested == 1)
        # The batch's own figures reach the policy (pinned case by case in test_retrain_policy): no audit label
        # predates this batch, so its parsed labels are all the new ones.
        from llambert.audit import retrain_reason

        reason = retrain_reason(settings, run[1], run[1], run[3])
        assert run[4] == (reason is not None)
        assert con.execute(
            "SELECT reason, new_labels, agreement FROM students.retrain_requests WHERE batch = ?", [key]
        ).fetchall() == ([(reason, run[1], run[3])] if reason else [])
        assert (
            con.execute(
                "SELECT count(*) FROM ops.stage_runs WHERE stage = 'audit' AND partition = ?", [key]
            ).fetchone()[0]
            == 1
        )
    # Parsed audit labels join the training pool (training_phases rebuilds students.training_examples).
    from llambert.pipeline import training_phases

    with duckdb.connect(wh) as con:
        training_phases(con, settings)
        assert (
            con.execute("SELECT count(*) FROM students.training_examples WHERE origin = 'audit'").fetchone()[0]
            == run[1]
        )
    mat = instance.get_latest_materialization_event(dg.AssetKey(["labeling", "audit_labels"]))
    assert mat.asset_materialization.partition == key
    assert mat.asset_materialization.metadata["audited"].value == 4

    # The same file again, and a copy under another name: nothing new.
    shutil.copy(staging / "new reviews.parquet", settings.inbox_dir / "new reviews.parquet")
    shutil.copy(staging / "new reviews.parquet", settings.inbox_dir / "copy of it.parquet")
    assert _tick(instance, defs) == []
    assert sorted(p.name.split("-", 1)[1] for p in (settings.inbox_dir / ".duplicates").iterdir()) == [
        "copy of it.parquet",
        "new reviews.parquet",
    ]
    with duckdb.connect(wh, read_only=True) as con:
        assert _counts(con) == after

    # The same documents in another format: a new batch that adds no document and no prediction.
    drop.write_ndjson(settings.inbox_dir / "same texts.jsonl")
    requests = _tick(instance, defs)
    assert len(requests) == 1
    key2 = requests[0].partition_key
    with duckdb.connect(wh, read_only=True) as con:
        again = _counts(con)
        assert again["corpus"] == after["corpus"] and again["predictions"] == after["predictions"]
        assert again["occurrences"] == after["occurrences"] + len(texts) - 1  # every input row is still recorded
        assert con.execute(
            "SELECT new_documents, known_documents FROM raw.inbox_files WHERE batch = ?", [key2]
        ).fetchone() == (0, len(expected) + 2)

    # A backfill over every partition replaces each batch's rows and duplicates nothing.
    job = defs.resolve_job_def("ingest_and_label_batch")
    partitions = instance.get_dynamic_partitions("batches")
    assert set(partitions) == {"initial", key, key2}
    for p in partitions:
        assert job.execute_in_process(instance=instance, partition_key=p).success
    with duckdb.connect(wh, read_only=True) as con:
        assert _counts(con) == again
        assert (
            con.execute("SELECT count(*) - count(DISTINCT (doc_id, checkpoint_id)) FROM predictions.labels").fetchone()[
                0
            ]
            == 0
        )
        last = con.execute("SELECT prompts, cached FROM labeling.llm_runs ORDER BY finished_at DESC LIMIT 1").fetchone()
        assert last == (0, 4)  # the re-audit paid for nothing

    # `llambert status` sees all of it, read-only.
    from llambert.cli.status import format_report, status_report

    report = status_report(settings)
    assert report["champion"]["checkpoint_id"] == champion
    assert [b["batch"] for b in report["batches"]] == ["initial", key, key2]
    assert (
        report["pending_documents"] == 0 and report["waiting_in_inbox"] == [] and report["claimed_not_ingested"] == []
    )
    text = "\n".join(format_report(report))
    assert key in text and champion in text


def test_retrain_sensor_follows_the_audit(incremental, imdb_dir, tmp_path):
    """An audit that requests a retrain makes the retrain sensor ask for train_student (when auto_retrain)."""

    from dagster_project.definitions import build_definitions
    from dagster_project.resources import LlambertResource

    settings, instance = incremental["settings"], incremental["instance"]
    texts = pl.read_parquet(imdb_dir / "unsup.parquet").sample(8, seed=5)["text"].str.slice(0, 200).to_list()
    settings.inbox_dir.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"text": texts}).write_csv(settings.inbox_dir / "more.csv")
    # min_new_labels 1 and agreement bound 1.0: any parsed audit answer asks for a retrain.
    over = yaml.safe_dump({"audit": {"retrain_min_new_labels": 1, "retrain_min_agreement": 1.0, "auto_retrain": True}})
    defs = build_definitions(LlambertResource(config_path=str(incremental["cfg"]), overrides_yaml=over))
    [req] = _tick(instance, defs)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        parsed, requested = con.execute(
            "SELECT parsed, retrain_requested FROM labeling.audit_runs WHERE batch = ?", [req.partition_key]
        ).fetchone()
    assert requested == (parsed > 0)
    data = _evaluate(instance, defs, "retrain_sensor")
    if requested:
        [run] = data.run_requests
        assert run.run_key.startswith("retrain-after-") and run.job_name in (None, "train_student")
    else:
        assert data.run_requests == [] and "no retrain" in data.skip_message


def test_ingest_now_runs_in_a_child_process(incremental, imdb_dir, tmp_path, capsys):
    """`llambert ingest FILE --now`: claimed, partitioned and labeled without a daemon; twice is a no-op."""
    settings = incremental["settings"]
    texts = pl.read_parquet(imdb_dir / "unsup.parquet").sample(6, seed=3)["text"].str.slice(0, 200).to_list()
    f = tmp_path / "now.jsonl"
    f.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cmd = [sys.executable, "-m", "llambert.cli", "--config", str(incremental["cfg"]), "ingest", str(f), "--now"]
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "6 new documents" in out.stdout and "6 labeled by the champion" in out.stdout
    # The same file again (in process this time, to keep the test short): nothing to do.
    from dagster_project.ingest_now import ingest_now

    assert ingest_now([str(f)], str(incremental["cfg"])) == 0
    assert "nothing to do" in capsys.readouterr().err
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.corpus WHERE batch LIKE 'now-%'").fetchone()[0] == 6
        assert con.execute("SELECT count(*) FROM predictions.labels WHERE batch LIKE 'now-%'").fetchone()[0] == 6


@pytest.mark.parametrize(
    "new_labels, parsed, agreement, expected",
    [
        (2, 2, 1.0, "2 audit labels newer than the last training (>= 2)"),  # enough new labels, however good
        (7, 7, 0.0, "7 audit labels newer than the last training (>= 2)"),  # the count rule is said first
        (1, 1, 1.0, None),  # one new label and full agreement: nothing to retrain for
        (1, 1, 0.5, "agreement 0.500 on 1 audited documents < 0.8"),
        (1, 1, 0.8, None),  # at the bound is not below it
        (1, 3, 0.5, "agreement 0.500 on 3 audited documents < 0.8"),  # parsed earlier, trained since: agreement only
        (0, 0, None, None),  # nothing parsed: no agreement to judge
    ],
)
def test_retrain_policy(tiny_settings, new_labels, parsed, agreement, expected):
    """audit.retrain_min_new_labels 2, retrain_min_agreement 0.8 (the default), min_audited_for_agreement 1."""
    from llambert.audit import retrain_reason

    settings = tiny_settings.model_copy(update={"audit": tiny_settings.audit.model_copy(update=AUDIT)})
    assert settings.audit.retrain_min_agreement == 0.8
    assert retrain_reason(settings, new_labels, parsed, agreement) == expected
    strict = settings.model_copy(update={"audit": settings.audit.model_copy(update={"min_audited_for_agreement": 2})})
    if parsed < 2 and new_labels < 2:  # too few parsed answers for the agreement rule to speak
        assert retrain_reason(strict, new_labels, parsed, agreement) is None


def test_partition_keys_and_bad_files(tmp_path, tiny_settings):
    from llambert.inbox import InboxError, claim_file, partition_key

    key = partition_key("Reviews 2024-05 (final).CSV", "ab" * 32)
    assert key == "Reviews_2024-05_final-abababababab"
    assert partition_key("...", "cd" * 32) == "file-cdcdcdcdcdcd"  # '...' is not allowed in a Dagster key
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(InboxError, match="unsupported file type"):
        claim_file(tiny_settings, bad)
    nocol = tmp_path / "x.csv"
    nocol.write_text("review\nfine\n")
    with pytest.raises(InboxError, match="no text column 'text'.*inbox.text_column"):
        claim_file(tiny_settings, nocol)
