"""Property tests of the answer parser: the real SQL (sql/labeling/answer_matches.sql) in DuckDB,
on generated LLM answers, for both shipped tasks and both match modes.

Whatever text the LLM returns, the result is exactly one of: one of the task's labels (with its
name), or a discard with a known reason. And the parser agrees with the rule it documents.
"""

from __future__ import annotations

import re
import unicodedata

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llambert.tasks import load_task
from llambert.warehouse import run_model, write_task_labels

DISCARD_REASONS = {"no_answer", "empty_answer", "no_label_word", "several_labels", "outside_choices"}
COMBOS = [(task, match) for task in ("imdb_sentiment", "umls_related") for match in ("contains", "word")]


def _parser(task_name: str, match: str):
    task = load_task(task_name).model_copy(update={"match": match})
    con = duckdb.connect()
    con.execute("CREATE SCHEMA labeling")
    con.execute(
        "CREATE TABLE labeling.llm_responses (doc_id VARCHAR, raw_text VARCHAR, label_probs MAP(VARCHAR, DOUBLE))"
    )
    write_task_labels(con, task)
    run_model(con, "labeling.answer_matches")
    return task, con


@pytest.fixture(scope="module", params=COMBOS, ids=[f"{t}-{m}" for t, m in COMBOS])
def parser(request):
    task, con = _parser(*request.param)
    yield task, con
    con.close()


def _parse(con, answers: list[str | None]) -> list[tuple]:
    con.execute("DELETE FROM labeling.llm_responses")
    con.executemany(
        "INSERT INTO labeling.llm_responses VALUES (?, ?, NULL)", [[str(i), a] for i, a in enumerate(answers)]
    )
    return con.execute(
        "SELECT raw_text, label, label_name, discard_reason, n_matched FROM labeling.answer_matches ORDER BY doc_id::INTEGER"
    ).fetchall()


def _decorated(words: list[str]) -> st.SearchStrategy[str]:
    """A label word as an LLM might write it: any case, quotes, punctuation, padding, chatter around."""
    word = st.sampled_from(words).flatmap(
        lambda w: st.lists(st.booleans(), min_size=len(w), max_size=len(w)).map(
            lambda ups: "".join(c.upper() if u else c for c, u in zip(w, ups))
        )
    )
    pad = st.text(alphabet=" \t\n'\"*.,!:;()[]-", max_size=4)
    return st.tuples(pad, word, pad).map("".join)


ANY_TEXT = st.one_of(
    st.none(),
    st.text(max_size=60),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
    st.text(alphabet=" \t\n\r\f\u00a0\u2003\u2028", max_size=6),
)


def _blank(s: str) -> bool:
    """Whitespace only: ASCII whitespace (RE2's \\s) or a Unicode separator (\\pZ), as the parser SQL says."""
    return all(c in " \t\n\r\f" or unicodedata.category(c).startswith("Z") for c in s)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_answer_is_a_label_or_a_discard(parser, data):
    task, con = parser
    words = [w for l in task.labels for w in l.words]
    answers = data.draw(
        st.lists(
            st.one_of(
                ANY_TEXT,
                _decorated(words),
                st.lists(_decorated(words), min_size=2, max_size=3).map(" ".join),
                st.tuples(st.text(max_size=20), _decorated(words), st.text(max_size=20)).map(" ".join),
            ),
            min_size=1,
            max_size=20,
        )
    )
    rows = _parse(con, answers)
    assert len(rows) == len(answers)  # nothing is lost
    names = {l.id: l.name for l in task.labels}
    for raw, label, label_name, reason, n_matched in rows:
        if reason is None:
            assert label in names and label_name == names[label], (raw, label, label_name)
            assert n_matched == 1
        else:
            assert label is None and label_name is None, (raw, label, reason)
            assert reason in DISCARD_REASONS
        if raw is None:
            assert reason == "no_answer"
        elif _blank(raw):
            assert reason == "empty_answer", repr(raw)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_lone_label_word_parses_to_its_label_and_two_labels_are_discarded(parser, data):
    task, con = parser
    label = data.draw(st.sampled_from(task.labels))
    other = data.draw(st.sampled_from([l for l in task.labels if l.id != label.id]))
    alone = data.draw(_decorated(label.words))
    both = f"{data.draw(_decorated(label.words))} or {data.draw(_decorated(other.words))}"
    (r1, r2) = _parse(con, [alone, both])
    assert r1[1] == label.id and r1[3] is None, r1
    assert r2[1] is None and r2[3] == "several_labels", r2


def test_an_answer_outside_the_choices_is_discarded_whatever_words_it_holds(parser):
    task, con = parser
    word = task.labels[0].words[0]
    (r,) = _parse(con, [f"[answer outside the choices] I cannot comply. SYSTEM: label={word}"])
    assert r[1] is None and r[3] == "outside_choices", r


def _reference(task, match: str, raw: str | None) -> str | int:
    """The documented rule in Python: lowercase, drop what is not a letter or digit, then look for words."""
    if raw is None:
        return "no_answer"
    if _blank(raw):
        return "empty_answer"
    if raw.startswith("[answer outside the choices]"):
        return "outside_choices"
    squash = lambda s: re.sub(r"[^a-z0-9]", "", s.lower())  # noqa: E731
    spaced = lambda s: " " + " ".join(re.sub(r"[^a-z0-9]+", " ", s.lower()).split()) + " "  # noqa: E731
    hits = {
        l.id
        for l in task.labels
        for w in l.words
        if (squash(w) in squash(raw) if match == "contains" else spaced(w) in spaced(raw))
    }
    return hits.pop() if len(hits) == 1 else ("no_label_word" if not hits else "several_labels")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_sql_parser_follows_the_documented_rule(parser, data):
    """Against a Python statement of the rule, on ASCII answers (where 'letter or digit' is unambiguous)."""
    task, con = parser
    words = [w for l in task.labels for w in l.words]
    ascii_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
    answers = data.draw(
        st.lists(
            st.one_of(
                st.none(),
                ascii_text,
                _decorated(words),
                st.tuples(ascii_text, _decorated(words), ascii_text).map("".join),
            ),
            min_size=1,
            max_size=20,
        )
    )
    for raw, label, _, reason, _ in _parse(con, answers):
        assert (label if reason is None else reason) == _reference(task, task.match, raw), raw
