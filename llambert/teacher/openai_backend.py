"""A teacher behind any OpenAI-compatible endpoint (vLLM's server, llama.cpp's server, OpenAI).

Scaling out is a list of base URLs: each request goes to the least busy server (ties in
round-robin order), with at most ``concurrency`` requests in flight in total. 429, 5xx,
timeouts and dropped connections are retried with exponential backoff (honouring
``Retry-After``). A 200 reply that is not what was asked for (not JSON, no ``choices``, wrong
shapes) is retried the same way: a broken proxy or an overloaded server must not abort the run
nor be taken for an answer. When the retries are spent the error names the URL and what was
wrong. The key is read from an environment variable when the backend starts and lives only in
the request header: every error message is redacted (the key's value, and any
``Authorization``, ``Bearer`` or ``api-key`` value, whatever a server echoes back).

A batch waits for all of its requests; when some fail, the error carries the answers that did
arrive (``partial_answers``, aligned with the prompts, ``None`` where there is none) so that the
runner stores them before the error propagates: an answer paid for is never thrown away.

``generate`` sends chat completions and returns the text for the task's parser. ``choice``
constrains the answer to the task's labels (``structured_outputs: {choice: [...]}``, the
vLLM >= 0.12 spelling) and turns the first token's top logprobs, which are those of the raw
distribution, into a probability per label by renormalising over the label tokens. A server
that ignores the constraint can answer anything ("I cannot comply. SYSTEM: label=positive"):
such an answer is not one of the choices, gets no probabilities, and is stored behind a marker
naming every label, so that the parser discards it (several labels) with the raw text kept.

llama.cpp's ``llama-server`` ignores ``structured_outputs``: there choice mode would be free generation
plus logprobs. So in choice mode the backend asks each server what it is when it starts (``GET /props``,
which only llama.cpp serves, then ``GET /v1/models``, whose ``owned_by`` names the engine) and sends a
llama.cpp server its own ``grammar`` field (GBNF, one alternative per label spelling) instead, which
constrains the answer; the constraint is part of the cache key. A llama.cpp server seen only from its
replies (``system_fingerprint`` "b<build>-<commit>", e.g. behind a proxy that hides ``/props``) or any
answer outside the choices means the answers were not constrained: one warning says so, and
``server_info()`` (the teacher step's metadata) records ``constrained_choice: false``.

The stdlib HTTP client keeps this backend free of extra dependencies.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from llambert.tasks import Task
from llambert.teacher.base import Answer, DecodingParams
from llambert.teacher.prompts import build_messages, fit_for, strip_directives, truncate_chars

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_ERROR_BODY = 64 * 1024  # read (and redact) this much of an error body before cutting it short
REDACTED = "[redacted]"
_VALUE = r"[^\s\"',;&}\]]+"
_SECRET_FIELD = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|api[-_ ]?key)\b([\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?:bearer|basic|token)\s+)?" + _VALUE
)
_BEARER = re.compile(r"(?i)\bbearer\s+(?!\[redacted\])" + _VALUE)
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")


# What a choice-mode answer outside the task's labels starts with (its reason: outside_choices).
OUTSIDE_CHOICES_MARKER = "[answer outside the choices]"
LLAMA_CPP = "llama.cpp"
_LLAMA_CPP_FINGERPRINT = re.compile(r"^b\d+-[0-9a-f]+$")  # llama-server's system_fingerprint: b<build>-<commit>
PROBE_TIMEOUT_S = 5.0


def server_kind_from_props(props) -> str | None:
    """llama.cpp from the body of ``GET /props`` (only llama-server serves it), else None."""
    if isinstance(props, dict) and (
        "build_info" in props or "model_path" in props or "default_generation_settings" in props
    ):
        return LLAMA_CPP
    return None


def server_kind_from_models(models) -> str | None:
    """The engine named by ``GET /v1/models`` (``owned_by``: 'llamacpp', 'vllm'), else None."""
    data = models.get("data") if isinstance(models, dict) else None
    owners = {str(m.get("owned_by", "")).lower() for m in data or [] if isinstance(m, dict)}
    if "llamacpp" in owners or "llama.cpp" in owners:
        return LLAMA_CPP
    if "vllm" in owners:
        return "vllm"
    return None


def server_kind_from_reply(reply) -> str | None:
    """llama.cpp from a chat completion's ``system_fingerprint`` ("b4600-2c8b5ac6"), else None."""
    fp = reply.get("system_fingerprint") if isinstance(reply, dict) else None
    return LLAMA_CPP if isinstance(fp, str) and _LLAMA_CPP_FINGERPRINT.match(fp) else None


