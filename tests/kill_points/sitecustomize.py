"""Test-only kill points for tests/test_kill_recovery.py (imported at start-up by every Python that has
this folder on PYTHONPATH; does nothing unless LLAMBERT_TEST_KILL_POINT is set).

LLAMBERT_TEST_KILL_POINT=train: the student encoder's second epoch prints "[kill-point] train epoch 2" on
stderr and then blocks (epoch 1 done, nothing saved yet). =predict: the champion's second chunk of
corpus labeling prints "[kill-point] predict chunk 2" and blocks (chunk 1 committed). The test reads the
line and kills the whole `llambert run` process group with SIGKILL: the process is provably mid-step.
=ray-load: the Ray engine's loader has inserted the staged predictions into predictions.labels inside its
transaction and prints "[kill-point] ray-load uncommitted" before the commit. =ray-load-committed: after
the commit, before the staged run's folder is removed ("[kill-point] ray-load committed").
"""

from __future__ import annotations

import os
import sys
import time

POINT = os.environ.get("LLAMBERT_TEST_KILL_POINT", "")


def _stop_here(what: str) -> None:
    print(f"[kill-point] {what}", file=sys.stderr, flush=True)
    time.sleep(600)  # until SIGKILL
    os._exit(99)  # never carry on past a kill point


def _install() -> None:
    import contextlib

    from llambert import pipeline

    if POINT == "train":
        real_train = pipeline.train_checkpoint

        def train_checkpoint(*args, **kwargs):
            from llambert.student import train

            real_progress = train.progress

            @contextlib.contextmanager
            def progress(total, desc, unit="it"):
                if desc.endswith("epoch 2"):
                    _stop_here("train epoch 2")
                with real_progress(total, desc, unit) as bar:
                    yield bar

            train.progress = progress
            return real_train(*args, **kwargs)

        pipeline.train_checkpoint = train_checkpoint
    elif POINT == "predict":
        real_predict, real_open = pipeline.predict_batch, pipeline._open_predictor
        state = {"corpus": False}

        def open_predictor(*args, **kwargs):
            predictor = real_open(*args, **kwargs)
            if not state["corpus"]:  # the judge's scoring, not corpus labeling
                return predictor
            real_frame, calls = predictor.predict_frame, []

            def predict_frame(frame):
                calls.append(frame.height)
                if len(calls) == 2:
                    _stop_here("predict chunk 2")
                return real_frame(frame)

            predictor.predict_frame = predict_frame
            return predictor

        def predict_batch(*args, **kwargs):
            state["corpus"] = True
            try:
                return real_predict(*args, **kwargs)
            finally:
                state["corpus"] = False

        pipeline._open_predictor, pipeline.predict_batch = open_predictor, predict_batch

    elif POINT in ("ray-load", "ray-load-committed"):
        from llambert import predictions_store, ray_engine, warehouse

        real_transaction, real_remove = warehouse.transaction, ray_engine.remove_tree
        real_load, loading = predictions_store.load_staged, {"on": False}

        def load_staged(*args, **kwargs):  # the loader's writes go through warehouse.run_model's transaction
            loading["on"] = True
            try:
                return real_load(*args, **kwargs)
            finally:
                loading["on"] = False

        @contextlib.contextmanager
        def transaction(con):
            with real_transaction(con):
                yield con
                if (
                    POINT == "ray-load"
                    and loading["on"]
                    and con.execute("SELECT count(*) FROM predictions.labels").fetchone()[0]
                ):
                    _stop_here("ray-load uncommitted")

        def remove_tree(path):
            if POINT == "ray-load-committed" and (path / "out").exists():
                _stop_here("ray-load committed")
            real_remove(path)

        warehouse.transaction, ray_engine.remove_tree = transaction, remove_tree
        predictions_store.load_staged = ray_engine.load_staged = load_staged


if POINT:
    _install()
