"""The teacher cascade (issue 17, item 4): a small model answers first in choice mode, only the documents
it is unsure of go to the teacher, every answer is cached, and the warehouse says which model answered.

Two tiny random teachers (tests/tiny.py): the conftest's, taught the task's format, as the teacher, and an
untaught one with other weights as the small model (its label probabilities sit near 0.5, never 1).
"""

from __future__ import annotations

import pytest

from llambert.config import ConfigError, load_settings
from llambert.warehouse import open_warehouse
from tests.conftest import tiny_settings_dict

N_DOCS = 8


@pytest.fixture(scope="module")
def small_teacher(tmp_path_factory):
    from tests.tiny import build_tiny_teacher

    return build_tiny_teacher(tmp_path_factory.mktemp("cascade") / "small", seed=1)


def _settings(tmp_path, small_corpus, tiny_models, small_teacher, threshold: float, mode: str = "generate"):
    d = tiny_settings_dict(
        tmp_path / "home",
        small_corpus,
        tiny_models,
        sample={"size": N_DOCS, "strategy": "random"},
        teacher={"mode": mode, "cascade": {"model": str(small_teacher), "threshold": threshold}},
    )
    return load_settings(overrides=d)


def _responses(con) -> list[tuple]:
    return con.execute(
        "SELECT doc_id, answered_by, model_identity, list_max(map_values(label_probs)) AS top "
        "FROM labeling.llm_responses ORDER BY sample_rank"
    ).fetchall()


def _runs(con) -> list[tuple]:
    return con.execute(
        "SELECT role, cascade_threshold, requested, cached, prompts, escalated, escalated_share, model_identity "
        "FROM labeling.llm_runs ORDER BY started_at, role"
    ).fetchall()