def gbnf_choice(labels: list[str]) -> str:
    """A GBNF grammar (llama.cpp's ``grammar`` field) whose only sentences are the label spellings.

    Each label is a GBNF string literal: backslash, double quote and control characters escaped.
    """

    def literal(text: str) -> str:
        out = []
        for ch in text:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ch == "\n":
                out.append("\\n")
            elif ch == "\r":
                out.append("\\r")
            elif ch == "\t":
                out.append("\\t")
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append(f"\\x{ord(ch):02X}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'

    if not labels:
        raise ValueError("a choice grammar needs at least one label")
    return "root ::= " + " | ".join(literal(label) for label in labels)


class EndpointError(RuntimeError):
    """A request failed for good (after retries, or with a status that retrying cannot fix).

    ``partial_answers``: when raised for a batch, the batch's answers that did arrive, in prompt
    order, ``None`` where there is none; the runner stores them before the error propagates.
    """

    partial_answers: list | None = None


class _Malformed(ValueError):
    """A 200 reply that is not the expected chat completion: retried like a 5xx."""


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without secrets: the given values, and Authorization / Bearer / api-key values."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _SECRET_FIELD.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _BEARER.sub("Bearer " + REDACTED, text)
    return _URL_USERINFO.sub(r"\1" + REDACTED + "@", text)


class _Pool:
    """Least-busy choice over several base URLs, round-robin among equally busy ones."""

    def __init__(self, base_urls: list[str]) -> None:
        if not base_urls:
            raise ValueError("setting 'teacher.base_urls': the openai backend needs at least one base URL")
        self.urls = [u.rstrip("/") for u in base_urls]
        self.busy = [0] * len(self.urls)
        self.sent = [0] * len(self.urls)
        self._next = 0
        self._lock = threading.Lock()

    def acquire(self) -> int:
        with self._lock:
            n = len(self.urls)
            order = [(self._next + i) % n for i in range(n)]
            i = min(order, key=lambda j: self.busy[j])
            self._next = (i + 1) % n
            self.busy[i] += 1
            self.sent[i] += 1
            return i

    def release(self, i: int) -> None:
        with self._lock:
            self.busy[i] -= 1


class OpenAITeacher:
    name = "openai"

    def __init__(
        self,
        model: str,
        task: Task,
        decoding: DecodingParams,
        base_urls: list[str],
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        model_identity: str | None = None,
        tokenizer=None,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        backoff_s: float = 0.5,
        top_logprobs: int = 20,
    ) -> None:
        self.model = model
        self.task = task
        self.decoding = decoding
        self.pool = _Pool(base_urls)
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.top_logprobs = top_logprobs
        self.tokenizer = tokenizer  # only to cut documents exactly as the other backends do
        self.retries = 0
        # The endpoint and the served name identify the model; a local weights hash when known.
        self.model_identity = model_identity or f"openai:{model}"
        self._key = os.environ.get(api_key_env) or None
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="llambert-openai")
        # What each server is (choice mode only): a llama.cpp server gets its own grammar field.
        self.server_kinds: list[str | None] = [None] * len(self.pool.urls)
        self.grammar: str | None = None
        self.outside_choices = 0
        self._seen_llama_cpp_reply = False
        self._warned = False
        if decoding.mode == "choice":
            self.server_kinds = [self._probe(url) for url in self.pool.urls]
            if LLAMA_CPP in self.server_kinds:
                self.grammar = gbnf_choice(task.label_names)
                # Constrained by a grammar rather than by structured_outputs: other answers, other cache keys.
                decoding.extra["choice_constraint"] = "gbnf"
                print(
                    f"[llambert] teacher: llama.cpp server at "
                    f"{', '.join(u for u, k in zip(self.pool.urls, self.server_kinds) if k == LLAMA_CPP)}: choice "
                    "mode is constrained with its own grammar field (GBNF over the task's labels).",
                    file=sys.stderr,
                    flush=True,
                )

    # -- prompts ---------------------------------------------------------------------------
    def prepare(self, texts: list[str]) -> list[str]:
        """Canonical JSON of the chat messages: the server applies the model's own template."""
        d = self.decoding
        out = []
        for text in texts:
            if self.tokenizer is not None:
                text = fit_for(self.tokenizer, self.task, text, d)
            else:  # no local tokenizer: about 4 characters per token
                tokens = min(d.max_prompt_tokens, d.max_document_tokens or d.max_prompt_tokens)
                text = truncate_chars(
                    strip_directives(text) if d.strip_directives else text,
                    max(64, tokens * 4),
                    d.truncation,
                )
            messages = build_messages(self.task, text, d.few_shot, d.prompt_style)
            out.append(json.dumps(messages, ensure_ascii=False, separators=(",", ":")))
        return out

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    # -- which server --------------------------------------------------------------------------
    def _get(self, url: str):
        """GET ``url`` once (no retries, short timeout): the decoded JSON, or None on any failure."""
        headers = {"Authorization": "Bearer " + self._key} if self._key else {}
        try:
            req = urllib.request.Request(url, headers=headers, method="GET")
            with urllib.request.urlopen(req, timeout=PROBE_TIMEOUT_S) as resp:
                return json.loads(resp.read(MAX_ERROR_BODY * 16).decode("utf-8"))
        except Exception:  # noqa: BLE001 - a probe that fails only leaves the server unknown
            return None

    def _probe(self, base_url: str) -> str | None:
        """'llama.cpp', 'vllm' or None (unknown): llama-server serves /props at its root, next to /v1."""
        root = base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url
        kind = server_kind_from_props(self._get(root + "/props"))
        return kind or server_kind_from_models(self._get(base_url + "/models"))

    def server_info(self) -> dict:
        """For the run's metadata: which server answered and whether choice mode was constrained
        (None: not choice mode, or a server that did not say what it is and answered only labels)."""
        if self.decoding.mode != "choice":
            return {}
        kinds = {k for k in self.server_kinds if k} | ({LLAMA_CPP} if self._seen_llama_cpp_reply else set())
        server = ", ".join(sorted(kinds)) if kinds else "unknown"
        unconstrained = self.outside_choices > 0 or (self._seen_llama_cpp_reply and self.grammar is None)
        if unconstrained:
            constrained = False
        elif kinds and all(k in (LLAMA_CPP, "vllm") for k in kinds):
            constrained = True
        else:
            constrained = None
        return {"server": server, "constrained_choice": constrained}

    def _warn_unconstrained(self, why: str) -> None:
        if self._warned:
            return
        self._warned = True
        print(
            f"[llambert] warning: teacher choice mode is not constrained on {', '.join(self.pool.urls)} ({why}): "
            "answers are free generation plus logprobs, and an answer that is not a label is discarded "
            "('outside_choices'). For llama.cpp's llama-server, let llambert reach its /props (point "
            "teacher.base_urls at the server itself, http://host:port/v1) so it sends llama.cpp's grammar field; "
            "or use teacher.mode: generate with the task's parser.",
            file=sys.stderr,
            flush=True,
        )

    # -- answering ---------------------------------------------------------------------------
    def answer(self, prepared: list[str]) -> list[Answer]:
        """Answers in order. When a request fails for good, the requests not yet started are
        cancelled, the running ones are awaited, and the error carries every answer received."""
        futures = [self._executor.submit(self._one, p) for p in prepared]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        if pending:  # something failed: start nothing new, let what is in flight finish
            for f in pending:
                f.cancel()
            wait(futures)
        answers: list[Answer | None] = []
        first_error: BaseException | None = None
        for f in futures:
            err = None if f.cancelled() else f.exception()
            answers.append(None if f.cancelled() or err is not None else f.result())
            if err is not None and first_error is None:
                first_error = err
        if first_error is None and any(a is None for a in answers):  # cancelled without an error: cannot happen
            first_error = EndpointError("a request was cancelled")
        if first_error is None:
            return answers  # type: ignore[return-value]
        if isinstance(first_error, EndpointError):
            error = first_error
        else:  # anything else (a bug, an unexpected library error): same redaction, same rescue
            error = EndpointError(self._redact(f"{type(first_error).__name__}: {first_error}"))
        error.partial_answers = answers
        if error is first_error:
            raise error
        raise error from None

    def _body(self, messages: list[dict]) -> dict:
        d = self.decoding
        body: dict = {"model": self.model, "messages": messages}
        if d.mode == "choice":
            labels = self.task.label_names
            body.update(
                temperature=0.0,
                max_tokens=max(8, d.max_new_tokens),
                logprobs=True,
                top_logprobs=self.top_logprobs,
                structured_outputs={"choice": labels},
            )
        else:
            body.update(max_tokens=d.max_new_tokens, temperature=d.temperature)
            if d.temperature > 0 and d.top_k:
                body["top_k"] = d.top_k  # vLLM / llama.cpp extension; ignored where unknown
        return body

    def _one(self, prepared: str) -> Answer:
        messages = json.loads(prepared)
        t0 = time.perf_counter()
        reply = self._post("/chat/completions", self._body(messages), check=self._check_reply)
        if self.decoding.mode == "choice" and self.grammar is None and server_kind_from_reply(reply):
            self._seen_llama_cpp_reply = True
            self._warn_unconstrained("the replies come from llama.cpp, whose /props was not reachable")
        latency = time.perf_counter() - t0
        choice = reply["choices"][0]
        text = choice["message"].get("content")
        usage = reply.get("usage") or {}
        ans = Answer(
            raw_text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=latency,
        )
        if self.decoding.mode == "choice":
            if self._is_choice(text):
                ans.label_probs = self._label_probs(choice, text)
            elif text is not None and text.strip():
                # Not one of the choices: the constraint was ignored. No probabilities, and a marker
                # the parser discards as 'outside_choices' (sql/labeling/answer_matches.sql), raw text after it.
                ans.raw_text = f"{OUTSIDE_CHOICES_MARKER} {text}"
                self.outside_choices += 1
                self._warn_unconstrained(f"the server answered {text[:40]!r}, not one of the labels")
        return ans

    def _is_choice(self, text: str | None) -> bool:
        return text is not None and text.strip().lower() in {label.lower() for label in self.task.label_names}

    def _check_reply(self, reply) -> str | None:
        """What is wrong with a chat completion reply, or None: every field read later is checked."""
        if not isinstance(reply, dict):
            return f"the reply is a JSON {type(reply).__name__}, not an object"
        choices = reply.get("choices")
        if not isinstance(choices, list) or not choices:
            return "no choices in the reply" if not choices else f"'choices' is a {type(choices).__name__}, not a list"
        choice = choices[0]
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            return "choices[0] has no 'message' object"
        content = choice["message"].get("content")
        if content is not None and not isinstance(content, str):
            return f"choices[0].message.content is a {type(content).__name__}, not a string"
        usage = reply.get("usage")
        if usage is not None:
            if not isinstance(usage, dict):
                return f"'usage' is a {type(usage).__name__}, not an object"
            for k in ("prompt_tokens", "completion_tokens"):
                v = usage.get(k)
                if v is not None and not (_is_number(v) and v >= 0 and float(v).is_integer()):
                    return f"usage.{k} is {v!r}, not a token count"
        if self.decoding.mode == "choice":
            logprobs = choice.get("logprobs")
            if logprobs is None:
                return None
            if not isinstance(logprobs, dict):
                return "choices[0].logprobs is not an object"
            content_lp = logprobs.get("content")
            if content_lp is None or content_lp == []:
                return None
            if not isinstance(content_lp, list) or not isinstance(content_lp[0], dict):
                return "choices[0].logprobs.content is not a list of objects"
            first = content_lp[0]
            top = first.get("top_logprobs")
            if top is not None and not isinstance(top, list):
                return "choices[0].logprobs.content[0].top_logprobs is not a list"
            for j, e in enumerate([first] + (top or [])):
                if not isinstance(e, dict) or not isinstance(e.get("token", ""), str):
                    return "a logprobs entry has no string 'token'"
                if j and ("token" not in e or "logprob" not in e):
                    return "a top_logprobs entry lacks 'token' or 'logprob'"
                lp = e.get("logprob")
                if lp is not None and not (_is_number(lp) and not math.isnan(lp) and lp < math.inf):
                    return f"a logprobs entry has logprob {lp!r}"
        return None

    def _label_probs(self, choice: dict, text: str | None) -> dict[str, float] | None:
        """Renormalise the first answer token's logprobs over the tokens that start a label."""
        labels = self.task.label_names
        content = ((choice.get("logprobs") or {}).get("content")) or []
        per_label = {label: -math.inf for label in labels}
        if content:
            first = content[0]
            cands = {c["token"]: c["logprob"] for c in first.get("top_logprobs") or []}
            cands.setdefault(first.get("token", ""), first.get("logprob", -math.inf))
            for token, lp in cands.items():
                label = _label_of_token(token, labels)
                if label is not None and lp is not None and lp > -math.inf:
                    per_label[label] = _logaddexp(per_label[label], float(lp))
        z = -math.inf
        for s in per_label.values():
            z = _logaddexp(z, s)
        if z == -math.inf:  # no label token among the logprobs: trust the constrained text
            named = [label for label in labels if text and text.strip().lower() == label.lower()]
            return {label: (1.0 if named and label == named[0] else 0.0) for label in labels} if named else None
        return {label: math.exp(s - z) for label, s in per_label.items()}

    # -- HTTP --------------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        return redact(text, (self._key,) if self._key else ())

    def _post(self, path: str, body: dict, check=None) -> dict:
        """POST ``body`` as JSON; the decoded reply, which ``check`` (reply -> problem or None) accepted."""
        data = json.dumps(body).encode("utf-8")
        # llama.cpp ignores structured_outputs: its servers get the same body with their own grammar field.
        constrained = (
            json.dumps(body | {"grammar": self.grammar}).encode("utf-8")
            if self.grammar is not None and "structured_outputs" in body
            else data
        )
        last = ""
        for attempt in range(self.max_retries + 1):
            i = self.pool.acquire()
            url = self.pool.urls[i] + path
            payload = constrained if self.server_kinds[i] == LLAMA_CPP else data
            headers = {"Content-Type": "application/json"}
            if self._key:
                headers["Authorization"] = "Bearer " + self._key
            wait_s = None
            try:
                req = urllib.request.Request(url, data=payload, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    raw = resp.read()
                return _decode_reply(raw, check, self._redact)
            except _Malformed as e:
                last = f"malformed reply from {url}: {e}"
            except urllib.error.HTTPError as e:
                try:
                    detail = self._redact(e.read(MAX_ERROR_BODY).decode("utf-8", "replace"))[:300]
                except Exception:  # noqa: BLE001 - the body is only for the message
                    detail = ""
                last = f"HTTP {e.code} from {url}: {detail}"
                if e.code not in RETRY_STATUS:
                    raise EndpointError(self._redact(last)) from None
                ra = e.headers.get("Retry-After") if e.headers else None
                wait_s = float(ra) if ra and ra.replace(".", "", 1).isdigit() else None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, http.client.HTTPException) as e:
                last = f"{type(e).__name__} talking to {url}: {getattr(e, 'reason', e)}"
            finally:
                self.pool.release(i)
            if attempt < self.max_retries:
                self.retries += 1
                backoff = self.backoff_s * (2**attempt) * (1 + random.random() * 0.25)
                time.sleep(min(60.0, wait_s if wait_s is not None else backoff))
        raise EndpointError(self._redact(f"gave up after {self.max_retries + 1} attempts; last error: {last}"))


def _decode_reply(raw: bytes, check, redact_fn) -> dict:
    """The JSON reply, or _Malformed saying what is wrong (with the start of the body, redacted
    before it is cut so that a cut can never leave part of a secret)."""
    try:
        reply = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        start = redact_fn(raw[:MAX_ERROR_BODY].decode("utf-8", "replace"))[:120]
        raise _Malformed(f"the body is not JSON ({type(e).__name__}: {e}); it starts with {start!r}") from None
    problem = check(reply) if check is not None else None
    if problem:
        start = redact_fn(json.dumps(reply, ensure_ascii=False)[:MAX_ERROR_BODY])[:200]
        raise _Malformed(f"{problem}; the reply starts with {start!r}")
    return reply


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _label_of_token(token: str, labels: list[str]) -> str | None:
    """The label a first answer token starts ("pos" -> positive), if exactly one."""
    t = token.strip().lower()
    if not t:
        return None
    hits = [label for label in labels if label.lower().startswith(t)]
    return hits[0] if len(hits) == 1 else None


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))
