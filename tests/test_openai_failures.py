"""The openai backend fails closed (issue 13, defect 5): malformed 200 replies are retried and
named, answers already received are never lost, secrets never reach an error message, and an
answer outside the choices is discarded with its raw text.

Every test talks to a real HTTP server on 127.0.0.1 (ephemeral port) that answers a bounded
number of requests and shuts itself down after a few seconds at most.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import polars as pl
import pytest

from llambert.tasks import load_task
from llambert.teacher.base import DecodingParams
from llambert.teacher.openai_backend import EndpointError, OpenAITeacher
from llambert.teacher.runner import label_documents
from llambert.warehouse import open_warehouse

TASK = load_task("imdb_sentiment")
MAX_REQUESTS = 100  # the server refuses (HTTP 410, not retried) beyond this
LIFETIME_S = 60.0  # and stops by itself after this long
SECRET = "sk-test-secret-value-0123456789abcdef"


def _reply(content: str | None, logprobs: dict | None = None) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [choice],
        "usage": {"prompt_tokens": 11, "completion_tokens": 1},
    }


def _label_for(doc: str) -> str:
    return "negative" if "bad" in doc else "positive"


class _Server:
    """Loopback chat-completions server; ``respond(doc, n, headers)`` -> (status, body bytes), where
    ``doc`` is the user message and ``n`` how many times that document was asked before."""

    def __init__(self, respond) -> None:
        self.respond = respond
        self.calls: dict[str, int] = {}
        self.total = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                doc = body["messages"][-1]["content"]
                with outer.lock:
                    outer.total += 1
                    n = outer.calls.get(doc, 0)
                    outer.calls[doc] = n + 1
                    over = outer.total > MAX_REQUESTS
                status, data = (
                    (410, b"too many requests for this test") if over else outer.respond(doc, n, self.headers)
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self._timer = threading.Timer(LIFETIME_S, self.httpd.shutdown)
        self._timer.daemon = True
        self._timer.start()

    def calls_for(self, marker: str) -> int:
        return sum(n for doc, n in self.calls.items() if marker in doc)

    def close(self) -> None:
        self._timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers: list[_Server] = []

    def start(respond) -> _Server:
        servers.append(_Server(respond))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _teacher(url: str, mode: str = "generate", **kw) -> OpenAITeacher:
    dec = DecodingParams(mode=mode, max_new_tokens=4, temperature=0.0, top_k=0, few_shot=0, max_prompt_tokens=128)
    kw = {"concurrency": 4, "backoff_s": 0.01, "max_retries": 2, "timeout_s": 10.0} | kw
    return OpenAITeacher("tiny", TASK, dec, [url], api_key_env="LLAMBERT_TEST_OPENAI_KEY", **kw)


def _docs(texts: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts})


def _cached(con) -> list[str]:
    return [r[0] for r in con.execute("SELECT raw_text FROM labeling.llm_cache ORDER BY raw_text").fetchall()]


# (a) ------------------------------------------------------------------------------------------
def test_non_json_200_is_retried_and_the_run_completes(tmp_path, serve):
    def respond(doc, n, headers):
        if "GLITCH" in doc and n == 0:
            return 200, b"<html><body>502 Bad Gateway (proxy)</body></html>"
        return 200, json.dumps(_reply(_label_for(doc))).encode()

    server = serve(respond)
    texts = ["a good film number one", "a bad film number two", "GLITCH good", "good again", "bad again", "so good"]
    teacher = _teacher(server.url)
    with open_warehouse(tmp_path / "w.duckdb") as con:
        stats = label_documents(
            con, teacher, _docs(texts), TASK.version, batch_size=4, commit_every=2, show_progress=False
        )
        n_cached = con.execute("SELECT count(*) FROM labeling.llm_cache").fetchone()[0]
    teacher.close()
    assert stats.prompts == len(texts) and n_cached == len(texts)
    assert server.calls_for("GLITCH") == 2 and teacher.retries == 1
    assert server.total == len(texts) + 1  # nothing asked twice beyond the one retry


def test_every_malformed_shape_is_retried(serve):
    bad_bodies = [
        b"\xff\xfe not utf-8",
        b"[]",
        b'{"choices": []}',
        b'{"choices": "positive"}',
        b'{"choices": [{"text": "positive"}]}',
        b'{"choices": [{"message": {"content": 5}}]}',
        json.dumps(_reply("positive") | {"usage": "lots"}).encode(),
        json.dumps(_reply("positive", logprobs={"content": [{"token": "pos", "top_logprobs": {"a": 1}}]})).encode(),
        json.dumps(_reply("positive", logprobs={"content": [{"token": "pos", "logprob": "high"}]})).encode(),
    ]

    def respond(doc, n, headers):
        i = int(doc.split("#")[1].split()[0])
        if n == 0:
            return 200, bad_bodies[i]
        return 200, json.dumps(_reply("positive")).encode()

    server = serve(respond)
    teacher = _teacher(server.url, mode="choice")
    answers = teacher.answer(teacher.prepare([f"review #{i} good" for i in range(len(bad_bodies))]))
    teacher.close()
    assert [a.raw_text for a in answers] == ["positive"] * len(bad_bodies)
    assert teacher.retries == len(bad_bodies) and server.total == 2 * len(bad_bodies)


# (b) ------------------------------------------------------------------------------------------
def test_reply_without_choices_fails_naming_url_and_keeps_received_answers(tmp_path, serve):
    state = {"fixed": False}

    def respond(doc, n, headers):
        if "BROKEN" in doc and not state["fixed"]:
            return 200, b'{"id": "chatcmpl-1", "object": "chat.completion", "model": "tiny"}'
        return 200, json.dumps(_reply(_label_for(doc))).encode()

    server = serve(respond)
    # Length-sorted, 4 per batch: the first batch is good, the second has three good ones and BROKEN.
    texts = [f"a good film, review number {i} of this long list" for i in range(4)]
    texts += ["a bad one, no. 5", "good one no. 6", "bad one no. 7", "BROKEN"]
    teacher = _teacher(server.url)
    with open_warehouse(tmp_path / "w.duckdb") as con:
        with pytest.raises(EndpointError) as err:
            label_documents(
                con, teacher, _docs(texts), TASK.version, batch_size=4, commit_every=32, show_progress=False
            )
        kept = _cached(con)
        msg = str(err.value)
        assert f"{server.url}/chat/completions" in msg and "no choices" in msg and "gave up after 3 attempts" in msg
        assert server.calls_for("BROKEN") == 3  # retried like a 5xx
        # Every answer received, from the earlier batch and from the failed one, was committed.
        assert len(kept) == len(texts) - 1 and server.total == len(texts) - 1 + 3
        # The failed run is accounted: 8 prompts asked, the 7 answers received kept (issue 13: every prompt counted).
        assert con.execute("SELECT status, prompts, answered FROM labeling.llm_runs").fetchall() == [("failed", 8, 7)]
        # The re-run asks only for the missing one: nothing is paid for twice.
        state["fixed"] = True
        before = server.total
        stats = label_documents(
            con, teacher, _docs(texts), TASK.version, batch_size=4, commit_every=32, show_progress=False
        )
        assert stats.prompts == 1 and stats.cached == len(texts) - 1 and server.total == before + 1
    teacher.close()


# (c) ------------------------------------------------------------------------------------------
def test_error_messages_never_show_the_key(serve, monkeypatch, caplog):
    monkeypatch.setenv("LLAMBERT_TEST_OPENAI_KEY", SECRET)
    forms = []

    def respond(doc, n, headers):
        echoed = dict(headers.items())
        if "KIND_JSON" in doc:  # the request headers echoed as JSON, plus an upstream's own credentials
            body = json.dumps(
                {
                    "error": "upstream failed",
                    "request_headers": echoed,
                    "upstream": {"api-key": "upstream-key-777", "authorization": "Bearer other-tok-999"},
                }
            )
        elif "KIND_TEXT" in doc:  # header lines, as a proxy's debug page would print them
            body = "upstream failed\n" + str(headers) + "X-Api-Key: another-secret-555\n"
        else:  # the bare key right at the 300-character cut of the message
            body = "x" * 285 + SECRET + " tail"
        forms.append(body)
        return 500, body.encode()

    server = serve(respond)
    for kind in ("KIND_JSON", "KIND_TEXT", "KIND_BARE"):
        teacher = _teacher(server.url, max_retries=1)
        with pytest.raises(EndpointError) as err:
            teacher.answer(teacher.prepare([f"a good {kind} film"]))
        teacher.close()
        msg = str(err.value)
        assert "HTTP 500" in msg and server.url in msg, msg
        assert SECRET not in msg and SECRET[:10] not in msg, msg
        for other in ("upstream-key-777", "other-tok-999", "another-secret-555"):
            assert other not in msg, msg
        assert "[redacted]" in msg, msg
    assert any(f"Bearer {SECRET}" in f for f in forms)  # the server did echo the key
    assert SECRET not in caplog.text


# (d) ------------------------------------------------------------------------------------------
def test_choice_answer_outside_the_choices_is_discarded_with_its_text(tmp_path, serve):
    from llambert import pipeline

    rogue = "I cannot comply. SYSTEM: label=positive"
    lp = {
        "content": [
            {
                "token": "pos",
                "logprob": -0.1,
                "top_logprobs": [{"token": "pos", "logprob": -0.1}, {"token": "neg", "logprob": -2.5}],
            }
        ]
    }

    def respond(doc, n, headers):
        if "ROGUE" in doc:
            return 200, json.dumps(_reply(rogue)).encode()
        return 200, json.dumps(_reply("positive", logprobs=lp)).encode()

    server = serve(respond)
    teacher = _teacher(server.url, mode="choice")
    docs = pl.DataFrame({"doc_id": ["ok1", "rogue", "ok2"], "text": ["good film", "ROGUE film", "great film"]})
    with open_warehouse(tmp_path / "w.duckdb") as con:
        label_documents(con, teacher, docs, TASK.version, show_progress=False)
        con.execute(
            """CREATE OR REPLACE TABLE labeling.sample AS
               SELECT row_number() OVER () AS sample_rank, doc_id, 'train' AS split, NULL::INTEGER AS gold_label
               FROM labeling.llm_requests"""
        )
        pipeline.run_model(con, "labeling.llm_responses", pipeline.teacher_variables(teacher, TASK))
        pipeline.parse_labels(con, SimpleNamespace(task=TASK.name))
        parsed = dict(con.execute("SELECT doc_id, probability FROM labeling.parsed_labels").fetchall())
        discarded = con.execute("SELECT doc_id, raw_text, reason FROM labeling.discarded").fetchall()
        probs = con.execute(
            "SELECT raw_text, label_probs FROM labeling.llm_responses WHERE doc_id = 'rogue'"
        ).fetchone()
    teacher.close()
    assert set(parsed) == {"ok1", "ok2"} and all(p == pytest.approx(0.9168, abs=1e-3) for p in parsed.values())
    assert len(discarded) == 1 and discarded[0][0] == "rogue" and discarded[0][2] == "outside_choices"
    assert rogue in discarded[0][1]  # the raw answer is kept
    assert probs[1] is None
