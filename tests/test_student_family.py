"""The student family's parts on real (tiny) data: the small-set and skew rules of the encoder
recipe, soft targets, the linear floor, the calibrated ensemble, and the gates that keep a
collapsed student away from predictions.labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llambert.config import StudentConfig
from llambert.student.train import Phase, epochs_for, example_weights, soft_targets

POS = [
    "a wonderful film, loved it",
    "great acting and a great plot",
    "the best film this year",
    "good movie, fun",
    "brilliant and moving",
    "I loved every minute",
    "superb cast, great story",
    "a joy to watch",
]
NEG = [
    "boring and awful",
    "terrible, I hated it",
    "the worst film ever made",
    "bad movie, dull",
    "awful acting and a stupid plot",
    "I hated every minute",
    "a waste of time",
    "dreadful and boring",
]


def test_small_sets_get_more_epochs_large_sets_keep_theirs():
    cfg = StudentConfig()  # epochs 3, min_train_steps 240, max_epochs 12
    assert epochs_for(15, cfg) == 12  # 250 labels at batch 16: 16 epochs wanted, capped
    assert epochs_for(57, cfg) == 5  # ~900 labels: 240 / 57 -> 5 epochs
    assert epochs_for(300, cfg) == cfg.epochs  # 4,800 labels: the configured epochs
    assert epochs_for(15, cfg.model_copy(update={"min_train_steps": 0})) == cfg.epochs


def test_soft_targets_follow_the_teacher_and_its_temperature():
    phase = Phase("llm", ["a", "b", "c"], [1, 0, 1], probs=[{0: 0.2, 1: 0.8}, {0: 0.9, 1: 0.1}, None])
    to_index = {0: 0, 1: 1}
    t1 = soft_targets(phase, to_index, StudentConfig(soft_labels=True, distill_temperature=1.0))
    assert t1[0].tolist() == pytest.approx([0.2, 0.8]) and t1[1].tolist() == pytest.approx([0.9, 0.1])
    assert t1[2].tolist() == [0.0, 1.0]  # no probabilities (generate mode): the hard label
    sharp = soft_targets(phase, to_index, StudentConfig(soft_labels=True, distill_temperature=0.5))
    assert sharp[0, 1] > 0.8 and sharp[0].sum() == pytest.approx(1.0)
    hard = soft_targets(phase, to_index, StudentConfig(soft_labels=False))
    assert hard.tolist() == [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]


def test_balanced_weights_give_each_class_the_same_total():
    ys = [0] * 8 + [1] * 2
    phase = Phase("llm", ["x"] * 10, ys)
    w = example_weights(phase, ys, 2, StudentConfig(class_weight="balanced"))
    assert float(w[:8].sum()) == pytest.approx(float(w[8:].sum()))
    assert example_weights(phase, ys, 2, StudentConfig(class_weight="none")).tolist() == [1.0] * 10


def test_linear_floor_learns_saves_and_loads(tmp_path):
    from llambert.student.linear import LinearStudent
    from llambert.student.predict import load_predictor, student_kind

    texts = POS + NEG
    y = np.array([1] * len(POS) + [0] * len(NEG))
    model = LinearStudent(label_ids=[0, 1]).fit(texts, y)
    labels, probs = model.predict(["loved it, great", "awful and boring"])
    assert labels == [1, 0] and all(0.5 < p <= 1 for p in probs)
    model.save(tmp_path / "lin")
    assert student_kind(tmp_path / "lin") == "linear"
    again = load_predictor(tmp_path / "lin")
    assert np.allclose(again.log_probs(texts), model.log_probs(texts))
    # One class only (a teacher that says "positive" to everything): the prior, not a crash.
    prior = LinearStudent(label_ids=[0, 1]).fit(texts, np.ones(len(texts), dtype=int))
    assert set(prior.predict(texts)[0]) == {1}


def test_ensemble_calibrates_and_leans_on_the_better_member(tmp_path):
    from llambert.student.ensemble import EnsembleStudent, fit_ensemble, fit_temperature, mix, nll
    from llambert.student.linear import LinearStudent
    from llambert.student.predict import load_predictor

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    guess = np.where(rng.random(2000) < 0.8, y, 1 - y)  # right 80% of the time...
    good = np.log(np.where(np.eye(2)[guess] == 1, 0.8, 0.2))  # ...and says 0.8: calibrated
    noise = np.log(rng.dirichlet([1, 1], 2000))  # knows nothing
    overconfident = good * 6  # the same answers, far too sure
    assert fit_temperature(overconfident - np.log(np.exp(overconfident).sum(1, keepdims=True)), y) > 1.0
    temps, weights = fit_ensemble([good, noise], y)
    assert weights[0] >= 0.85 and sum(weights) == pytest.approx(1.0)  # 2,000 documents outweigh the prior
    few = fit_ensemble([good[:20], noise[:20]], y[:20])[1]
    assert 0.5 <= few[0] <= 0.6  # 20 documents barely move it from equal weights
    # student.ensemble_weights: equal (the default) calibrates the members the same way, then averages them.
    eq_temps, eq = fit_ensemble([good, noise], y, fit_weights=False)
    assert eq == [0.5, 0.5] and eq_temps == temps
    assert nll(mix([good, noise], temps, weights), y) <= nll(mix([good, noise], [1, 1], [0.5, 0.5]), y)

    # Saved and loaded from its folder, it predicts exactly the weighted mix of its members.
    texts = POS + NEG
    lab = np.array([1] * len(POS) + [0] * len(NEG))
    a = LinearStudent(label_ids=[0, 1]).fit(texts, lab)
    a.save(tmp_path / "a")
    b = LinearStudent(label_ids=[0, 1]).fit(texts[::-1], lab[::-1])
    b.save(tmp_path / "b")
    EnsembleStudent([0, 1], [str(tmp_path / "a"), str(tmp_path / "b")], [1.0, 2.0], [0.7, 0.3]).save(tmp_path / "e")
    ens = load_predictor(tmp_path / "e")
    expect = mix([a.log_probs(texts), b.log_probs(texts)], [1.0, 2.0], [0.7, 0.3])
    assert np.allclose(ens.log_probs(texts), expect)


class _Recording:
    """A real student that remembers which texts it was asked about (the routing's observable effect)."""

    def __init__(self, inner):
        self.inner, self.asked = inner, []
        self.label_ids = inner.label_ids

    def log_probs(self, texts):
        self.asked += list(texts)
        return self.inner.log_probs(texts)


def test_routing_leaves_the_floors_sure_documents_to_the_floor(tmp_path):
    """Routing (student.route_max_changed): the floor runs on every document, the expensive member only where the floor's
    top probability is below the threshold; routed documents get the floor's calibrated distribution, the
    rest the usual mix; the route survives save/load, and an ensemble saved before routing existed has none."""
    import json

    from llambert.student.ensemble import MANIFEST, EnsembleStudent, _log_softmax, mix
    from llambert.student.linear import LinearStudent
    from llambert.student.predict import load_predictor

    texts = POS + NEG
    lab = np.array([1] * len(POS) + [0] * len(NEG))
    floor = LinearStudent(label_ids=[0, 1]).fit(texts, lab)
    floor.save(tmp_path / "floor")
    other = LinearStudent(label_ids=[0, 1]).fit(texts[::-1], lab[::-1])
    other.save(tmp_path / "other")
    queries = texts + ["an odd film", "it was a film", "loved it, great, wonderful, superb", "awful, boring, hated it"]
    top = np.exp(floor.log_probs(queries)).max(1)
    threshold = float(np.median(top))
    sure = top >= threshold
    assert 0 < sure.sum() < len(queries)  # the test needs both kinds of document

    expensive = _Recording(other)
    temps, weights = [1.5, 1.0], [0.4, 0.6]
    ens = EnsembleStudent([0, 1], ["floor", "other"], temps, weights, [floor, expensive], None, 0, threshold)
    out = ens.log_probs(queries)
    assert expensive.asked == [q for q, s in zip(queries, sure) if not s]  # never a sure document
    assert ens.routed == int(sure.sum()) and ens.seen == len(queries)
    assert np.allclose(out[sure], _log_softmax(floor.log_probs(queries)[sure] / 1.5))
    full = mix([floor.log_probs(queries), other.log_probs(queries)], temps, weights)
    assert np.allclose(out[~sure], full[~sure])

    unrouted = EnsembleStudent([0, 1], ["floor", "other"], temps, weights, [floor, _Recording(other)])
    assert np.allclose(unrouted.log_probs(queries), full) and len(unrouted.members[1].asked) == len(queries)

    members = [str(tmp_path / "floor"), str(tmp_path / "other")]
    EnsembleStudent([0, 1], members, temps, weights, route_member=0, route_threshold=threshold).save(tmp_path / "e")
    again = load_predictor(tmp_path / "e")
    assert (again.route_member, again.route_threshold) == (0, threshold)
    assert np.allclose(again.log_probs(queries), out)
    meta = json.loads((tmp_path / "e" / MANIFEST).read_text())
    del meta["route"]  # as saved before routing existed
    (tmp_path / "e" / MANIFEST).write_text(json.dumps(meta))
    assert np.allclose(load_predictor(tmp_path / "e").log_probs(queries), full)


def test_the_routing_threshold_is_the_lowest_that_changes_few_enough_labels():
    from llambert.student.ensemble import fit_route

    rng = np.random.default_rng(1)
    n = 1000
    top = rng.uniform(0.5, 1.0, n)  # the floor's top probability
    floor = np.log(np.stack([top, 1 - top], axis=1))
    # The ensemble agrees with the floor where the floor is sure (>= 0.8) and half the time below it.
    agree = (top >= 0.8) | (rng.random(n) < 0.5)
    full = np.where(agree[:, None], floor, floor[:, ::-1])
    t, fig = fit_route(floor, full, 0.003)
    assert t == 0.8 and fig["route_changed"] == 0.0 and fig["route_share"] == pytest.approx((top >= 0.8).mean())
    # Allowing more changed labels routes more: the lowest threshold whose changes fit.
    loose, fig = fit_route(floor, full, 0.08)
    assert loose < 0.8 and fig["route_changed"] <= 0.08
    assert fit_route(floor, full, 1.0)[0] == 0.55  # anything goes: the lowest threshold
    assert fit_route(floor, floor[:, ::-1], 0.003)[0] == 0.0  # never agrees: no routing


def test_a_teacher_that_says_one_label_never_reaches_predictions(tmp_path, small_corpus, tiny_models):
    """The gate that blocks: every candidate trained on one-class labels collapses on the gold probe, so
    there is no champion, the champion contract fails with each verdict, and nothing is predicted."""
    from llambert import contracts, pipeline
    from llambert.config import load_settings
    from llambert.warehouse import open_warehouse
    from tests.conftest import tiny_settings_dict

    settings = load_settings(
        overrides=tiny_settings_dict(
            tmp_path / "home", small_corpus, tiny_models, student={"epochs": 1}, checks={"collapse_ratio": 0.25}
        )
    )
    with open_warehouse(settings.warehouse_path) as con:
        pipeline.ingest_batch(con, settings)
        pipeline.build_sample(con, settings)
        pipeline.label_sample(con, settings)
        pipeline.parse_labels(con, settings)
        con.execute("UPDATE labeling.parsed_labels SET label = 1, label_name = 'positive'")  # SmolLM2's failure
        stats = pipeline.train_checkpoint(con, settings)
        assert stats["champion"] is None and "collapsed" in stats["champion_reason"]
        verdicts = con.execute("SELECT kind, eligible, verdict FROM students.candidates ORDER BY kind").fetchall()
        assert [v[0] for v in verdicts] == ["encoder", "ensemble", "linear"]
        assert not any(v[1] for v in verdicts) and all(v[2].startswith("collapsed") for v in verdicts)
        gate = {r.contract: r for r in contracts.evaluate(con, settings, "students.checkpoints")}["champion"]
        assert not gate.passed and gate.blocking and "collapsed" in gate.failing.write_csv()
        with pytest.raises(pipeline.NoEligibleStudent, match="collapsed"):
            pipeline.predict_batch(con, settings)
        assert con.execute("SELECT count(*) FROM predictions.labels").fetchone()[0] == 0


def test_self_distillation_trains_a_second_generation_on_pool_documents_nobody_judges(
    tmp_path, small_corpus, tiny_models, monkeypatch
):
    """student.self_distill: the ensemble soft-labels unsampled pool documents (never the probe, never
    test), the encoder (continued, the default distill_from) trains on the teacher's labels plus those, and both
    it, a TF-IDF model on the same examples and their ensemble compete; a second run with the same labels reuses every checkpoint and labels nothing again."""
    import json

    from llambert import pipeline
    from llambert.config import load_settings
    from llambert.student.family import kinds_for
    from llambert.warehouse import open_warehouse
    from tests.conftest import tiny_settings_dict

    over = tiny_settings_dict(tmp_path / "home", small_corpus, tiny_models, student={"epochs": 1, "self_distill": 30})
    settings = load_settings(overrides=over)
    with open_warehouse(settings.warehouse_path) as con:
        pipeline.ingest_batch(con, settings)
        pipeline.build_sample(con, settings)
        pipeline.label_sample(con, settings)
        pipeline.parse_labels(con, settings)
        stats = pipeline.train_checkpoint(con, settings)
        by_kind = {c["kind"]: c for c in stats["candidates"]}
        assert set(by_kind) == {"linear", "encoder", "ensemble", "distilled", "distilled_linear", "distilled_ensemble"}
        assert by_kind["distilled"]["n_train"] == by_kind["encoder"]["n_train"] + 30
        assert by_kind["distilled_linear"]["n_train"] == by_kind["distilled"]["n_train"]
        rows = con.execute(
            "SELECT d.doc_id, d.source_checkpoint_id, k.kind, d.label, d.label_probs "
            "FROM students.distill_labels d JOIN students.checkpoints k USING (checkpoint_id)"
        ).fetchall()
        # Both second-generation members learned from the same 30 pseudo-labels.
        assert len(rows) == 60 and {r[2] for r in rows} == {"distilled", "distilled_linear"}
        assert {r[1] for r in rows} == {by_kind["ensemble"]["checkpoint_id"]}
        per_doc = {}
        for doc, _, _, label, _ in rows:
            per_doc.setdefault(doc, set()).add(label)
        assert len(per_doc) == 30 and all(len(v) == 1 for v in per_doc.values())
        # The distilled ensemble averages the two second-generation members, with equal weights (the default).
        paths = dict(con.execute("SELECT kind, path FROM students.checkpoints").fetchall())
        manifest = json.loads((Path(paths["distilled_ensemble"]) / "ensemble.json").read_text())
        assert manifest["members"] == [paths["distilled"], paths["distilled_linear"]]
        assert manifest["weights"] == [0.5, 0.5]
        assert con.execute(
            "SELECT base_model FROM students.checkpoints WHERE kind = 'distilled_linear'"
        ).fetchone() == ("tfidf-logreg",)
        for _, _, _, label, probs in rows:
            assert sum(probs.values()) == pytest.approx(1.0)
            assert label == (1 if probs["positive"] > probs["negative"] else 0)
        leaked = con.execute(
            "SELECT count(*) FROM students.distill_labels WHERE doc_id IN (SELECT doc_id FROM labeling.sample) "
            "OR doc_id IN (SELECT doc_id FROM students.gold_probe) "
            "OR doc_id IN (SELECT doc_id FROM raw.occurrences WHERE split = 'test')"
        ).fetchone()[0]
        assert leaked == 0
        assert con.execute("SELECT count(*) FROM students.candidates WHERE kind LIKE 'distilled%'").fetchone()[0] == 3
        # Routing is fitted on the unlabeled pool documents after the 30 the distilled encoder trained on.
        after = pipeline.distill_pool_docs(con, 30 + settings.student.route_docs).height - 30
        assert after > 0
        for kind in ("ensemble", "distilled_ensemble"):
            metrics = con.execute(
                "SELECT metrics FROM students.checkpoints WHERE checkpoint_id = ?", [by_kind[kind]["checkpoint_id"]]
            ).fetchone()[0]
            assert json.loads(metrics)["route_n"] == after, kind
        again = pipeline.train_checkpoint(con, settings)
        assert again["reused"] and con.execute("SELECT count(*) FROM students.distill_labels").fetchone()[0] == 60

        # A warehouse whose distilled encoder predates the distilled linear model (or lost that checkpoint): the
        # linear one trains on the pseudo-labels the warehouse kept, without labeling the pool again.
        con.execute("DELETE FROM students.checkpoints WHERE kind IN ('distilled_linear', 'distilled_ensemble')")
        con.execute(
            "DELETE FROM students.distill_labels WHERE checkpoint_id = ?",
            [by_kind["distilled_linear"]["checkpoint_id"]],
        )
        calls = []
        import llambert.student.family as family

        real = family.pseudo_phase
        monkeypatch.setattr(family, "pseudo_phase", lambda *a, **k: calls.append(a) or real(*a, **k))
        third = {c["kind"]: c for c in pipeline.train_checkpoint(con, settings)["candidates"]}
        assert calls == []  # nobody labeled the pool again
        assert third["distilled"]["reused"] and not third["distilled_linear"]["reused"]
        relabeled = con.execute(
            "SELECT doc_id, label FROM students.distill_labels WHERE checkpoint_id = ? ORDER BY doc_id",
            [third["distilled_linear"]["checkpoint_id"]],
        ).fetchall()
        assert relabeled == sorted((d, next(iter(v))) for d, v in per_doc.items())
        # ... and when those labels are gone too, it says which checkpoint to delete rather than guessing.
        con.execute("DELETE FROM students.checkpoints WHERE kind IN ('distilled_linear', 'distilled_ensemble')")
        con.execute("DELETE FROM students.distill_labels")
        with pytest.raises(RuntimeError, match=f"checkpoint {third['distilled']['checkpoint_id']}.*delete"):
            pipeline.train_checkpoint(con, settings)
        # Doing what the message says labels the pool again (and shows the spy above sees the labeling it counts).
        con.execute("DELETE FROM students.checkpoints WHERE kind = 'distilled'")
        fourth = {c["kind"]: c for c in pipeline.train_checkpoint(con, settings)["candidates"]}
        assert len(calls) == 1 and not fourth["distilled"]["reused"] and not fourth["distilled_linear"]["reused"]
        assert con.execute(
            "SELECT count(DISTINCT checkpoint_id), count(*) FROM students.distill_labels"
        ).fetchone() == (
            2,
            60,
        )
    linear = load_settings(overrides=over | {"student": over["student"] | {"kind": "linear"}})
    assert kinds_for(linear.student) == ["linear"]  # nothing to distill into: the setting is moot, not an error


def test_distill_from_encoder_continues_the_first_encoder_for_distill_epochs(tmp_path, small_corpus, tiny_models):
    """student.distill_from: encoder (the default): the distilled encoder starts from the first generation's
    fine-tuned weights and trains ``distill_epochs`` epochs (no step floor); switching from base retrains only the
    distilled encoder and its ensemble."""
    from llambert import pipeline
    from llambert.config import StudentConfig, load_settings
    from llambert.student.family import distill_start
    from llambert.warehouse import open_warehouse
    from tests.conftest import tiny_settings_dict

    cont = StudentConfig(distill_from="encoder", distill_epochs=2, min_train_steps=500)
    path, cfg = distill_start(cont, "/base", "/ckpt/encoder")
    assert path == "/ckpt/encoder" and (cfg.epochs, cfg.max_epochs, cfg.min_train_steps) == (2, 2, 0)
    fresh_cfg = StudentConfig(distill_from="base")
    assert distill_start(fresh_cfg, "/base", "/ckpt/encoder") == ("/base", fresh_cfg)
    assert StudentConfig().distill_from == "encoder"  # the default since the 2026-12-04 ratio measurement

    student = {"epochs": 2, "self_distill": 30, "early_stopping_patience": 0, "distill_from": "base"}
    over = tiny_settings_dict(tmp_path / "home", small_corpus, tiny_models, student=student)
    with open_warehouse(load_settings(overrides=over).warehouse_path) as con:
        settings = load_settings(overrides=over)
        pipeline.ingest_batch(con, settings)
        pipeline.build_sample(con, settings)
        pipeline.label_sample(con, settings)
        pipeline.parse_labels(con, settings)
        fresh = {c["kind"]: c for c in pipeline.train_checkpoint(con, settings)["candidates"]}
        settings = load_settings(
            overrides=over | {"student": over["student"] | {"distill_from": "encoder", "distill_epochs": 1}}
        )
        stats = pipeline.train_checkpoint(con, settings)
        cont = {c["kind"]: c for c in stats["candidates"]}
        for kind in ("linear", "encoder", "ensemble"):  # the first generation's fingerprints do not move
            assert cont[kind]["checkpoint_id"] == fresh[kind]["checkpoint_id"], kind
        for kind in ("distilled", "distilled_ensemble"):
            assert cont[kind]["checkpoint_id"] != fresh[kind]["checkpoint_id"], kind
        # the linear one learns the same pseudo-labels from nothing either way: kept
        assert cont["distilled_linear"]["checkpoint_id"] == fresh["distilled_linear"]["checkpoint_id"]

        def epochs(cid: str) -> int:
            return con.execute("SELECT count(*) FROM students.training_log WHERE checkpoint_id = ?", [cid]).fetchone()[
                0
            ]

        assert epochs(fresh["distilled"]["checkpoint_id"]) == 2
        assert epochs(cont["distilled"]["checkpoint_id"]) == 1
        path = con.execute(
            "SELECT path FROM students.checkpoints WHERE checkpoint_id = ?", [cont["distilled"]["checkpoint_id"]]
        ).fetchone()[0]
        card = (Path(path) / "README.md").read_text()
        assert f"continued from checkpoint {fresh['encoder']['checkpoint_id']} for 1 epoch" in card
        assert pipeline.train_checkpoint(con, settings)["reused"]
