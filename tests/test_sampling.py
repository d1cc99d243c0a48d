"""sample.strategy uncertainty: rounds picked by the linear floor's doubt, recorded, cached, never from test.

The teacher here is the real ``openai`` backend talking to a loopback server that answers with each
review's gold label (an oracle), so the floor trains on two real classes; the warehouse, the SQL
models and the round logic are the product's own.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import polars as pl
import pytest

from llambert import pipeline
from llambert.config import load_settings
from llambert.sampling import RoundPlan, margins, pick_round, plan_round, seed_size
from llambert.tasks import load_task
from llambert.teacher.base import DecodingParams
from llambert.teacher.openai_backend import OpenAITeacher
from llambert.warehouse import open_warehouse
from tests.conftest import tiny_settings_dict

TASK = load_task("imdb_sentiment")


# -- the round arithmetic ------------------------------------------------------------------------
def test_round_plans_are_fixed_size_prefixes():
    assert seed_size(1000, "random", 250) == 1000
    assert seed_size(1000, "uncertainty", 250) == 250
    assert seed_size(100, "uncertainty", 250) == 100
    assert plan_round(1, 250, 1000, 250, 0.2) == RoundPlan(1, 200, 50, 200, 50)
    assert plan_round(3, 750, 900, 250, 0.2) == RoundPlan(3, 120, 30, 200, 50)  # a partial last round
    assert plan_round(4, 900, 900, 250, 0.2) is None


def test_margins_and_picks():
    lp = np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55]]))
    m = margins(lp)
    assert np.allclose(m, [0.0, 0.8, 0.2, 0.6, 0.1])
    cand = pl.DataFrame({"doc_id": [f"d{i}" for i in range(5)]})
    picks = pick_round(cand, m, RoundPlan(1, 2, 2))
    assert picks["doc_id"].to_list() == ["d0", "d4", "d1", "d2"]  # two least sure, then the pool order
    assert picks["picked_by"].to_list() == ["uncertainty", "uncertainty", "random", "random"]
    # A partial round takes a prefix of each of the whole round's lists: a larger budget keeps its documents.
    small = pick_round(cand, m, RoundPlan(1, 1, 1, 2, 2))
    assert small["doc_id"].to_list() == ["d0", "d1"]
    assert pick_round(cand, m, RoundPlan(1, 1, 1))["doc_id"].to_list() == ["d0", "d1"]


# -- end to end on a real warehouse --------------------------------------------------------------
class _Oracle:
    """A loopback chat-completions server answering each review's gold label; counts what it is asked."""

    def __init__(self, gold: dict[str, int]) -> None:
        self.asked: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                doc = body["messages"][-1]["content"]
                outer.asked.append(doc)
                label = next((g for t, g in gold.items() if t[:200] in doc), None)
                content = {1: "positive", 0: "negative"}.get(label, "unsure")
                data = json.dumps(
                    {
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 9, "completion_tokens": 1},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def teacher(self) -> OpenAITeacher:
        dec = DecodingParams(
            mode="generate", max_new_tokens=4, temperature=0.0, top_k=0, few_shot=0, max_prompt_tokens=4096
        )
        return OpenAITeacher(
            "oracle",
            TASK,
            dec,
            [self.url],
            api_key_env="LLAMBERT_TEST_OPENAI_KEY",
            concurrency=4,
            backoff_s=0.01,
            max_retries=1,
            timeout_s=10.0,
        )

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def oracle(small_corpus):
    gold = {}
    for split in ("train", "test", "unsup"):
        f = pl.read_parquet(small_corpus / f"{split}.parquet")
        gold |= {
            t: (g if split == "train" else int("good" in t or "great" in t)) for t, g in zip(f["text"], f["label"])
        }
    server = _Oracle(gold)
    yield server
    server.close()


def _settings(tmp_path, small_corpus, tiny_models, size: int):
    return load_settings(
        overrides=tiny_settings_dict(
            tmp_path / "home",
            small_corpus,
            tiny_models,
            sample={"size": size, "strategy": "uncertainty", "round_size": 12, "random_share": 0.25},
        )
    )


def test_uncertainty_rounds_are_recorded_cached_and_never_test(tmp_path, small_corpus, tiny_models, oracle):
    s = _settings(tmp_path, small_corpus, tiny_models, size=40)
    with open_warehouse(s.warehouse_path) as con:
        pipeline.ingest_batch(con, s, "initial")
        pipeline.build_sample(con, s)
        assert con.execute("SELECT count(*), max(round) FROM labeling.sample").fetchone() == (12, 0)
        stats = pipeline.label_sample(con, s, backend=oracle.teacher())
        sample = con.execute("SELECT * FROM labeling.sample ORDER BY sample_rank").pl()
        answered = con.execute("SELECT count(*) FROM labeling.llm_responses").fetchone()[0]
        test_docs = {r[0] for r in con.execute("SELECT doc_id FROM raw.occurrences WHERE split = 'test'").fetchall()}
        pool_margin = con.execute(
            "SELECT avg(student_margin) FILTER (picked_by = 'uncertainty'), avg(student_margin) FILTER "
            "(picked_by = 'random' AND round > 0) FROM labeling.sample"
        ).fetchone()

    # 12 + 12 + 12 + 4: rounds of 12 (9 by doubt, 3 at random), the last one partial.
    assert sample.height == 40 and answered == 40 and stats["asked"] == 40 and stats["rounds"] == 4
    assert sample.group_by("round").len().sort("round")["len"].to_list() == [12, 12, 12, 4]
    assert sample["doc_id"].n_unique() == 40 and sample["sample_rank"].to_list() == list(range(1, 41))
    later = sample.filter(pl.col("round") > 0)
    assert later.group_by("picked_by").len().sort("picked_by").rows() == [("random", 7), ("uncertainty", 21)]
    assert sample.filter(pl.col("round") == 0)["picked_by"].unique().to_list() == ["random"]
    assert later["student_margin"].is_not_null().all()
    assert pool_margin[0] < pool_margin[1]  # the floor's least sure documents, not a random draw
    assert not set(sample["doc_id"]) & test_docs
    assert len(oracle.asked) == 40

    # The same settings again: the same rounds, every answer from the cache.
    with open_warehouse(s.warehouse_path) as con:
        pipeline.build_sample(con, s)
        again = pipeline.label_sample(con, s, backend=oracle.teacher())
        same = con.execute("SELECT doc_id, round, picked_by FROM labeling.sample ORDER BY sample_rank").pl()
    assert again["asked"] == 0 and again["from_cache"] == 12 + 24 + 36 + 40
    assert same.equals(sample.select("doc_id", "round", "picked_by"))
    assert len(oracle.asked) == 40

    # A larger budget keeps every earlier document and asks only the new ones.
    bigger = _settings(tmp_path, small_corpus, tiny_models, size=52)
    with open_warehouse(bigger.warehouse_path) as con:
        pipeline.build_sample(con, bigger)
        grown = pipeline.label_sample(con, bigger, backend=oracle.teacher())
        ids = con.execute("SELECT doc_id FROM labeling.sample ORDER BY sample_rank").pl()["doc_id"].to_list()
    assert grown["asked"] == 12 and len(oracle.asked) == 52
    assert set(sample["doc_id"]) <= set(ids) and len(ids) == 52


def test_llambert_run_grows_the_sample_round_by_round(tmp_path, small_corpus, tiny_models, oracle):
    """The whole CLI path (Dagster run, short write sessions) with the default strategy's rounds."""
    import os
    import subprocess
    import sys

    import duckdb
    import yaml

    from tests.conftest import PROJECT_ROOT

    cfg = tmp_path / "llambert.yaml"
    cfg.write_text(
        yaml.safe_dump(
            tiny_settings_dict(
                tmp_path / "home",
                small_corpus,
                tiny_models,
                threads=1,
                sample={"size": 40, "round_size": 12, "random_share": 0.25},
                teacher={
                    "backend": "openai",
                    "base_urls": [oracle.url],
                    "batch_size": 4,
                    "concurrency": 4,
                    "api_key_env": "LLAMBERT_TEST_NO_KEY",
                    # the oracle knows a review by its first 200 characters: keep them together in the prompt
                    "truncation": "head",
                    "max_document_tokens": None,
                },
                student={"kind": "linear"},
            )
        )
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "OMP_NUM_THREADS": "1",
        "LLAMBERT_NO_PROGRESS": "1",
    }
    r = subprocess.run(
        [sys.executable, "-m", "llambert.cli", "--config", str(cfg), "run"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sample round 3: 4 documents" in r.stderr
    con = duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True)
    rounds = con.execute("SELECT round, count(*) FROM labeling.sample GROUP BY 1 ORDER BY 1").fetchall()
    answered = con.execute("SELECT count(*) FROM labeling.llm_responses").fetchone()[0]
    con.close()
    assert rounds == [(0, 12), (1, 12), (2, 12), (3, 4)] and answered == 40 and len(oracle.asked) == 40


def test_uncertainty_stops_with_what_to_do_when_every_seed_answer_is_discarded(tmp_path, small_corpus, tiny_models):
    """A teacher whose every seed-round answer names no label (here: 'unsure' to everything) must not go on paying
    for rounds, nor fail inside scikit-learn: the run stops at round 1 saying where the answers are and what to fix,
    and the paid answers are kept (a second try asks nothing again)."""
    server = _Oracle({})  # knows no review: answers "unsure"
    try:
        s = _settings(tmp_path, small_corpus, tiny_models, size=40)
        with open_warehouse(s.warehouse_path) as con:
            pipeline.ingest_batch(con, s, "initial")
            pipeline.build_sample(con, s)
            with pytest.raises(
                pipeline.NothingParsed, match=r"round 1: none of the 12 teacher answers.*labeling\.discarded"
            ):
                pipeline.label_sample(con, s, backend=server.teacher())
            kept = con.execute("SELECT count(*) FROM labeling.llm_responses").fetchone()[0]
            assert kept == 12 and len(server.asked) == 12
            with pytest.raises(pipeline.NothingParsed):
                pipeline.label_sample(con, s, backend=server.teacher())
        assert len(server.asked) == 12  # the retry read the cache
    finally:
        server.close()
