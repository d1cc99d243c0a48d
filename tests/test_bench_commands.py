"""The benchmark commands (benchmarks/): every entry point starts, the teacher bench scores raw answers
through the project's own parser, and the reports end with the prose kept in docs/."""

from __future__ import annotations

import importlib
import json

import duckdb
import polars as pl
import pytest

BENCHMARKS = ("teacher", "student", "quality", "scale", "teacher_prefix", "teacher_gpu", "teacher_then_now")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_command_answers_help(name, capsys):
    """`python -m benchmarks.<name> --help`, as the Makefile's bench-* targets run them."""
    module = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


def test_teacher_bench_scores_answers_through_the_task_parser(tmp_path):
    """Raw answers go through sql/labeling/answer_matches.sql: a clear answer is a label, the rest discards."""
    from benchmarks.teacher import parse, score
    from llambert.tasks import load_task
    from llambert.teacher.base import Answer

    task = load_task("imdb_sentiment")
    docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(4)], "text": ["t"] * 4, "gold": [1, 0, 1, 0]})
    answers = [Answer("Positive."), Answer("negative"), Answer("positive or negative"), Answer("")]
    con = duckdb.connect(str(tmp_path / "bench.duckdb"))
    con.execute("CREATE SCHEMA labeling")
    parsed = parse(con, task, docs, answers)
    assert parsed.sort("doc_id")["label"].to_list() == [1, 0, None, None]
    got = score(parsed)
    assert got["n"] == 4 and got["accuracy"] == 0.5 and got["discard_rate"] == 0.5 and got["share_positive"] == 0.25


def test_reports_end_with_the_prose_kept_in_docs(tmp_path):
    """The teacher report's Notes and the student report's design notes are docs/bench_*_notes.md, as written."""
    from benchmarks import student, teacher
    from llambert.reporting import markdown_table

    con = teacher.open_bench(tmp_path / "teacher.duckdb")
    md = tmp_path / "teacher.md"
    teacher.report(con, md)
    assert md.read_text().endswith("## Notes\n\n" + teacher.NOTES.read_text())

    speed = pl.DataFrame(
        schema={
            "what": pl.Utf8,
            "seconds": pl.Float64,
            "docs_per_s": pl.Float64,
            "accuracy_pct": pl.Float64,
            "docs_per_cpu_s": pl.Float64,
            "details": pl.Utf8,
        }
    )
    curve = pl.DataFrame(
        schema={"label_source": pl.Utf8, "n_labels": pl.Int64, "test_accuracy_pct": pl.Float64, "config": pl.Utf8}
    )
    text = student.render_markdown(speed, curve, markdown_table)
    assert text.endswith("\n" + student.DESIGN_NOTES.read_text())
    assert "benchmarks/student.py" in text and "llambert/bench" not in text


