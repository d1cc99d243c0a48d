"""What the Dagster UI shows for each asset, check and job: nothing left blank."""

from __future__ import annotations

import dagster as dg

from dagster_project.definitions import build_definitions
from dagster_project.resources import LlambertResource

GROUPS = {"ingest", "labeling", "training", "inference", "quality", "ops"}


def test_every_asset_has_description_group_kinds_and_code_version():
    graph = build_definitions().resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert len(keys) >= 8
    for key in keys:
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description and len(node.description) > 30, name
        assert node.group_name in GROUPS, (name, node.group_name)
        assert node.kinds and "duckdb" in node.kinds, name
        assert node.code_version, name


def test_every_check_says_what_it_checks():
    graph = build_definitions().resolve_asset_graph()
    assert graph.asset_check_keys
    for ck in graph.asset_check_keys:
        assert graph.get_check_spec(ck).description, ck


def test_jobs_people_run_exist_and_are_described():
    defs = build_definitions()
    for name in ("ingest_batch", "label_sample", "train_student", "label_corpus", "evaluate", "teach_and_train"):
        job = defs.resolve_job_def(name)
        assert job.description, name


def test_launchpad_fields_explain_themselves_and_override_settings(tmp_path):
    fields = LlambertResource.model_fields
    names = ("sample_size", "teacher_model", "teacher_mode", "student_model", "student_epochs", "student_recipe")
    for name in (*names, "student_self_distill", "student_distill_from"):
        assert fields[name].description and len(fields[name].description) > 30, name
    r = LlambertResource(
        overrides_yaml="sample: {seed: 5}",
        sample_size=12,
        teacher_mode="choice",
        student_epochs=1,
        student_distill_from="encoder",
    )
    s = r.settings()
    assert (s.sample.size, s.sample.seed, s.teacher.mode, s.student.epochs) == (12, 5, "choice", 1)
    assert s.student.distill_from == "encoder"

    seen = {}

    @dg.asset
    def probe(llambert: LlambertResource) -> None:
        seen["size"] = llambert.settings().sample.size

    # The launchpad's run config reaches the resource that Definitions built with its own values.
    result = dg.materialize(
        [probe],
        resources={"llambert": LlambertResource()},
        run_config={"resources": {"llambert": {"config": {"sample_size": 7}}}},
    )
    assert result.success and seen["size"] == 7


def test_every_table_a_step_writes_is_an_asset_and_predictions_read_the_champion():
    graph = build_definitions().resolve_asset_graph()
    key = lambda name: dg.AssetKey(name.split("."))  # noqa: E731
    for table in (
        "raw.occurrences",
        "raw.rejected",
        "students.training_log",
        "students.candidates",
        "students.champion",
        "students.gold_probe",
        "students.training_examples",
        "students.distill_labels",
    ):
        assert key(table) in graph.get_all_asset_keys(), table
    # One step writes several tables: they are specs of one multi-asset.
    assert graph.get(key("raw.occurrences")).assets_def is graph.get(key("raw.corpus")).assets_def
    assert graph.get(key("students.champion")).assets_def is graph.get(key("students.checkpoints")).assets_def
    # Predictions, the audit and the report read the champion; nothing downstream rebuilds it.
    for reader in ("predictions.labels", "labeling.audit_labels", "evaluation.report"):
        assert key("students.champion") in graph.get(key(reader)).parent_keys, reader


def test_sensors_target_job_objects():
    from dagster_project.jobs import ingest_and_label_job, train_student_job

    sensors = {s.name: s for s in build_definitions().sensors}
    assert sensors["inbox_sensor"].job_name == ingest_and_label_job.name
    assert sensors["retrain_sensor"].job_name == train_student_job.name


def test_settings_and_task_are_read_once_per_run(monkeypatch):
    import llambert.context
    from llambert.config import load_settings
    from llambert.context import Run

    built = []
    of = Run.of.__func__
    monkeypatch.setattr(llambert.context.Run, "of", classmethod(lambda cls, s: built.append(s) or of(cls, s)))
    seen = []

    @dg.asset
    def first(llambert: LlambertResource) -> None:
        seen.append((llambert.run, llambert.settings(), llambert.task))

    @dg.asset(deps=[first])
    def second(llambert: LlambertResource) -> None:
        seen.append((llambert.run, llambert.settings(), llambert.task))

    assert dg.materialize([first, second], resources={"llambert": LlambertResource(sample_size=9)}).success
    assert len(built) == 1 and seen[0][0] is seen[1][0] and seen[0][1].sample.size == 9

    # A run validated by the caller (python -m dagster_project.run) is used as it is: not re-read.
    run = of(Run, load_settings(overrides={"sample": {"size": 11}}))
    built.clear()
    seen.clear()
    assert dg.materialize([first], resources={"llambert": LlambertResource.of(run)}).success
    assert built == [] and seen[0][0] is run
