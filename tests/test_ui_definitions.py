"""What the Dagster UI shows for each asset, check and job: nothing left blank."""

from __future__ import annotations

import dagster as dg

from dagster_project.definitions import build_definitions
from dagster_project.resources import LlambertResource

GROUPS = {"ingest", "labeling", "training", "inference", "quality"}


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
    for name in ("sample_size", "teacher_model", "teacher_mode", "student_model", "student_epochs", "student_recipe"):
        assert fields[name].description and len(fields[name].description) > 30, name
    r = LlambertResource(overrides_yaml="sample: {seed: 5}", sample_size=12, teacher_mode="choice", student_epochs=1)
    s = r.settings()
    assert (s.sample.size, s.sample.seed, s.teacher.mode, s.student.epochs) == (12, 5, "choice", 1)

    seen = {}

    @dg.asset
    def probe(llambert: LlambertResource) -> None:
        seen["size"] = llambert.settings().sample.size

    # The launchpad's run config reaches the resource that Definitions built with its own values.
    result = dg.materialize([probe], resources={"llambert": LlambertResource()},
                            run_config={"resources": {"llambert": {"config": {"sample_size": 7}}}})
    assert result.success and seen["size"] == 7