def test_cascade_escalates_by_threshold_and_reuses_both_caches(tmp_path, small_corpus, tiny_models, small_teacher):
    from llambert import pipeline

    at = {th: _settings(tmp_path, small_corpus, tiny_models, small_teacher, th) for th in (0.5, 1.0)}
    s = at[0.5]
    with open_warehouse(s.warehouse_path) as con:
        pipeline.ingest_batch(con, s)
        pipeline.build_sample(con, s)

        # 0.5 on two labels: the small model is always sure enough, the teacher is never asked.
        low = pipeline.label_sample(con, s)
        rows = _responses(con)
        small_id = {r[2] for r in rows}
        assert len(rows) == N_DOCS and {r[1] for r in rows} == {"cascade_small"} and len(small_id) == 1
        assert all(r[3] >= 0.5 for r in rows)
        assert low["escalated"] == 0 and low["escalated_share"] == 0.0 and low["cascade_asked"] == N_DOCS
        assert low["cascade_model"] in small_id and low["model"] not in small_id
        [run] = _runs(con)
        assert run[:7] == ("cascade_small", 0.5, N_DOCS, 0, N_DOCS, 0, 0.0)

        # 1.0: the untaught small model is never that sure, every document goes to the teacher; the
        # small model's answers all come from the cache.
        high = pipeline.label_sample(con, at[1.0])
        rows = _responses(con)
        assert {r[1] for r in rows} == {"teacher"} and {r[2] for r in rows} == {high["model"]}
        assert high["escalated"] == N_DOCS and high["escalated_share"] == 1.0
        assert high["cascade_asked"] == 0 and high["asked"] == N_DOCS
        small_run, teacher_run = _runs(con)[1:]
        assert small_run[:7] == ("cascade_small", 1.0, N_DOCS, N_DOCS, 0, N_DOCS, 1.0)
        assert teacher_run[:5] == ("teacher", 1.0, N_DOCS, 0, N_DOCS)

        # A threshold in between: both models answer, each document by the rule, and nobody is asked again.
        tops = sorted(
            r[0]
            for r in con.execute(
                "SELECT list_max(map_values(c.label_probs)) FROM labeling.llm_requests q "
                "JOIN labeling.llm_cache c USING (cache_key) WHERE q.model_identity = ?",
                [low["cascade_model"]],
            ).fetchall()
        )
        mid = (tops[N_DOCS // 2 - 1] + tops[N_DOCS // 2]) / 2
        assert 0.5 <= tops[0] < mid < tops[-1] < 1.0
        s_mid = _settings(tmp_path, small_corpus, tiny_models, small_teacher, mid)
        middle = pipeline.label_sample(con, s_mid)
        assert middle["asked"] == 0 and middle["cascade_asked"] == 0
        rows = _responses(con)
        assert len(rows) == N_DOCS and {r[1] for r in rows} == {"cascade_small", "teacher"}
        assert {r[2] for r in rows} == {middle["model"], middle["cascade_model"]}
        small_top = dict(
            con.execute(
                "SELECT q.doc_id, list_max(map_values(c.label_probs)) FROM labeling.llm_requests q "
                "JOIN labeling.llm_cache c USING (cache_key) WHERE q.model_identity = ?",
                [middle["cascade_model"]],
            ).fetchall()
        )
        for doc_id, by, identity, _ in rows:
            assert (by == "cascade_small") == (small_top[doc_id] >= mid), doc_id
            assert identity == (middle["cascade_model"] if by == "cascade_small" else middle["model"])
        assert middle["escalated"] == sum(r[1] == "teacher" for r in rows)
        small_run, teacher_run = _runs(con)[3:]
        assert small_run[0] == "cascade_small" and small_run[4] == 0 and small_run[5] == middle["escalated"]
        assert small_run[6] == pytest.approx(middle["escalated"] / N_DOCS)
        # the escalated documents' teacher answers were all cached
        assert teacher_run[:5] == ("teacher", mid, middle["escalated"], middle["escalated"], 0)

        # Downstream: the parsed labels say which model answered.
        pipeline.parse_labels(con, s_mid)
        parsed = con.execute("SELECT doc_id, answered_by, model_identity FROM labeling.parsed_labels").fetchall()
        assert parsed and {(d, b, i) for d, b, i, _ in rows} >= set(parsed)
        total = con.execute("SELECT sum(prompts) FROM labeling.llm_runs").fetchone()[0]
    assert total == 2 * N_DOCS  # each model asked once per document, over three runs


def test_without_a_cascade_every_answer_is_the_teachers(tmp_path, small_corpus, tiny_models):
    from llambert import pipeline

    d = tiny_settings_dict(tmp_path / "home", small_corpus, tiny_models, sample={"size": 4, "strategy": "random"})
    s = load_settings(overrides=d)
    with open_warehouse(s.warehouse_path) as con:
        pipeline.ingest_batch(con, s)
        pipeline.build_sample(con, s)
        out = pipeline.label_sample(con, s)
        rows = _responses(con)
        runs = _runs(con)
    assert len(rows) == 4 and {(r[1], r[2]) for r in rows} == {("teacher", out["model"])}
    assert out["cascade_model"] is None and "escalated" not in out.metadata()
    assert [(r[0], r[1], r[5]) for r in runs] == [("teacher", None, None)]


@pytest.mark.parametrize(
    ("cascade", "needle"),
    [
        ({"model": "TEACHER", "threshold": 0.9}, "teacher.cascade.model is the teacher itself"),
        ({"model": "small", "threshold": 0.3}, "teacher.cascade.threshold must be within [0.5, 1.0]"),
        ({"model": "small", "threshold": 1.2}, "teacher.cascade.threshold must be within [0.5, 1.0]"),
        ({"model": "small", "mode": "generate"}, "must score the labels (choice mode)"),
        ({"model": " "}, "teacher.cascade.model is empty"),
        ({"threshold": 0.9}, "teacher.cascade.model"),
    ],
)
def test_cascade_settings_are_checked(cascade, needle):
    with pytest.raises(ConfigError) as e:
        load_settings(overrides={"teacher": {"model": "TEACHER", "cascade": cascade}})
    assert needle in str(e.value)


def test_cascade_defaults_off_and_runs_the_small_model_in_choice_mode():
    from llambert.teacher import cascade_settings

    assert load_settings(overrides={}).teacher.cascade is None
    s = load_settings(overrides={"teacher": {"mode": "generate", "cascade": {"model": "small"}}})
    assert s.teacher.cascade.threshold == 0.6
    small = cascade_settings(s)
    assert (small.teacher.model, small.teacher.mode, small.teacher.cascade) == ("small", "choice", None)
    assert s.teacher.model != "small" and s.teacher.mode == "generate"  # the teacher's own settings are kept


def test_preflight_checks_the_cascade_model_too(tmp_path, small_corpus, tiny_models):
    from llambert.preflight import check_ready

    d = tiny_settings_dict(
        tmp_path / "home", small_corpus, tiny_models, teacher={"cascade": {"model": str(tmp_path / "no-such-model/")}}
    )
    with pytest.raises(ConfigError, match=r"setting 'teacher\.cascade\.model'"):
        check_ready(load_settings(overrides=d))
