"""Task specs and settings: validated, with errors that name the setting."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml

from llambert.config import ConfigError, load_settings
from llambert.preflight import check_ready
from llambert.tasks import available_tasks, load_task


def test_shipped_tasks_load():
    assert {"imdb_sentiment", "umls_related"} <= set(available_tasks())
    imdb = load_task("imdb_sentiment")
    assert imdb.label_names == ["negative", "positive"] and imdb.label_ids == [0, 1]
    assert imdb.system_prompt == "Please answer with 'positive' or 'negative' only!"
    assert imdb.user_template.startswith("Decide if the following movie review is positive or negative: \n{text}\n")
    yes_no = load_task("umls_related")
    assert yes_no.label_names == ["no", "yes"] and yes_no.match == "word"


def test_task_version_changes_with_prompt(tmp_path):
    base = yaml.safe_load(open(load_task.__globals__["TASKS_DIR"] / "imdb_sentiment.yaml"))
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(base))
    v1 = load_task(p).version
    base["system_prompt"] = "Answer in one word."
    p.write_text(yaml.safe_dump(base))
    assert load_task(p).version != v1


@pytest.mark.parametrize(
    "change, message",
    [
        ({"user_template": "no slot here"}, "{text} slot"),
        ({"labels": [{"id": 0, "name": "a"}]}, "labels"),
        ({"labels": [{"id": 0, "name": "a"}, {"id": 0, "name": "b"}]}, "distinct"),
        ({"labels": [{"id": 0, "name": "a", "words": ["x"]}, {"id": 1, "name": "b", "words": ["x"]}]}, "two labels"),
        ({"examples": [{"text": "t", "label": "maybe"}]}, "not one of"),
    ],
)
def test_bad_task_files_are_rejected_with_reason(tmp_path, change, message):
    spec = {"name": "t", "labels": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}], "user_template": "Q: {text}"}
    spec.update(change)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match=message):
        load_task(p)


def test_unknown_task_lists_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="imdb_sentiment"):
        load_task("no_such_task")


def test_settings_defaults_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("LLAMBERT_CONFIG", raising=False)
    monkeypatch.setenv("LLAMBERT_SAMPLE_SIZE", "123")
    monkeypatch.setenv("LLAMBERT_HOME", str(tmp_path))
    s = load_settings()
    assert s.sample.size == 123 and s.home == tmp_path
    assert s.teacher.model == "qwen2.5-coder-1.5b-instruct" and s.student.model == "all-minilm-l6-v2"
    assert s.warehouse_path == tmp_path / "warehouse.duckdb"


def test_invalid_settings_name_the_setting(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("sample: {size: 0}\nteacher: {mode: guess}\n")
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert "sample.size" in str(e.value) and "teacher.mode" in str(e.value)
    p.write_text("sample: {pool_splits: [train, test]}\n")
    with pytest.raises(ConfigError, match="both in pool_splits and exclude_splits"):
        load_settings(p)
    p.write_text("nonsense_key: 1\n")
    with pytest.raises(ConfigError, match="nonsense_key"):
        load_settings(p)


def test_missing_data_dir_fails_before_work(tmp_path):
    s = load_settings(overrides={"data_dir": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="LLAMBERT_DATA_DIR"):
        check_ready(s)


def test_teacher_batch_size_defaults_per_backend():
    from llambert.config import TeacherConfig

    assert TeacherConfig().resolved_batch_size() == 1  # transformers runs on the CPU: no padding at batch 1
    assert TeacherConfig(backend="vllm").resolved_batch_size() == 8
    assert TeacherConfig(backend="openai", batch_size=32).resolved_batch_size() == 32


def test_config_in_the_current_folder_and_overrides_from_the_environment(monkeypatch, tmp_path):
    """`llambert` run from a data folder reads its llambert.yaml; LLAMBERT_OVERRIDES goes over the
    file (relative paths in the file stay relative to it) and under explicit overrides."""
    monkeypatch.delenv("LLAMBERT_CONFIG", raising=False)
    (tmp_path / "llambert.yaml").write_text("home: h\nsample: {size: 50, seed: 3}\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings().home == tmp_path / "h"
    monkeypatch.setenv("LLAMBERT_OVERRIDES", '{"sample": {"size": 7}, "checks": {"min_minority_share": 0.1}}')
    s = load_settings()
    assert (s.sample.size, s.sample.seed, s.checks.min_minority_share, s.home) == (7, 3, 0.1, tmp_path / "h")
    assert load_settings(overrides={"sample": {"size": 9}}).sample.size == 9
    for bad, message in (
        ("[1, 2]", "must be a YAML mapping"),
        ("{a: [", "not valid YAML"),
        ("{sample: {size: 0}}", "sample.size"),
    ):
        monkeypatch.setenv("LLAMBERT_OVERRIDES", bad)
        with pytest.raises(ConfigError, match=message):
            load_settings()


# -- Setting errors found mid-run: ConfigError naming the setting (so `llambert run` exits 2) ----------------
@contextlib.contextmanager
def _ingested(tmp_path, data_dir, **over):
    """Settings and a warehouse that holds the small corpus (no model needed)."""
    from llambert import pipeline
    from llambert.warehouse import open_warehouse

    settings = load_settings(
        overrides={
            "home": str(tmp_path / "home"),
            "data_dir": str(data_dir),
            "sample": {"size": 40, "strategy": "random"},
        }
        | over
    )
    with open_warehouse(settings.warehouse_path) as con:
        pipeline.ingest_batch(con, settings)
        yield settings, con


def test_an_empty_pool_names_sample_pool_splits(tmp_path, small_corpus):
    from llambert import pipeline

    with _ingested(tmp_path, small_corpus, sample={"pool_splits": ["no_such_split"]}) as (settings, con):
        with pytest.raises(ConfigError, match=r"setting 'sample.pool_splits'.*no_such_split"):
            pipeline.build_sample(con, settings)


def test_a_recipe_without_its_labels_names_student_recipe(tmp_path, small_corpus):
    from llambert import pipeline
    from llambert.warehouse import run_model

    with _ingested(tmp_path, small_corpus, student={"recipe": "llambert"}) as (settings, con):
        pipeline.build_sample(con, settings)
        run_model(
            con, "labeling.llm_responses", {"model_identity": "none", "prompt_version": "none", "decoding": "none"}
        )  # no teacher answer: no LLM label
        pipeline.parse_labels(con, settings)
        with pytest.raises(ConfigError, match=r"setting 'student.recipe': 'llambert' needs parsed LLM labels"):
            pipeline.training_phases(con, settings)


def test_too_many_gold_examples_names_teacher_few_shot(tmp_path, small_corpus):
    from llambert import pipeline
    from llambert.teacher import with_gold_examples

    with _ingested(tmp_path, small_corpus, teacher={"few_shot": 10_000, "few_shot_source": "gold"}) as (settings, con):
        pipeline.build_sample(con, settings)
        with pytest.raises(ConfigError, match=r"setting 'teacher.few_shot' = 10000"):
            with_gold_examples(con, settings, load_task(settings.task))


def test_a_setting_error_mid_run_exits_2(tmp_path, small_corpus, tiny_models, monkeypatch, capsys):
    """Found only once the data is in (ingest ran), yet said as a setting error, like those found before work."""
    from dagster_project.run import main
    from tests.conftest import tiny_settings_dict

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    cfg = tmp_path / "llambert.yaml"
    cfg.write_text(
        yaml.safe_dump(
            tiny_settings_dict(tmp_path / "home", small_corpus, tiny_models, sample={"pool_splits": ["no_such_split"]})
        )
    )
    assert main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "llambert: setting 'sample.pool_splits'" in err


def test_relative_home_gives_dagster_an_absolute_home(tmp_path, monkeypatch):
    """`--set home=var/x` is relative; Dagster refuses a relative DAGSTER_HOME ("must be an absolute path")."""
    import os

    from dagster_project.instance import ensure_dagster_home

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = ensure_dagster_home(Path("var/x/dagster_home"))
    assert home.is_absolute() and home == tmp_path / "var" / "x" / "dagster_home"
    assert os.environ["DAGSTER_HOME"] == str(home) and (home / "dagster.yaml").exists()


def test_teacher_mode_defaults_to_choice_except_for_a_hosted_api():
    """choice by default (its probabilities are the students' soft labels); the openai backend keeps generate (a
    hosted API may not constrain answers or return log-probabilities); a mode that is set is kept either way."""
    from llambert.config import TeacherConfig

    assert TeacherConfig().mode == "choice" and TeacherConfig(backend="vllm").mode == "choice"
    assert TeacherConfig(backend="openai").mode == "generate"
    assert TeacherConfig(backend="openai", mode="choice").mode == "choice"
    assert TeacherConfig(mode="generate").mode == "generate"