def test_quality_plot_keeps_the_docs_figures_and_never_passes_random_labels_off_as_uncertainty(tmp_path, monkeypatch):
    """docs/bench_quality.png: earlier sessions' figures come from the doc's IMDb table; a random-sample row stands
    in for an uncertainty line only below the budgets where uncertainty sampling ran; a collapsed point is drawn."""
    from benchmarks import quality_students as q

    doc = tmp_path / "bench_quality.md"
    doc.write_text(
        "# x\n\n## imdb\n\n| LLM labels | strategy | test acc. | f1 |\n|---|---|---|---|\n"
        "| 250 | default (= ensemble) | 81.65% | 81.56% |\n| 250 | paper | 50.00% | 33.33% |\n"
        "| 500 | linear | 82.70% | 82.67% |\n| 500 | uncertainty:default (= encoder) | 87.45% | 87.45% |\n"
        "\n## short\n\n| 300 | linear | 63.40% | 63.32% |\n"
    )
    monkeypatch.setattr(q, "DOC", doc)
    monkeypatch.setattr(q, "PLOT", tmp_path / "plot.png")
    rows = q.doc_rows("imdb").with_columns(pl.col("acc").round(4))
    assert rows.rows() == [
        (250, "default", 0.8165),
        (250, "paper", 0.5),
        (500, "linear", 0.827),
        (500, "uncertainty:default", 0.8745),
    ]
    assert q.doc_rows("short").with_columns(pl.col("acc").round(4)).rows() == [(300, "linear", 0.634)]

    import matplotlib.axes

    drawn, real_plot = {}, matplotlib.axes.Axes.plot

    def spy(self, xs, ys, *a, **kw):
        if "label" in kw:
            drawn[kw["label"]] = list(zip(xs, ys))
        return real_plot(self, xs, ys, *a, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    q._plot(rows.with_columns(corpus=pl.lit("imdb")))
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    label = dict((s, lab) for s, lab, _ in q.PLOT_SERIES)
    assert drawn[label["default"]] == [(250, pytest.approx(81.65)), (500, pytest.approx(87.45))]
    assert drawn[label["linear"]] == [(500, pytest.approx(82.7))]
    assert label["uncertainty:linear"] not in drawn  # the random floor at 500 is not the uncertainty floor
    assert drawn[label["paper"]] == [(250, q.FLOOR_Y)]  # 50%: on the axis, annotated


def test_teacher_slice_keeps_the_test_slices_class_shares_in_its_order():
    from benchmarks.quality import teacher_slice

    test = pl.DataFrame({"doc_key": [f"d{i}" for i in range(10)], "gold": [0, 1, 0, 0, 0, 0, 1, 0, 0, 0]})
    assert teacher_slice(test, 5)["doc_key"].to_list() == ["d0", "d1", "d2", "d3", "d4"]  # 20% positive: 1 of 5
    balanced = pl.DataFrame({"doc_key": [f"d{i}" for i in range(8)], "gold": [1, 1, 1, 0, 1, 0, 0, 0]})
    assert teacher_slice(balanced, 4)["doc_key"].to_list() == ["d0", "d1", "d3", "d5"]


def test_quality_teacher_stage_answers_the_test_slice_once_and_scores_it(tmp_path, tiny_models, imdb_dir, monkeypatch):
    """`python -m benchmarks.quality teacher`: the teacher alone on a balanced prefix of the IMDb test slice, its
    answers in the shared cache under corpus imdb-test (exported), a second run asks nothing."""
    from benchmarks import quality, quality_data

    monkeypatch.setenv("LLAMBERT_DATA_DIR", str(imdb_dir))
    monkeypatch.setenv("LLAMBERT_MODEL_CACHE", str(tmp_path / "models"))
    monkeypatch.setattr(quality_data, "DB", tmp_path / "quality.duckdb")
    monkeypatch.setattr(quality_data, "ANSWERS", tmp_path / "answers.parquet")
    tiny = str(tiny_models["teacher"])
    argv = ["teacher", "--teacher", tiny, "--teacher-n", "4", "--teacher-corpora", "imdb"]
    quality.main(argv)
    answers = pl.read_parquet(tmp_path / "answers.parquet")
    assert answers.height == 4 and answers["corpus"].unique().to_list() == ["imdb-test"]
    assert answers["doc_key"].str.starts_with("test:").all()
    sub = quality.teacher_slice(quality_data.load_corpus("imdb").test, 4)
    assert sorted(answers["doc_key"].to_list()) == sorted(sub["doc_key"].to_list()) and sub["gold"].sum() == 2
    quality.main(argv)  # cached: nothing new is asked
    again = pl.read_parquet(tmp_path / "answers.parquet")
    assert again.height == 4 and again["answered_at"].to_list() == answers["answered_at"].to_list()
    con = quality_data.connect()
    out = quality.teacher_on_test(con, quality_data.Teacher(tiny, con), 4, ["imdb"]).row(0, named=True)
    probs = [json.loads(x) for x in answers.sort("doc_key")["label_probs"].to_list()]
    gold = dict(zip(sub["doc_key"].to_list(), sub["gold"].to_list()))
    right = sum(
        int(p["positive"] > p["negative"]) == gold[k] for p, k in zip(probs, answers.sort("doc_key")["doc_key"])
    )
    assert out["answered"] == 4 and out["accuracy"] == right / 4 and out["prompts_per_s"] > 0


def test_teacher_then_now_runs_each_arm_from_its_own_code_and_resumes(tmp_path, tiny_models, imdb_dir, monkeypatch):
    """`python -m benchmarks.teacher_then_now`: the 'then' arm imports the llambert exported from the named commit
    (not this checkout's), every arm answers every review once (a rerun asks nothing), and the report compares
    the arms on the same reviews."""
    from benchmarks import teacher_then_now as tn

    monkeypatch.setenv("LLAMBERT_MODEL_CACHE", str(tmp_path / "models"))
    monkeypatch.setattr(tn, "BENCH_VAR", tmp_path)
    db, md = tmp_path / "teacher.duckdb", tmp_path / "then_now.md"
    tiny = str(tiny_models["teacher"])
    argv = ["--model", tiny, "--then", "HEAD", "--n", "4", "--chunk", "2", "--arms", "then:generate", "now:choice"]
    argv += ["--db", str(db), "--md", str(md), "--data-dir", str(imdb_dir)]
    out = tn.main(argv)
    exported = list(tmp_path.glob("then-*/llambert/teacher/__init__.py"))
    assert len(exported) == 1  # the 'then' code is a copy of the commit, outside this checkout
    assert out["arm"].to_list() == ["then:generate", "now:choice"] and out["n"].to_list() == [4, 4]
    assert out["x_cpu"][0] == 1.0 and out["prompts_per_cpu_s"].min() > 0
    con = duckdb.connect(str(db))
    first = con.execute("SELECT arm, doc_id, measured_at FROM bench.teacher_then_now ORDER BY ALL").fetchall()
    con.close()
    assert len(first) == 8
    tn.main(argv)  # resumed: nothing is asked again
    con = duckdb.connect(str(db))
    assert con.execute("SELECT arm, doc_id, measured_at FROM bench.teacher_then_now ORDER BY ALL").fetchall() == first
    choice = con.execute("SELECT label_probs, raw_text FROM bench.teacher_then_now WHERE arm = 'now:choice'").fetchall()
    assert all(p is not None and raw in json.loads(p) for p, raw in choice)
    assert "| then:generate |" in md.read_text() and "+0.0 pt" in md.read_text()
    # the now arm's rows are keyed by this checkout's decoding: a changed default is a new arm, not "done"
    now = con.execute("SELECT DISTINCT ref, decoding FROM bench.teacher_then_now WHERE arm = 'now:choice'").fetchall()
    con.close()
    assert now == [(tn.now_ref(tn.Arm("now", "choice"), tiny), now[0][1])] and now[0][0].startswith("now@")
    assert f"`now:choice`: `{now[0][1]}`" in md.read_text()
    assert tn.now_ref(tn.Arm("now", "generate"), tiny) != now[0][0]
    tn.main(argv + ["--rerun"])  # every arm answers every review again, in one run
    con = duckdb.connect(str(db))
    again = con.execute("SELECT arm, doc_id, measured_at FROM bench.teacher_then_now ORDER BY ALL").fetchall()
    con.close()
    assert [r[:2] for r in again] == [r[:2] for r in first] and all(a[2] > f[2] for a, f in zip(again, first))


def test_quality_default_is_paired_with_the_teacher_on_the_same_reviews(tmp_path, monkeypatch, capsys):
    """bench.quality_test_predictions: the champion row gets its champion's labels from the latest run, and
    paired_vs_teacher scores them against the teacher review by review on teacher_slice, the teacher's answers
    joined by text (a review answered under another split's doc_key counts); the stage log and the report say it."""
    import statistics
    from types import SimpleNamespace

    from benchmarks import quality_students as q
    from benchmarks.quality import TEACHER
    from benchmarks.quality_data import Corpus
    from llambert.config import StudentConfig

    for name in ("RESULTS_EXPORT", "PREDICTIONS_EXPORT", "FULLTEST_EXPORT", "ANSWERS"):
        monkeypatch.setattr(q, name, tmp_path / f"{name.lower()}.parquet")
    monkeypatch.setattr(q, "RESULTS_DB", tmp_path / "results.duckdb")
    for name, path in (("DOC", "bench_quality.md"), ("PLOT", "bench_quality.png"), ("NOTES", "no_notes.md")):
        monkeypatch.setattr(q, name, tmp_path / path)

    def frame(keys, texts, gold):
        return pl.DataFrame({"doc_key": keys, "text": texts, "gold": gold}, schema_overrides={"gold": pl.Int64})

    # teacher_slice(test, 4) is A, B, C, D (the first two of each class, in slice order); C's text is also unsup:9.
    test = frame(
        [f"test:{i}" for i in range(1, 7)], ["fine", "dull", "loved it", "a mess", "great", "awful"], [1, 0] * 3
    )
    corpus = Corpus("imdb", frame(["unsup:9", "unsup:8"], ["loved it", "meh"], [None, None]), test.head(0), test)
    monkeypatch.setattr(q, "load_corpus", lambda name: corpus)

    def answers(rows):
        pl.DataFrame(
            [
                {
                    "model": model,
                    "decoding": "{}",
                    "prompt_sha": f"sha{i}",
                    "corpus": c,
                    "doc_key": k,
                    "label_probs": json.dumps({"positive": float(lab), "negative": 1.0 - lab}),
                    "raw_text": "",
                    "prompt_tokens": 10,
                    "seconds": 0.5,
                    "answered_at": i,
                }
                for i, (model, c, k, lab) in enumerate(rows)
            ]
        ).with_columns(pl.col("answered_at").cast(pl.Datetime("us"))).write_parquet(q.ANSWERS)

    teacher = f"{TEACHER}@abc"
    # The teacher: A right, B wrong, C (only under unsup:9) wrong, D right, E right, F right; another model's
    # answer to B is not the teacher's.
    rows = [(teacher, "imdb-test", "test:1", 1), (teacher, "imdb-test", "test:2", 1), ("other@x", "imdb", "test:2", 0)]
    rows += [(teacher, "imdb", "unsup:9", 0), (teacher, "imdb-test", "test:4", 0)]
    rows += [(teacher, "imdb-test", "test:5", 1), (teacher, "imdb-test", "test:6", 0)]
    answers(rows)
    assert q.teacher_alone("imdb", 4) | {"prompts_per_s": None} == {
        "n": 4,
        "accuracy": 0.5,
        "macro_f1": pytest.approx(0.5),
        "share_positive": 0.5,
        "prompts_per_s": None,
    }

    con = q.connect()
    keys = test["doc_key"].to_list()
    student = [1, 0, 1, 1, 1, 0]  # A right, B right (won), C right (won), D wrong (lost), E right, F right
    candidates = {
        "linear": (0.80, 1000.0, [0] * 6),
        "encoder": (0.90, 100.0, student),
        "ensemble": (0.85, 80.0, [1] * 6),
    }
    for s, (probe, dps, labels) in candidates.items():
        q._insert_result(con, [q.RUN_ID, "imdb", 250, s, 250, None, 6, 0.5], [0.5, probe, 1.0, dps], {})
        q._insert_predictions(con, q.RUN_ID, "imdb", 250, s, keys, labels)
    con.execute(
        "INSERT INTO bench.quality_test_predictions VALUES "
        + ", ".join(f"('20000101T000000', 'imdb', 250, 'default', '{k}', 0, TIMESTAMP '2000-01-01')" for k in keys)
    )  # an earlier run's default: not the latest
    trained = {k: SimpleNamespace(seconds=1.0, n_train=250, path=tmp_path / k) for k in candidates}
    q._champion_row(con, corpus, 250, "", "default", tuple(candidates), trained, None, StudentConfig())
    copied = con.execute(
        "SELECT doc_key, label FROM bench.quality_test_predictions WHERE run_id = ? AND strategy = 'default' "
        "ORDER BY doc_key",
        [q.RUN_ID],
    ).fetchall()
    assert copied == list(zip(keys, student))
    assert pl.read_parquet(q.PREDICTIONS_EXPORT).height == 4 * 6 + 6

    p = q.paired_vs_teacher("imdb", 250, "default", 4, con=con)
    half = 1.96 * (statistics.variance([0, 1, 1, -1]) / 4) ** 0.5
    assert p == {
        "run_id": q.RUN_ID,
        "n": 4,
        "student_accuracy": 0.75,
        "teacher_accuracy": 0.5,
        "diff_pt": 25.0,
        "diff_lo_pt": pytest.approx(25 - 100 * half, abs=1e-9),
        "diff_hi_pt": pytest.approx(25 + 100 * half, abs=1e-9),
        "won": 2,
        "lost": 1,
        "agreement": 0.25,
    }
    assert q.paired_vs_teacher("imdb", 250, "paper", 4, con=con) is None  # no predictions
    q._insert_predictions(con, q.RUN_ID, "imdb", 250, "encoder_hard", keys[1:], student[1:])
    assert q.paired_vs_teacher("imdb", 250, "encoder_hard", 4, con=con) is None  # test:1 has no prediction

    q.log_paired(con, {"imdb": corpus})
    line = "paired on the teacher's 6: student 83.3% vs teacher 66.7%, Δ +16.7 pt"
    assert f"imdb-250 default: {line}" in capsys.readouterr().err
    con.close()
    q.stage_report(SimpleNamespace(force_report=True))
    assert f"- 250 `default`: {line}" in q.DOC.read_text()
    assert "won/lost 2/1" in q.DOC.read_text()

    answers([r for r in rows if r[2] != "unsup:9"])  # C unanswered: no paired figure
    assert q.paired_vs_teacher("imdb", 250, "default", 4) is None


def test_teacher_then_now_refuses_an_unknown_commit_or_arm_before_loading_anything(tmp_path, capsys):
    """A bad --then names the setting and what to do; a bad --arms spec names the spec; neither starts a worker."""
    from benchmarks import teacher_then_now as tn

    with pytest.raises(SystemExit, match=r"--then no-such-ref-xyz: not a commit of this checkout"):
        tn.main(["--then", "no-such-ref-xyz", "--db", str(tmp_path / "t.duckdb"), "--md", str(tmp_path / "t.md")])
    with pytest.raises(SystemExit, match=r"--arms: 'now:sample' is not then\|now:generate\|choice"):
        tn.main(["--arms", "then:generate", "now:sample", "--db", str(tmp_path / "t.duckdb")])
    assert not (tmp_path / "t.duckdb").exists() and not list(tmp_path.glob("then-*"))


def test_quality_fresh_scores_a_runs_checkpoints_on_unused_reviews_as_the_product_would(
    tmp_path, tiny_models, monkeypatch, capsys
):
    """`python -m benchmarks.quality fresh`: each base checkpoint reads the fresh reviews once, and an ensemble is
    scored from its members' cached log-probabilities through EnsembleStudent (weights, temperatures, routing):
    its labels must equal the product's own ensemble loaded from disk; the summary row and the paired table agree."""
    from types import SimpleNamespace

    import numpy as np
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from benchmarks import quality_fresh as f
    from benchmarks import quality_students as q
    from llambert.student.ensemble import EnsembleStudent
    from llambert.student.linear import LinearStudent
    from llambert.student.predict import load_predictor

    monkeypatch.setattr(q, "RESULTS_DB", tmp_path / "results.duckdb")
    for name in ("RESULTS_EXPORT", "PREDICTIONS_EXPORT", "FULLTEST_EXPORT"):
        monkeypatch.setattr(q, name, tmp_path / f"{name.lower()}.parquet")
    monkeypatch.setattr(f, "FRESH_EXPORT", tmp_path / "fresh.parquet")
    monkeypatch.setattr(f, "CKPT", tmp_path / "ckpt")
    words = ["great", "awful", "loved", "boring", "fine", "mess", "superb", "dull"]
    texts = [f"{words[i % 8]} {words[(3 * i) % 8]} film number {i}" for i in range(30)]
    gold = [1 if words[i % 8] in ("great", "loved", "fine", "superb") else 0 for i in range(30)]
    docs = pl.DataFrame({"doc_key": [f"test:{i}" for i in range(30)], "text": texts, "gold": gold})
    monkeypatch.setattr(f, "fresh_reviews", lambda name="imdb", seed=0: docs)

    run = tmp_path / "ckpt" / "imdb-1000-uncertainty"
    enc = run / "encoder"
    AutoModelForSequenceClassification.from_pretrained(str(tiny_models["student"]), num_labels=2).save_pretrained(enc)
    AutoTokenizer.from_pretrained(str(tiny_models["student"])).save_pretrained(enc)
    lin = run / "linear"
    LinearStudent([0, 1]).fit(texts[:20], np.array(gold[:20])).save(lin)
    ens = run / "ensemble"
    EnsembleStudent([0, 1], [str(enc), str(lin)], [1.0, 0.5], [0.4, 0.6], route_member=1, route_threshold=0.6).save(ens)

    f.stage_fresh(SimpleNamespace(fresh_tag="imdb-1000-uncertainty"))

    con = q.connect()
    got = dict(con.execute("SELECT doc_key, label FROM bench.quality_fresh WHERE candidate = 'ensemble'").fetchall())
    want = load_predictor(ens).predict(texts)[0]
    assert [got[k] for k in docs["doc_key"]] == list(want)
    summary = dict(con.execute("SELECT candidate, accuracy FROM bench.quality_fresh_summary").fetchall())
    assert set(summary) == {"encoder", "linear", "ensemble"}
    assert summary["ensemble"] == pytest.approx(np.mean(np.array(want) == np.array(gold)))
    assert pl.read_parquet(tmp_path / "fresh.parquet").height == 3
    out = capsys.readouterr().out
    assert "| encoder |" in out and "Δ vs encoder" in out
    # --fresh-from-table prints the same table from the stored rows (no model runs), with the two fixed halves.
    f.stage_fresh(SimpleNamespace(fresh_tag="imdb-1000-uncertainty", fresh_from_table=True))
    again = capsys.readouterr().out
    assert "half 0 | half 1" in again
    halves = f.half_of(docs["doc_key"].to_list())
    assert set(halves) == {0, 1}
    right = np.array(want) == np.array(gold)
    line = next(x for x in again.splitlines() if x.startswith("| ensemble |"))
    assert (
        f"| {100 * right.mean():.2f}% | {100 * right[halves == 0].mean():.2f}% | {100 * right[halves == 1].mean():.2f}% |"
        in line
    )
    # the same candidates with the same overall accuracy (rows of equal accuracy may come in another order)
    assert {tuple(x.split("|")[1:3]) for x in again.splitlines()[2:]} == {
        tuple(x.split("|")[1:3]) for x in out.strip().splitlines()[-3:]
    }


def test_quality_fresh_refuses_a_run_without_checkpoints(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from benchmarks import quality_fresh as f

    monkeypatch.setattr(f, "CKPT", tmp_path)
    with pytest.raises(SystemExit, match="no checkpoints in .*imdb-250.*run the students stage"):
        f.stage_fresh(SimpleNamespace(fresh_tag="imdb-250"))


def test_quality_fresh_reviews_are_outside_the_test_slice_the_pool_and_the_probe(imdb_dir):
    """The fresh set is what makes the stage's figures independent of the slice: no key of the 2,000-review test
    slice, no text the pool or the probe holds (IMDb repeats some test reviews in its unlabeled split)."""
    from benchmarks.quality_data import load_corpus
    from benchmarks.quality_fresh import fresh_reviews

    corpus = load_corpus("imdb")
    fresh = fresh_reviews("imdb")
    assert not set(fresh["doc_key"]) & set(corpus.test["doc_key"])
    used = set(corpus.pool["text"]) | set(corpus.probe["text"])
    assert not set(fresh["text"]) & used
    assert 20_000 < fresh.height < 25_000 - corpus.test.height  # some test texts are in the pool: dropped
    assert fresh["gold"].null_count() == 0 and 0.45 < fresh["gold"].mean() < 0.55


def test_ratio_takes_each_sides_teacher_rate_from_the_then_now_table_or_says_what_to_run(tmp_path, monkeypatch):
    """ratio --teacher-from-then-now: prompts/s (wall) of then:generate and of this checkout's default (now:choice),
    on the reviews both answered; a now arm answered under another decoding does not count, and with none the stage
    stops with the command to run."""
    from benchmarks import teacher as bt
    from benchmarks import teacher_then_now as tn
    from benchmarks.quality_students import teacher_rates_then_now

    monkeypatch.setattr(bt, "BENCH_DB", tmp_path / "teacher.duckdb")
    con = bt.open_bench(tmp_path / "teacher.duckdb")
    con.execute(tn.DDL)
    model = "qwen2.5-coder-1.5b-instruct"
    then_sha = tn.rev_parse(tn.THEN_REF)
    from llambert.config import TeacherConfig

    assert TeacherConfig().mode == "choice"  # today's default mode
    now = tn.now_ref(tn.Arm("now", "choice"), model)

    def add(arm, ref, doc, wall):
        con.execute(
            "INSERT INTO bench.teacher_then_now (arm, ref, mode, model, model_identity, decoding, doc_id, gold, label, "
            "prompt_tokens, wall_s, cpu_s, load_1m) VALUES (?, ?, ?, ?, 'm', '{}', ?, 1, 1, 100, ?, ?, 2.0)",
            [arm, ref, arm.split(":")[1], model, doc, wall, wall],
        )

    add("now:choice", "now@olddefault", "a", 9.0)  # an earlier default's row: never today's
    add("now:generate", tn.now_ref(tn.Arm("now", "generate"), model), "a", 0.1)  # not today's default mode
    con.close()
    with pytest.raises(SystemExit, match="run `python -m benchmarks.teacher_then_now --arms then:generate"):
        teacher_rates_then_now(model)
    con = bt.open_bench(tmp_path / "teacher.duckdb")
    for doc, then_s, now_s in (("a", 2.0, 1.0), ("b", 2.0, 1.0), ("c", 2.0, 1.0)):
        add("then:generate", then_sha, doc, then_s)
        if doc != "c":  # c: answered by the old path only, so left out of both rates
            add("now:choice", now, doc, now_s)
    con.close()
    assert teacher_rates_then_now(model) == pytest.approx((2 / 4.0, 2 / 2.0))


def _product_warehouse(tmp_path):
    """The part of a `make run` warehouse the product stage reads (empty tables): its path and an open connection."""
    import duckdb

    wh = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(wh))
    con.execute("CREATE SCHEMA students; CREATE SCHEMA predictions; CREATE SCHEMA raw; CREATE SCHEMA labeling")
    con.execute("CREATE TABLE students.champion (checkpoint_id VARCHAR, kind VARCHAR)")
    con.execute("CREATE TABLE predictions.labels (doc_id VARCHAR, checkpoint_id VARCHAR, label BIGINT)")
    con.execute(
        "CREATE TABLE raw.occurrences (source VARCHAR, source_id VARCHAR, split VARCHAR, doc_id VARCHAR, gold_label BIGINT)"
    )
    con.execute(
        "CREATE TABLE labeling.llm_responses (model_identity VARCHAR, mode VARCHAR, decoding JSON, doc_id VARCHAR)"
    )
    return wh, con


def test_quality_product_pairs_a_make_run_warehouse_with_the_teacher(tmp_path, monkeypatch, capsys):
    """`python -m benchmarks.quality product`: the champion's labels of the warehouse's IMDb test reviews (each
    test occurrence once, duplicates of one text included), their accuracy, and the paired difference to the teacher
    on the teacher's reviews; a warehouse without a champion is refused with what to do."""
    from types import SimpleNamespace

    import duckdb

    from benchmarks import quality_product as qp

    wh, con = _product_warehouse(tmp_path)
    con.execute("INSERT INTO labeling.llm_responses VALUES ('qwen@x', 'choice', '{\"mode\": \"choice\"}', 'd9')")
    # d0..d3 are test reviews (d3 twice: the same text under two test ids), d9 a train review; ck2 is not the champion.
    con.execute(
        "INSERT INTO raw.occurrences VALUES ('imdb','0','test','d0',1), ('imdb','1','test','d1',0), "
        "('imdb','2','test','d2',1), ('imdb','3','test','d3',0), ('imdb','4','test','d3',0), ('imdb','0','train','d9',1)"
    )
    con.execute(
        "INSERT INTO predictions.labels VALUES ('d0','ck',1), ('d1','ck',1), ('d2','ck',1), ('d3','ck',0), "
        "('d9','ck',1), ('d0','ck2',0)"
    )
    con.close()
    with pytest.raises(SystemExit, match="no champion"):
        qp.stage_product(SimpleNamespace(run_warehouse=str(wh)))
    con = duckdb.connect(str(wh))
    con.execute("INSERT INTO students.champion VALUES ('ck', 'distilled_ensemble')")
    con.close()
    frame, meta = qp.product_labels(wh)
    assert sorted(frame["doc_key"].to_list()) == ["test:0", "test:1", "test:2", "test:3", "test:4"]
    assert meta["kind"] == "distilled_ensemble" and meta["mode"] == "choice" and meta["answers"] == 1
    # The teacher's reviews: right on test:0 and test:1, wrong on test:2 (the student wrong on test:1 only).
    teacher = pl.DataFrame({"doc_key": ["test:0", "test:1", "test:2"], "gold": [1, 0, 1], "teacher": [1, 0, 0]})
    monkeypatch.setattr(qp, "teacher_labeled", lambda corpus: teacher)
    qp.stage_product(SimpleNamespace(run_warehouse=str(wh)))
    out = capsys.readouterr().out
    assert "all 5 IMDb test reviews: student accuracy 80.00%" in out
    assert "student 66.7% vs teacher 66.7%" in out and "won/lost 1/1" in out
    monkeypatch.setattr(qp, "teacher_labeled", lambda corpus: None)  # the teacher stage has not answered them all
    qp.stage_product(SimpleNamespace(run_warehouse=str(wh), product_candidates=True))
    assert "no paired comparison" in (out := capsys.readouterr().out) and "run the teacher stage first" in out
    with pytest.raises(SystemExit, match="no warehouse"):
        qp.stage_product(SimpleNamespace(run_warehouse=str(tmp_path / "missing.duckdb")))


def test_quality_product_candidates_rereads_every_candidate_on_the_teachers_reviews(tmp_path, monkeypatch, capsys):
    """--product-candidates: each candidate folder of the run labels the teacher's reviews through the product's own
    loader and is paired with the teacher there; the champion is marked, a folder that is gone is said so."""
    from types import SimpleNamespace

    import numpy as np

    from benchmarks import quality_product as qp
    from llambert.student.linear import LinearStudent
    from llambert.student.predict import load_predictor

    words = ["great", "awful", "loved", "boring", "superb", "dull"]
    texts = [f"{words[i % 6]} film {i}" for i in range(24)]
    gold = [int(words[i % 6] in ("great", "loved", "superb")) for i in range(24)]
    lin = tmp_path / "ck-linear"
    LinearStudent([0, 1]).fit(texts[:18], np.array(gold[:18])).save(lin)
    wh, con = _product_warehouse(tmp_path)
    con.execute("INSERT INTO students.champion VALUES ('ck-linear', 'linear')")
    con.execute(
        "CREATE TABLE students.candidates (checkpoint_id VARCHAR, kind VARCHAR, path VARCHAR, score DOUBLE, "
        "docs_per_s DOUBLE, verdict VARCHAR)"
    )
    # the run's reading settings come from its checkpoints (an old key the config no longer has is ignored)
    con.execute("CREATE TABLE students.checkpoints (training_config VARCHAR, created_at TIMESTAMP)")
    con.execute("""INSERT INTO students.checkpoints VALUES ('{"infer_max_length": 64, "gone_key": 1}', now())""")
    con.execute(
        "INSERT INTO students.candidates VALUES (?, 'linear', ?, 0.8, 5000, 'eligible'), "
        "('ck-gone', 'encoder', ?, 0.9, 80, 'eligible')",
        ["ck-linear", str(lin), str(tmp_path / "gone")],
    )
    want = load_predictor(lin).predict(texts[18:])[0]
    for i in range(18, 24):
        con.execute("INSERT INTO raw.occurrences VALUES ('imdb', ?, 'test', ?, ?)", [str(i), f"d{i}", gold[i]])
        con.execute("INSERT INTO predictions.labels VALUES (?, 'ck-linear', ?)", [f"d{i}", int(want[i - 18])])
    con.close()
    teacher = pl.DataFrame(
        {"doc_key": [f"test:{i}" for i in range(18, 24)], "text": texts[18:], "gold": gold[18:], "teacher": gold[18:]}
    )
    monkeypatch.setattr(qp, "teacher_labeled", lambda corpus: teacher)
    from benchmarks import quality_fresh

    seen = []
    real_init = quality_fresh.FolderScorer.__init__
    monkeypatch.setattr(
        quality_fresh.FolderScorer,
        "__init__",
        lambda self, texts, what="fresh", cfg=None: seen.append(cfg) or real_init(self, texts, what, cfg),
    )
    qp.stage_product(SimpleNamespace(run_warehouse=str(wh), product_candidates=True))
    assert seen[0].infer_max_length == 64  # read as the run reads, not at today's default (256)
    out = capsys.readouterr().out
    acc = float(np.mean(np.array(want) == np.array(gold[18:])))
    row = next(x for x in out.splitlines() if x.startswith("| **linear** (champion)"))
    assert f"| {acc:.2%} |" in row and f"{100 * (acc - 1):+.1f} pt" in row
    assert "| encoder | 0.9000 | 80 | eligible | folder gone |" in out
    assert out.index("| encoder |") < out.index("| **linear**")  # by probe score, best first
