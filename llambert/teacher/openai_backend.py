"""A teacher behind any OpenAI-compatible endpoint (vLLM's server, llama.cpp's server, OpenAI).

Scaling out is a list of base URLs: each request goes to the least busy server (ties in
round-robin order), with at most ``concurrency`` requests in flight in total. 429, 5xx,
timeouts and dropped connections are retried with exponential backoff (honouring
``Retry-After``). The key is read from an environment variable when the backend starts and
lives only in the request header: it is never stored, logged or part of any error message.

``generate`` sends chat completions and returns the text for the task's parser. ``choice``
constrains the answer to the task's labels (``structured_outputs: {choice: [...]}``, the
vLLM >= 0.12 spelling) and turns the first token's top logprobs, which are those of the raw
distribution, into a probability per label by renormalising over the label tokens.

The stdlib HTTP client keeps this backend free of extra dependencies.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from llambert.tasks import Task
from llambert.teacher.base import Answer, DecodingParams
from llambert.teacher.prompts import build_messages

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class EndpointError(RuntimeError):
    """A request failed for good (after retries, or with a status that retrying cannot fix)."""


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

    # -- prompts ---------------------------------------------------------------------------
    def prepare(self, texts: list[str]) -> list[str]:
        """Canonical JSON of the chat messages: the server applies the model's own template."""
        d = self.decoding
        out = []
        for text in texts:
            if self.tokenizer is not None:
                from llambert.teacher.prompts import fit_document

                text = fit_document(self.tokenizer, self.task, text, d.few_shot, d.max_prompt_tokens)
            else:  # no local tokenizer: about 4 characters per token
                text = text[: max(64, d.max_prompt_tokens * 4)]
            messages = build_messages(self.task, text, d.few_shot)
            out.append(json.dumps(messages, ensure_ascii=False, separators=(",", ":")))
        return out

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    # -- answering ---------------------------------------------------------------------------
    def answer(self, prepared: list[str]) -> list[Answer]:
        return list(self._executor.map(self._one, prepared))

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
        reply = self._post("/chat/completions", self._body(messages))
        latency = time.perf_counter() - t0
        try:
            choice = reply["choices"][0]
            text = choice["message"].get("content")
        except (KeyError, IndexError, TypeError) as e:
            raise EndpointError(f"unexpected chat completion reply (no choices[0].message): {str(reply)[:300]}") from e
        usage = reply.get("usage") or {}
        ans = Answer(
            raw_text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=latency,
        )
        if self.decoding.mode == "choice":
            ans.label_probs = self._label_probs(choice, text)
        return ans

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
    def _post(self, path: str, body: dict) -> dict:
        data = json.dumps(body).encode("utf-8")
        last = ""
        for attempt in range(self.max_retries + 1):
            i = self.pool.acquire()
            url = self.pool.urls[i] + path
            headers = {"Content-Type": "application/json"}
            if self._key:
                headers["Authorization"] = "Bearer " + self._key
            wait = None
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", "replace")
                last = f"HTTP {e.code} from {url}: {detail}"
                if e.code not in RETRY_STATUS:
                    raise EndpointError(last) from None
                ra = e.headers.get("Retry-After") if e.headers else None
                wait = float(ra) if ra and ra.replace(".", "", 1).isdigit() else None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = f"{type(e).__name__} talking to {url}: {getattr(e, 'reason', e)}"
            finally:
                self.pool.release(i)
            if attempt < self.max_retries:
                self.retries += 1
                backoff = self.backoff_s * (2**attempt) * (1 + random.random() * 0.25)
                time.sleep(min(60.0, wait if wait is not None else backoff))
        raise EndpointError(f"gave up after {self.max_retries + 1} attempts; last error: {last}")


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
