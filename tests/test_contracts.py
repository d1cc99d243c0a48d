"""Data contracts: a warehouse built by the real pipeline (tiny models) passes them; a table that
violates a contract makes that contract fail and shows the offending rows. One case per contract,
and the Dagster asset checks run per batch with the failing rows in their metadata."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
import yaml

from llambert import contracts
from llambert.config import load_settings
from tests.conftest import tiny_settings_dict, train_through

LENIENT = {
    "min_minority_share": 0.0,
    "max_discard_rate": 1.0,
    "max_balance_shift": 1.0,
    "min_teacher_gold_accuracy": 0.0,
    "min_student_teacher_agreement": 0.0,
    "max_rejected_share": 1.0,
    "collapse_ratio": 0.0,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_corpus, tiny_models) -> Path:
    """A warehouse made by every pipeline step, in order, with the tiny teacher and student."""
    from llambert import pipeline
    from llambert.warehouse import open_warehouse

    home = tmp_path_factory.mktemp("contracts_home")
    settings = load_settings(overrides=tiny_settings_dict(home, small_corpus, tiny_models, checks=LENIENT))
    with open_warehouse(settings.warehouse_path) as con:
        train_through(con, settings)
        pipeline.predict_batch(con, settings)
    return home


def _copy(built: Path, tmp_path: Path, small_corpus, tiny_models, **checks):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(built / "warehouse.duckdb", home / "warehouse.duckdb")
    settings = load_settings(overrides=tiny_settings_dict(home, small_corpus, tiny_models, checks=LENIENT | checks))
    return settings, duckdb.connect(str(home / "warehouse.duckdb"))


def test_pipeline_output_passes_every_contract(built, tmp_path, small_corpus, tiny_models):
    settings, con = _copy(built, tmp_path, small_corpus, tiny_models)
    for table in contracts.CATALOG:
        partition = "initial" if table in contracts.PARTITIONED else None
        results = contracts.evaluate_and_record(con, settings, table, partition, run_id="t")
        assert [r.contract for r in results] == [s.name for s in contracts.CATALOG[table]]
        bad = [(r.contract, r.description) for r in results if not r.passed]
        assert not bad, f"{table}: {bad}"
    stored = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE passed), count(DISTINCT table_name) FROM ops.contract_results"
    ).fetchone()
    assert stored == (sum(len(v) for v in contracts.CATALOG.values()),) * 2 + (len(contracts.CATALOG),)
    engines = dict(con.execute("SELECT engine, count(*) FROM ops.contract_results GROUP BY 1").fetchall())
    assert engines["great_expectations"] > 10 and engines["sql"] > 10
    con.close()


ONE_DOC = "(SELECT min(doc_id) FROM {t})"
# (table, contract, statements that break it, check bounds, a string the failing rows show)
CASES = [
    ("raw.corpus", "schema", ["ALTER TABLE raw.corpus ALTER gold_label TYPE VARCHAR"], {}, "gold_label"),
    (
        "raw.corpus",
        "keys",
        ["UPDATE raw.corpus SET text = text || ' (edited)' WHERE doc_id = (SELECT min(doc_id) FROM raw.corpus)"],
        {},
        "doc_id = md5(text)",
    ),
    (
        "raw.corpus",
        "values",
        ["UPDATE raw.corpus SET text = '  ' WHERE doc_id = (SELECT min(doc_id) FROM raw.corpus)"],
        {},
        "text_chars >= 1",
    ),
    (
        "raw.corpus",
        "label_domain",
        ["UPDATE raw.corpus SET gold_label = 5 WHERE doc_id = (SELECT min(doc_id) FROM raw.corpus)"],
        {},
        "gold_label",
    ),
    (
        "raw.corpus",
        "rows_accounted",
        ["UPDATE raw.occurrences SET doc_id = 'ffffffffffffffffffffffffffffffff' WHERE source_row = 3"],
        {},
        "ffffffffffffffffffffffffffffffff",
    ),
    ("raw.corpus", "rejected_schema", ["ALTER TABLE raw.rejected DROP COLUMN source_row"], {}, "source_row"),
    (
        "raw.corpus",
        "rejected_values",
        [
            "INSERT INTO raw.rejected (batch, source, source_file, source_row, text, reason) "
            "VALUES ('initial', 'x', 'f.csv', 1, 't', 'mystery: nobody knows')"
        ],
        {},
        "mystery",
    ),
    (
        "raw.corpus",
        "rejected_share",
        [
            "INSERT INTO raw.rejected (batch, source, source_file, source_row, text, reason) "
            "SELECT 'initial', 'x', 'f.csv', i, 't', 'empty_text: column ''text'' is empty' FROM range(20) r(i)"
        ],
        {"max_rejected_share": 0.05},
        "empty_text",
    ),
    ("labeling.sample", "schema", ["ALTER TABLE labeling.sample ALTER sample_rank TYPE VARCHAR"], {}, "sample_rank"),
    (
        "labeling.sample",
        "keys",
        ["INSERT INTO labeling.sample SELECT * FROM labeling.sample WHERE sample_rank = 1"],
        {},
        "doc_id is unique",
    ),
    (
        "labeling.sample",
        "values",
        [
            "INSERT INTO labeling.sample SELECT 999, doc_id, split, gold_label, 0, 'random', NULL FROM raw.corpus "
            "WHERE split = 'test' LIMIT 1"
        ],
        {},
        "never a document of an excluded split",
    ),
    (
        "labeling.sample",
        "values",
        ["UPDATE labeling.sample SET picked_by = 'vibes' WHERE sample_rank = 3"],
        {},
        "picked_by",
    ),
    (
        "labeling.sample",
        "label_domain",
        ["UPDATE labeling.sample SET gold_label = 3 WHERE sample_rank = 2"],
        {},
        "gold_label",
    ),
    (
        "labeling.llm_responses",
        "schema",
        ["ALTER TABLE labeling.llm_responses DROP COLUMN model_identity"],
        {},
        "model_identity",
    ),
    (
        "labeling.llm_responses",
        "keys",
        ["INSERT INTO labeling.llm_responses SELECT * FROM labeling.llm_responses WHERE sample_rank = 1"],
        {},
        "doc_id is unique",
    ),
    (
        "labeling.llm_responses",
        "values",
        ["UPDATE labeling.llm_responses SET prompt_version = NULL WHERE sample_rank = 1"],
        {},
        "prompt_version is not null",
    ),
    (
        "labeling.llm_responses",
        "probabilities",
        [
            "UPDATE labeling.llm_responses SET label_probs = MAP {'positive': 1.5, 'negative': -0.5} WHERE "
            "sample_rank = 1"
        ],
        {},
        "1.5",
    ),
    ("labeling.llm_responses", "coverage", ["DELETE FROM labeling.llm_responses WHERE sample_rank = 2"], {}, "2"),
    ("labeling.parsed_labels", "schema", ["ALTER TABLE labeling.parsed_labels ALTER label TYPE VARCHAR"], {}, "label"),
    (
        "labeling.parsed_labels",
        "keys",
        ["INSERT INTO labeling.parsed_labels SELECT * FROM labeling.parsed_labels LIMIT 1"],
        {},
        "doc_id is unique",
    ),
    (
        "labeling.parsed_labels",
        "label_domain",
        [
            "UPDATE labeling.parsed_labels SET label = 9, label_name = 'maybe' WHERE doc_id = (SELECT min(doc_id) "
            "FROM labeling.parsed_labels)"
        ],
        {},
        "maybe",
    ),
    (
        "labeling.parsed_labels",
        "probabilities",
        [
            "UPDATE labeling.parsed_labels SET probability = -0.2 WHERE doc_id = (SELECT min(doc_id) FROM "
            "labeling.parsed_labels)"
        ],
        {},
        "-0.2",
    ),
    (
        "labeling.parsed_labels",
        "answers_accounted",
        ["DELETE FROM labeling.parsed_labels WHERE doc_id = (SELECT min(doc_id) FROM labeling.parsed_labels)"],
        {},
        "false",
    ),
    (
        "labeling.parsed_labels",
        "label_balance",
        ["UPDATE labeling.parsed_labels SET label = 1, label_name = 'positive'"],
        {"min_minority_share": 0.3},
        "negative",
    ),
    (
        "labeling.parsed_labels",
        "discard_rate",
        [
            "INSERT INTO labeling.discarded SELECT doc_id, raw_text, 'x', [], 'no_label_word', sample_rank FROM "
            "labeling.parsed_labels ORDER BY sample_rank LIMIT 5",
            "DELETE FROM labeling.parsed_labels WHERE doc_id IN (SELECT doc_id FROM labeling.discarded)",
        ],
        {"max_discard_rate": 0.05},
        "no_label_word",
    ),
    (
        "labeling.parsed_labels",
        "teacher_gold_accuracy",
        ["UPDATE labeling.parsed_labels SET label = 1 - gold_label WHERE gold_label IS NOT NULL"],
        {"min_teacher_gold_accuracy": 0.7},
        "teacher",
    ),
    ("labeling.discarded", "schema", ["ALTER TABLE labeling.discarded DROP COLUMN reason"], {}, "reason"),
    (
        "labeling.discarded",
        "keys",
        [
            "INSERT INTO labeling.discarded SELECT doc_id, raw_text, 'x', [], 'no_label_word', sample_rank FROM "
            "labeling.llm_responses WHERE sample_rank = 1",
            "INSERT INTO labeling.discarded SELECT doc_id, raw_text, 'x', [], 'no_label_word', sample_rank FROM "
            "labeling.llm_responses WHERE sample_rank = 1",
        ],
        {},
        "doc_id is unique",
    ),
    (
        "labeling.discarded",
        "values",
        [
            "INSERT INTO labeling.discarded SELECT doc_id, raw_text, 'x', [], 'cosmic_rays', sample_rank FROM "
            "labeling.llm_responses WHERE sample_rank = 1"
        ],
        {},
        "cosmic_rays",
    ),
    ("students.checkpoints", "schema", ["ALTER TABLE students.checkpoints ALTER n_train TYPE VARCHAR"], {}, "n_train"),
    (
        "students.checkpoints",
        "keys",
        [
            "CREATE OR REPLACE TABLE students.checkpoints AS SELECT * FROM students.checkpoints UNION ALL SELECT * "
            "FROM students.checkpoints"
        ],
        {},
        "checkpoint_id is unique",
    ),
    ("students.checkpoints", "values", ["UPDATE students.checkpoints SET val_accuracy = 1.7"], {}, "1.7"),
    (
        "students.checkpoints",
        "champion",
        ["UPDATE students.champion SET path = '/nonexistent/checkpoint'"],
        {},
        "/nonexistent/checkpoint",
    ),
    (
        "students.checkpoints",
        "student_teacher_agreement",
        ["UPDATE students.checkpoints SET val_accuracy = 0.1, label_source = 'llm', n_val = greatest(n_val, 4)"],
        {"min_student_teacher_agreement": 0.7},
        "0.1",
    ),
    (
        "predictions.labels",
        "schema",
        ["ALTER TABLE predictions.labels ALTER probability TYPE VARCHAR"],
        {},
        "probability",
    ),
    (
        "predictions.labels",
        "keys",
        [
            "CREATE OR REPLACE TABLE predictions.labels AS SELECT * FROM predictions.labels UNION ALL (SELECT * FROM "
            "predictions.labels LIMIT 2)"
        ],
        {},
        "(doc_id, checkpoint_id) is unique",
    ),
    (
        "predictions.labels",
        "label_domain",
        ["UPDATE predictions.labels SET label = 4 WHERE doc_id = (SELECT min(doc_id) FROM predictions.labels)"],
        {},
        "4",
    ),
    (
        "predictions.labels",
        "probabilities",
        [
            "UPDATE predictions.labels SET probability = 1.25 WHERE doc_id = (SELECT min(doc_id) FROM "
            "predictions.labels)"
        ],
        {},
        "1.25",
    ),
    (
        "predictions.labels",
        "coverage",
        [
            "DELETE FROM predictions.labels WHERE doc_id IN (SELECT doc_id FROM predictions.labels ORDER BY doc_id "
            "LIMIT 3)"
        ],
        {},
        "initial",
    ),
    (
        "predictions.labels",
        "collapse",
        ["UPDATE predictions.labels SET label = 0"],
        {"collapse_ratio": 0.25},
        "positive",
    ),
    (
        "predictions.labels",
        "label_balance",
        ["UPDATE predictions.labels SET label = 0"],
        {"min_minority_share": 0.3},
        "positive",
    ),
    (
        "predictions.labels",
        "balance_shift",
        [
            "UPDATE predictions.labels SET label = 1",
            "INSERT INTO predictions.labels (doc_id, batch, checkpoint_id, label, probability) "
            "SELECT 'other' || i, 'batch2', (SELECT checkpoint_id FROM students.champion), 0, 0.9 FROM range(50) r(i)",
        ],
        {"max_balance_shift": 0.15},
        "1.0",
    ),
    (
        "predictions.labels",
        "student_teacher_agreement",
        ["UPDATE predictions.labels p SET label = 1 - t.label FROM labeling.parsed_labels t WHERE t.doc_id = p.doc_id"],
        {"min_student_teacher_agreement": 0.7},
        "teacher",
    ),
]


# The tiny random models label almost everything alike: these cases first make the table healthy.
SETUP = {
    ("labeling.parsed_labels", "label_balance"): [
        "UPDATE labeling.parsed_labels SET label = sample_rank % 2, label_name = CASE WHEN sample_rank % 2 = 1 THEN "
        "'positive' ELSE 'negative' END"
    ],
    ("labeling.parsed_labels", "teacher_gold_accuracy"): [
        "UPDATE labeling.parsed_labels SET label = gold_label, label_name = CASE WHEN gold_label = 1 THEN 'positive' "
        "ELSE 'negative' END "
        "WHERE gold_label IS NOT NULL"
    ],
    ("predictions.labels", "label_balance"): ["UPDATE predictions.labels SET label = hash(doc_id) % 2"],
    ("predictions.labels", "collapse"): [
        "UPDATE labeling.parsed_labels SET label = sample_rank % 2, label_name = CASE WHEN sample_rank % 2 = 1 THEN "
        "'positive' ELSE 'negative' END",
        "UPDATE predictions.labels SET label = hash(doc_id) % 2",
    ],
}


def test_every_contract_has_a_violation_case():
    covered = {(t, c) for t, c, *_ in CASES} | {("labeling.parsed_labels", "balance_shift")}  # its own test below
    assert covered == {(t, s.name) for t, specs in contracts.CATALOG.items() for s in specs}


@pytest.mark.parametrize("table, contract, statements, checks, marker", CASES, ids=[f"{t}:{c}" for t, c, *_ in CASES])
def test_violation_fails_its_contract_and_shows_the_rows(
    built, tmp_path, small_corpus, tiny_models, table, contract, statements, checks, marker
):
    settings, con = _copy(built, tmp_path, small_corpus, tiny_models, **checks)
    partition = "initial" if table in contracts.PARTITIONED else None
    for sql in SETUP.get((table, contract), []):
        con.execute(sql)
    before = {r.contract: r for r in contracts.evaluate(con, settings, table, partition)}
    assert before[contract].passed, f"passes before the violation: {before[contract].description}"
    for sql in statements:
        con.execute(sql)
    after = {r.contract: r for r in contracts.evaluate(con, settings, table, partition)}
    r = after[contract]
    assert not r.passed, r.description
    assert r.failing is not None and r.failing.height > 0, "no offending rows shown"
    shown = r.failing.write_csv()
    assert marker in shown, shown
    spec = next(s for s in contracts.CATALOG[table] if s.name == contract)
    assert r.blocking == spec.blocking
    con.close()


def test_parsed_label_balance_shift_against_the_previous_run(built, tmp_path, small_corpus, tiny_models):
    settings, con = _copy(built, tmp_path, small_corpus, tiny_models, max_balance_shift=0.15)
    first = {r.contract: r for r in contracts.evaluate_and_record(con, settings, "labeling.parsed_labels")}
    assert first["balance_shift"].passed and first["balance_shift"].skipped  # nothing to compare with yet
    second = {r.contract: r for r in contracts.evaluate_and_record(con, settings, "labeling.parsed_labels")}
    assert second["balance_shift"].passed and second["balance_shift"].observed == 0.0
    n = con.execute("SELECT count(*) FROM labeling.parsed_labels").fetchone()[0]
    positive_before = second["label_balance"].details["shares"]["positive"]
    target = "negative" if positive_before > 0.5 else "positive"
    con.execute(
        f"UPDATE labeling.parsed_labels SET label = {1 if target == 'positive' else 0}, label_name = '{target}'"
    )
    third = {r.contract: r for r in contracts.evaluate_and_record(con, settings, "labeling.parsed_labels")}
    r = third["balance_shift"]
    assert n > 0 and not r.passed and r.blocking
    assert set(r.failing["label"].to_list()) == {"negative", "positive"}
    assert r.failing.filter(r.failing["label"] == target)["share_now"][0] == 1.0


def test_large_tables_are_validated_on_a_bounded_sample_and_keys_in_sql(built, tmp_path, small_corpus, tiny_models):
    settings, con = _copy(built, tmp_path, small_corpus, tiny_models, max_validated_rows=1000)
    con.execute(
        "INSERT INTO raw.corpus (doc_id, batch, source, split, text, n_copies) "
        "SELECT md5('t' || i), 'initial', 's', 'unsup', 't' || i, 1 FROM range(3000) r(i)"
    )
    keys = {r.contract: r for r in contracts.evaluate(con, settings, "raw.corpus", "initial")}["keys"]
    assert keys.passed and keys.sampled and keys.rows_checked == 1000 and "seeded sample" in keys.description
    # A duplicate key the sample may miss is still caught: uniqueness runs in SQL over every row.
    con.execute(
        "CREATE OR REPLACE TABLE predictions.labels AS SELECT * FROM predictions.labels UNION ALL "
        "(SELECT * FROM predictions.labels ORDER BY doc_id LIMIT 1)"
    )
    con.execute(
        "INSERT INTO predictions.labels (doc_id, batch, checkpoint_id, label, probability) "
        "SELECT md5('t' || i), 'initial', (SELECT checkpoint_id FROM students.champion), 1, 0.5 FROM range(3000) r(i)"
    )
    keys = {r.contract: r for r in contracts.evaluate(con, settings, "predictions.labels", "initial")}["keys"]
    assert not keys.passed and "copies" in keys.failing.columns
    con.close()


def test_dagster_checks_run_per_batch_with_failing_rows_in_metadata(built, tmp_path, small_corpus, tiny_models):
    """The asset checks through a real Dagster instance: per partition, blocking, markdown failing rows."""
    import dagster as dg

    from dagster_project.definitions import build_definitions
    from dagster_project.partitions import BATCHES, batches_partitions
    from dagster_project.resources import LlambertResource

    settings, con = _copy(built, tmp_path, small_corpus, tiny_models)
    # Batch "initial" loses three predictions; batch "late" is complete.
    con.execute(
        "INSERT INTO raw.corpus (doc_id, batch, source, split, text, n_copies) VALUES (md5('late one'), 'late', 's', "
        "'inbox', 'late one', 1)"
    )
    con.execute(
        "INSERT INTO predictions.labels (doc_id, batch, checkpoint_id, label, probability) "
        "SELECT md5('late one'), 'late', checkpoint_id, 1, 0.8 FROM students.champion"
    )
    lost = [
        r[0]
        for r in con.execute(
            "SELECT doc_id FROM predictions.labels WHERE batch = 'initial' ORDER BY doc_id LIMIT 3"
        ).fetchall()
    ]
    con.execute("DELETE FROM predictions.labels WHERE doc_id IN (SELECT unnest(?))", [lost])
    con.close()
    cfg = tmp_path / "llambert.yaml"
    cfg.write_text(yaml.safe_dump(tiny_settings_dict(settings.home, small_corpus, tiny_models, checks=LENIENT)))
    defs = build_definitions(LlambertResource(config_path=str(cfg)))
    job = dg.define_asset_job(
        "prediction_checks",
        selection=dg.AssetSelection.checks_for_assets(["predictions", "labels"]),
        partitions_def=batches_partitions,
    )
    defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BATCHES, ["initial", "late"])
    outcome = {}
    for batch in ("initial", "late"):
        result = defs.resolve_job_def("prediction_checks").execute_in_process(
            instance=instance, tags={"dagster/partition": batch}, raise_on_error=False
        )  # checks alone: no asset to take the key from
        outcome[batch] = {e.check_name: e for e in result.get_asset_check_evaluations()}
    cov = outcome["initial"]["coverage"]
    assert not cov.passed and cov.severity == dg.AssetCheckSeverity.ERROR
    table = cov.metadata["failing_rows"].value
    assert all(doc in table for doc in lost) and table.startswith("| doc_id |")
    assert outcome["late"]["coverage"].passed
    assert "1 of 1 documents in batch late" in outcome["late"]["coverage"].description
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        rows = con.execute(
            "SELECT partition, passed, rows_failing FROM ops.contract_results "
            "WHERE table_name = 'predictions.labels' AND contract = 'coverage' ORDER BY partition"
        ).fetchall()
        examples = con.execute(
            "SELECT failing_examples FROM ops.contract_results WHERE contract = 'coverage' AND NOT passed"
        ).fetchone()[0]
    assert rows == [("initial", False, 3), ("late", True, 0)]
    assert lost[0] in examples


def test_each_contract_is_defined_in_one_place():
    """data_contracts/<table>.json lists the contracts; each is the schema check, a group of the suite's
    great-expectations rules, or a gate of <table>.gates.sql, and exactly one of them."""
    for table, specs in contracts.CATALOG.items():
        suites = contracts.SUITES[table]
        schema = {prefix + "schema" for _, prefix in suites}
        rules = {
            prefix + e["meta"]["contract"] for t, prefix in suites for e in contracts.load_suite(t)["expectations"]
        }
        gates = {b.name for b in contracts.load_gates(table) if b.kind == "gate"}
        failing = {b.name for b in contracts.load_gates(table) if b.kind == "failing"}
        assert not (schema & rules) and not (schema & gates) and not (rules & gates), table
        assert {s.name for s in specs} == schema | rules | gates, table
        assert failing <= gates, f"{table}: failing rows for no gate: {failing - gates}"
        for suite, _ in suites:  # column names only: the types are the SQL model's
            assert all(isinstance(c, str) for c in contracts.load_suite(suite)["meta"]["columns"])


def test_column_types_come_from_the_sql_models(tmp_path, monkeypatch):
    """The schema check expects the types the DDL declares: change the DDL and the same table fails it."""
    import re

    from llambert.warehouse import ensure_schemas

    con = duckdb.connect()
    ensure_schemas(con)
    assert contracts.expected_types(con, "raw.corpus")["gold_label"] == "BIGINT"
    assert contracts.expected_types(con, "labeling.sample")["sample_rank"] == "BIGINT"  # a model's query, bound
    assert contracts.check_schema(con, "raw.corpus").passed
    sql = tmp_path / "sql"
    shutil.copytree(contracts.SQL_DIR, sql)
    changed = 0
    for f in sql.rglob("*.sql"):
        text = f.read_text()
        m = re.search(r"CREATE TABLE IF NOT EXISTS raw\.corpus \((.*?)\n\);", text, re.S)
        if m:
            body = re.sub(r"\bgold_label(\s+)BIGINT", r"gold_label\1VARCHAR", m.group(1))
            f.write_text(text[: m.start(1)] + body + text[m.end(1) :])
            changed += 1
    assert changed == 1
    monkeypatch.setattr(contracts, "SQL_DIR", sql)
    r = contracts.check_schema(con, "raw.corpus")
    assert not r.passed and r.failing.rows() == [("gold_label", "text", "BIGINT (integer)")]
    con.close()
