"""llama.cpp's llama-server behind the openai backend (issue 17, item 6).

llama-server ignores vLLM's ``structured_outputs``, so choice mode there would be free generation plus
logprobs. The backend recognises llama.cpp (``/props``, ``/v1/models``' owned_by, the replies'
``system_fingerprint``), sends it its own ``grammar`` field, and says in the run's metadata whether the
answers were constrained. The default tests talk to a real loopback HTTP server that imitates what
llama-server shows (as tests/test_openai_failures.py does for the other failure modes); the ``llamacpp``
tier runs a real ``llama-server`` when one is on PATH and a GGUF is named by LLAMBERT_LLAMACPP_GGUF.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import polars as pl
import pytest

from llambert.tasks import load_task
from llambert.teacher.base import DecodingParams
from llambert.teacher.openai_backend import (
    LLAMA_CPP,
    OUTSIDE_CHOICES_MARKER,
    OpenAITeacher,
    gbnf_choice,
    server_kind_from_models,
    server_kind_from_props,
    server_kind_from_reply,
)
from llambert.teacher.runner import label_documents
from llambert.warehouse import open_warehouse

TASK = load_task("imdb_sentiment")
LIFETIME_S = 60.0

# Shaped like llama-server's replies (the fields llama.cpp's server README names; trimmed). Not captured from a
# live server: none is installed here, so the llamacpp tier is where they meet the real thing.
LLAMA_PROPS = {
    "default_generation_settings": {"n_ctx": 4096, "params": {"temperature": 0.8}},
    "total_slots": 1,
    "model_path": "/models/qwen2.5-coder-0.5b-instruct-q8_0.gguf",
    "chat_template": "{% for message in messages %}...",
    "build_info": "b4600-2c8b5ac6",
}
LLAMA_MODELS = {
    "object": "list",
    "data": [{"id": "qwen", "object": "model", "created": 1738000000, "owned_by": "llamacpp", "meta": {}}],
}
VLLM_MODELS = {"object": "list", "data": [{"id": "qwen", "object": "model", "owned_by": "vllm", "root": "/m"}]}
OPENAI_REPLY = {"id": "chatcmpl-1", "object": "chat.completion", "system_fingerprint": "fp_44709d6fcb", "choices": []}


def test_detection_on_recorded_payloads():
    assert server_kind_from_props(LLAMA_PROPS) == LLAMA_CPP
    assert server_kind_from_props({"error": {"code": 404}}) is None and server_kind_from_props(None) is None
    assert server_kind_from_models(LLAMA_MODELS) == LLAMA_CPP
    assert server_kind_from_models(VLLM_MODELS) == "vllm"
    assert server_kind_from_models({"data": [{"id": "gpt-4o-mini", "owned_by": "system"}]}) is None
    assert server_kind_from_reply({"system_fingerprint": "b4600-2c8b5ac6"}) == LLAMA_CPP
    assert server_kind_from_reply(OPENAI_REPLY) is None and server_kind_from_reply({"system_fingerprint": None}) is None


def test_gbnf_choice_is_one_escaped_literal_per_label():
    assert gbnf_choice(TASK.label_names) == 'root ::= "' + '" | "'.join(TASK.label_names) + '"'
    assert gbnf_choice(["yes", "no"]) == 'root ::= "yes" | "no"'
    assert gbnf_choice(['say "hi"', "back\\slash", "two\nlines", "tab\there", "bell\x07"]) == (
        'root ::= "say \\"hi\\"" | "back\\\\slash" | "two\\nlines" | "tab\\there" | "bell\\x07"'
    )
    with pytest.raises(ValueError):
        gbnf_choice([])


class _LlamaServer:
    """Loopback imitation of llama-server's observable surface: GET /props and /v1/models (unless
    ``hide_props``, as a proxy that forwards only /v1/chat/completions would), and chat completions that
    ignore ``structured_outputs``: with a ``grammar`` field the answer is a label (with logprobs), without
    it free text."""

    def __init__(self, hide_props: bool = False) -> None:
        self.bodies: list[dict] = []
        self.gets: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status: int, payload) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                outer.gets.append(self.path)
                if hide_props:
                    self._send(404, {"error": "not found"})
                elif self.path == "/props":
                    self._send(200, LLAMA_PROPS)
                elif self.path == "/v1/models":
                    self._send(200, LLAMA_MODELS)
                else:
                    self._send(404, {"error": {"code": 404, "message": "File Not Found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                doc = body["messages"][-1]["content"]
                label = "negative" if "bad" in doc else "positive"
                other = "positive" if label == "negative" else "negative"
                if body.get("grammar"):
                    content = label
                    logprobs = {
                        "content": [
                            {
                                "token": label,
                                "logprob": -0.1,
                                "top_logprobs": [{"token": label, "logprob": -0.1}, {"token": other, "logprob": -2.4}],
                            }
                        ]
                    }
                else:  # structured_outputs ignored: the model just talks
                    content, logprobs = f"I would say {label}!", None
                choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                if logprobs:
                    choice["logprobs"] = logprobs
                self._send(
                    200,
                    {
                        "id": "chatcmpl-x",
                        "object": "chat.completion",
                        "model": "qwen",
                        "system_fingerprint": "b4600-2c8b5ac6",
                        "choices": [choice],
                        "usage": {"prompt_tokens": 30, "completion_tokens": 1},
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self._timer = threading.Timer(LIFETIME_S, self.httpd.shutdown)
        self._timer.daemon = True
        self._timer.start()

    def close(self) -> None:
        self._timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def llama():
    servers: list[_LlamaServer] = []

    def start(**kw) -> _LlamaServer:
        servers.append(_LlamaServer(**kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _teacher(url: str, mode: str = "choice") -> OpenAITeacher:
    dec = DecodingParams(mode=mode, max_new_tokens=4, temperature=0.0, top_k=0, few_shot=0, max_prompt_tokens=128)
    return OpenAITeacher("qwen", TASK, dec, [url], concurrency=2, backoff_s=0.01, max_retries=1, timeout_s=10.0)


DOCS = pl.DataFrame({"doc_id": ["d0", "d1", "d2"], "text": ["a good film", "a bad film", "good again"]})


def test_llama_cpp_gets_its_grammar_and_choice_is_constrained(tmp_path, llama, capfd):
    server = llama()
    teacher = _teacher(server.url)
    assert server.gets[0] == "/props" and teacher.server_kinds == [LLAMA_CPP]
    with open_warehouse(tmp_path / "w.duckdb") as con:
        label_documents(con, teacher, DOCS, TASK.version, batch_size=2, show_progress=False)
        rows = con.execute(
            "SELECT raw_text, label_probs, decoding FROM labeling.llm_cache ORDER BY raw_text"
        ).fetchall()
    teacher.close()
    assert all(b["grammar"] == gbnf_choice(TASK.label_names) for b in server.bodies) and len(server.bodies) == 3
    assert sorted(r[0] for r in rows) == ["negative", "positive", "positive"]
    assert all(r[1][r[0]] > 0.9 for r in rows)
    assert all('"choice_constraint":"gbnf"' in r[2] for r in rows)  # its own cache key: other answers than vLLM's
    assert teacher.server_info() == {"server": LLAMA_CPP, "constrained_choice": True}
    err = capfd.readouterr().err
    assert "grammar field" in err and "warning" not in err


def test_generate_mode_sends_no_grammar_and_probes_nothing(llama):
    server = llama()
    teacher = _teacher(server.url, mode="generate")
    teacher.answer(teacher.prepare(["a good film"]))
    teacher.close()
    assert server.gets == [] and "grammar" not in server.bodies[0] and teacher.server_info() == {}


def test_llama_cpp_behind_a_proxy_is_recorded_unconstrained_with_one_warning(tmp_path, llama, capfd):
    server = llama(hide_props=True)
    teacher = _teacher(server.url)
    assert teacher.server_kinds == [None] and teacher.grammar is None
    with open_warehouse(tmp_path / "w.duckdb") as con:
        label_documents(con, teacher, DOCS, TASK.version, batch_size=2, show_progress=False)
        rows = con.execute("SELECT raw_text, label_probs FROM labeling.llm_cache").fetchall()
    teacher.close()
    assert all("grammar" not in b for b in server.bodies)
    assert all(r[0].startswith(OUTSIDE_CHOICES_MARKER) and r[1] is None for r in rows)
    assert teacher.server_info() == {"server": LLAMA_CPP, "constrained_choice": False}
    err = capfd.readouterr().err
    assert err.count("warning: teacher choice mode is not constrained") == 1 and "/props" in err


def test_the_teacher_step_records_the_server_in_its_metadata(tmp_path, llama, small_corpus, tiny_models):
    """Through the pipeline: the teacher step's result (the asset's metadata) says llama.cpp, constrained."""
    from llambert import pipeline
    from llambert.config import load_settings
    from tests.conftest import tiny_settings_dict

    server = llama()
    d = tiny_settings_dict(
        tmp_path / "home",
        small_corpus,
        tiny_models,
        sample={"size": 3, "strategy": "random"},
        teacher={"backend": "openai", "model": "qwen-served", "mode": "choice", "base_urls": [server.url]},
    )
    s = load_settings(overrides=d)
    with open_warehouse(s.warehouse_path) as con:
        pipeline.ingest_batch(con, s)
        pipeline.build_sample(con, s)
        out = pipeline.label_sample(con, s)
    assert out.metadata()["server"] == LLAMA_CPP and out.metadata()["constrained_choice"] is True


# -- the llamacpp tier: a real llama-server (opt-in, never in `make test`) ----------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.llamacpp
def test_real_llama_server_choice_is_constrained(tmp_path):
    exe, gguf = shutil.which("llama-server"), os.environ.get("LLAMBERT_LLAMACPP_GGUF")
    if not exe or not gguf or not os.path.exists(gguf):
        pytest.skip("needs llama-server on PATH and LLAMBERT_LLAMACPP_GGUF naming a GGUF file")
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-c", "2048", "-t", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("llama-server did not become healthy in 180 s")
        teacher = _teacher(f"http://127.0.0.1:{port}/v1")
        answers = teacher.answer(teacher.prepare(["A wonderful film, I loved it.", "Awful. I hated every minute."]))
        teacher.close()
        assert teacher.server_kinds == [LLAMA_CPP]
        assert [a.raw_text.strip().lower() in TASK.label_names for a in answers] == [True, True]
        assert teacher.server_info()["constrained_choice"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)
