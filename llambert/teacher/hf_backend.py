"""The transformers teacher: bf16 where the hardware has it (else fp32, or int8 linears), batched, left-padded; free generation or label scoring.

``generate`` is the paper's way (greedy text, then the task's parser). ``choice`` scores every
label's continuation after the prompt and returns a probability per label, so it never
discards. Scores use the tokens the chat template really produces after the generation
prompt (for Qwen: "positive", not " positive"), summed over spelling variants, and the final
projection is computed in fp32 from the bf16 hidden state (a bf16 head ties label scores).

Prefix KV cache: the system prompt, the template up to the document and any few-shot turns are
the same tokens in every prompt of a run. Their keys and values are computed once per distinct
prefix and every prompt (or batch: the cache expanded to it) reads only its own tail, the
document and the suffix. The prefix is found at the token level: the longest common token prefix
of the template rendered with a few different dummy documents; a prompt whose tokens do not start
with it (a document whose first characters merge with the template's last token) takes the
uncached path. The model reads the same token sequence either way, so answers are the same up to
float rounding (``tests/test_teacher_prefix.py``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from llambert.tasks import Task
from llambert.teacher.base import Answer, DecodingParams
from llambert.teacher.prompts import render_for

# A spelling of several tokens is scored only if its first token is within this many nats of
# the best one-token spelling in some row. A spelling is never likelier than its first token, so skipping
# moves a label's probability by at most (spellings) x e^-10 ~ 5e-4 (tests/test_teacher_prefix.py checks the
# bound). Continuing costs one decoding step, which at 20 nats ran on nearly every prompt ("POS" of "POSITIVE");
# at 10, choice costs what generate does (`python -m benchmarks.teacher_then_now --arms now:generate now:choice`).
SKIP_LOGPROB = 10.0

# Dummy documents whose renderings bound the shared prefix: different first characters (a letter,
# a capital, a digit, a space, a newline, a quote, markup) so that no merge of the template's last
# token with a document's first characters is taken for part of the prefix.
_PREFIX_PROBES = ("a", "Z", "0", " x", "\nx", '"x', "<x")


@dataclass
class _Variant:
    label: str
    ids: tuple[int, ...]


def load_causal_lm(path: str, dtype: str = "auto", device: str = "cpu"):
    """Tokenizer (left padding, a pad token) and an eval-mode causal LM on ``device`` (``auto`` dtype: bf16 only
    where the hardware has it, llambert/hardware.py)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llambert.hardware import resolve_dtype

    dtype = resolve_dtype(dtype)

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # A base model (no chat template) gets a plain few-shot transcript: see prompts.apply_template.
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    model.to(device)
    model.eval()
    return tok, model


def quantize_int8(model, keep: tuple[str, ...] = ()):
    """Dynamic int8 for every linear layer but the output head, in place: per-channel int8 weights, activations
    quantized per batch (fbgemm/onednn int8 GEMM: ~2x fp32 on an AVX2 CPU). The head stays fp32 because choice
    mode reads its label rows directly and generate projects the whole vocabulary through it. ``keep``: name
    suffixes of further linears left in float (e.g. ``down_proj``, whose inputs carry the outlier activations)."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    head = model.get_output_embeddings()
    spec = {
        name: per_channel_dynamic_qconfig
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and m is not head and not (keep and name.endswith(keep))
    }
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice (torchao is its successor)
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


class TransformersTeacher:
    name = "transformers"

    def __init__(
        self,
        model_path: str,
        model_identity: str,
        task: Task,
        decoding: DecodingParams,
        dtype: str = "auto",
        threads: int | None = None,
        prefix_cache: bool = True,
        device: str = "cpu",
        quantize: bool = False,
        quantize_keep: tuple[str, ...] = (),
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.task = task
        self.decoding = decoding
        self.model_identity = model_identity
        # Every tensor the backend builds (ids, masks, the prefix, spelling continuations) is made on this device.
        self.device = torch.device(device)
        self.tokenizer, self.model = load_causal_lm(model_path, "float32" if quantize else dtype, device)
        if quantize:
            if self.device.type != "cpu":
                raise ValueError("int8 dynamic quantization runs on a CPU only")
            quantize_int8(self.model, quantize_keep)
        self._variants: list[_Variant] | None = None
        self._head32: torch.Tensor | None = None
        # Answers are the same with and without the prefix cache (same tokens read), so it is not part of
        # any cache key (DecodingParams.key): it only changes what the model re-reads.
        self.prefix_cache = prefix_cache and _prefix_cache_supported(self.model)
        self._prefix: tuple[int, ...] | None = None
        self._prefix_kv: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        # Prompt tokens the model ran on (prefixes once each, then tails) and tokens taken from the cache.
        self.tokens_read = 0
        self.tokens_reused = 0

    # -- prompts ---------------------------------------------------------------------------
    def prepare(self, texts: list[str]) -> list[str]:
        return [render_for(self.tokenizer, self.task, t, self.decoding) for t in texts]

    def set_decoding(self, decoding: DecodingParams) -> None:
        """Switch decoding on a loaded model (benchmarks compare settings on one load); what was
        derived from the old prompt settings (shared prefix, label spellings) is found again."""
        self.decoding = decoding
        self._prefix = None
        self._variants = None

    def close(self) -> None:
        del self.model
        self._head32 = None
        self._prefix_kv.clear()

    # -- the shared prefix -------------------------------------------------------------------
    def shared_prefix(self) -> tuple[int, ...]:
        """Tokens every prompt of this backend starts with: the longest common token prefix of the
        template rendered with several dummy documents (system prompt, few-shot turns, the user turn
        up to the document)."""
        if self._prefix is None:
            tok = self.tokenizer
            rows = [
                tok(render_for(tok, self.task, x, self.decoding), add_special_tokens=False)["input_ids"]
                for x in _PREFIX_PROBES
            ]
            n = 0
            while all(len(r) > n for r in rows) and len({r[n] for r in rows}) == 1:
                n += 1
            self._prefix = tuple(rows[0][:n])
        return self._prefix

    def _prefix_cache_for(self, prefix: tuple[int, ...], batch: int):
        """A fresh DynamicCache holding the prefix's keys and values for ``batch`` rows. The prefix is
        run once per distinct prefix; the stored tensors are never modified (the cache concatenates
        into new tensors), so one copy serves every batch."""
        from transformers import DynamicCache

        kv = self._prefix_kv.get(prefix)
        if kv is None:
            out = self.model.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
            kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
            self._prefix_kv[prefix] = kv
            self.tokens_read += len(prefix)
        return DynamicCache(
            [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in kv], config=self.model.config
        )

    # -- answering ---------------------------------------------------------------------------
    def answer(self, prepared: list[str]) -> list[Answer]:
        if not prepared:
            return []
        t0 = time.perf_counter()
        rows = self.tokenizer(prepared, add_special_tokens=False)["input_ids"]
        prefix = self.shared_prefix() if self.prefix_cache else ()
        n = len(prefix)
        hit = [n > 0 and len(r) > n and tuple(r[:n]) == prefix for r in rows]
        outs: list[Answer | None] = [None] * len(rows)
        with torch.inference_mode():
            # Prompts that start with the cached prefix read only their tails; the others (rare) read everything.
            for use, pre in ((True, prefix), (False, ())):
                idx = [i for i, h in enumerate(hit) if h == use]
                if not idx:
                    continue
                ids, mask = self._pad([rows[i][len(pre) :] for i in idx], len(pre))
                self.tokens_read += int(mask[:, len(pre) :].sum())
                self.tokens_reused += len(pre) * len(idx)
                got = self._choose(ids, mask, pre) if self.decoding.mode == "choice" else self._generate(ids, mask, pre)
                for i, a in zip(idx, got):
                    outs[i] = a
        per = (time.perf_counter() - t0) / len(prepared)
        for a, r in zip(outs, rows):
            a.prompt_tokens = len(r)
            a.latency_s = per
        return outs

    def _pad(self, tails: list[list[int]], prefix_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The tails left-padded to one width, and an attention mask over prefix + tail: padding sits
        between the cached prefix and each tail, masked out; positions count real tokens only."""
        width = max(len(t) for t in tails)
        pad = self.tokenizer.pad_token_id or 0
        dev = self.device
        ids = torch.tensor([[pad] * (width - len(t)) + list(t) for t in tails], dtype=torch.long, device=dev)
        mask = torch.tensor(
            [[1] * prefix_len + [0] * (width - len(t)) + [1] * len(t) for t in tails], dtype=torch.long, device=dev
        )
        return ids, mask

    def _generate(self, ids: torch.Tensor, mask: torch.Tensor, prefix: tuple[int, ...] = ()) -> list[Answer]:
        d = self.decoding
        sample = d.temperature > 0
        kwargs = dict(max_new_tokens=d.max_new_tokens, do_sample=sample, pad_token_id=self.tokenizer.pad_token_id)
        if sample:
            kwargs.update(temperature=d.temperature, top_k=d.top_k or None)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if prefix:  # generate reads only what the cache does not hold; positions follow the mask
            kwargs["past_key_values"] = self._prefix_cache_for(prefix, ids.shape[0])
            ids = torch.cat([torch.tensor([prefix], device=self.device).expand(ids.shape[0], -1), ids], dim=1)
        if d.stop_at_label:
            kwargs["stopping_criteria"] = [_StopAtLabel(self.label_variants(), ids.shape[1])]
        out = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        new = out[:, ids.shape[1] :]
        answers = []
        stop = {self.tokenizer.pad_token_id, self.tokenizer.eos_token_id}
        for row in new.tolist():
            kept = []
            for t in row:
                if t in stop:
                    break
                kept.append(t)
            answers.append(
                Answer(raw_text=self.tokenizer.decode(kept, skip_special_tokens=True), completion_tokens=len(kept))
            )
        return answers

    def label_variants(self) -> list[_Variant]:
        """Token sequences that spell each label right after the generation prompt."""
        if self._variants is not None:
            return self._variants
        tok = self.tokenizer
        probe = render_for(tok, self.task, "x", self.decoding)
        base = tok(probe, add_special_tokens=False)["input_ids"]
        seen: set[tuple[int, ...]] = set()
        variants: list[_Variant] = []
        for label in self.task.labels:
            spellings = {label.name, label.name.lower(), label.name.capitalize(), label.name.upper()}
            spellings |= {" " + s for s in spellings}
            for s in sorted(spellings):
                full = tok(probe + s, add_special_tokens=False)["input_ids"]
                ids = (
                    tuple(full[len(base) :])
                    if full[: len(base)] == base
                    else tuple(tok(s, add_special_tokens=False)["input_ids"])
                )
                if ids and ids not in seen:
                    seen.add(ids)
                    variants.append(_Variant(label.name, ids))
        self._variants = variants
        return variants

    def _head_fp32(self) -> torch.Tensor:
        """The output projection in fp32, converted once rather than on every call; only
        continuations of multi-token spellings need all of it."""
        if self._head32 is None:
            self._head32 = self.model.get_output_embeddings().weight.float()
        return self._head32

    def _hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past=None,
        use_cache: bool = True,
    ):
        """Last hidden states of the base model (no vocabulary projection) and the KV cache.
        ``attention_mask`` covers the cached tokens and ``input_ids``."""
        out = self.model.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past,
            use_cache=use_cache,
        )
        return out.last_hidden_state, out.past_key_values

    def _choose(self, ids: torch.Tensor, mask: torch.Tensor, prefix: tuple[int, ...] = ()) -> list[Answer]:
        """One forward pass over the prompts (their tails, after a cached prefix); label spellings of
        several tokens continue from the KV cache (a few tokens each) instead of re-reading the prompt
        once per spelling. When every spelling is one token no KV cache is kept at all, and in every
        case only the last position's hidden state meets the head, on the label tokens' rows."""
        variants = self.label_variants()
        head = self.model.get_output_embeddings().weight
        labels = self.task.label_names
        past = self._prefix_cache_for(prefix, ids.shape[0]) if prefix else None
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)[:, len(prefix) :]
        need_cache = any(len(v.ids) > 1 for v in variants)
        hidden, past = self._hidden(ids, mask, position_ids, past=past, use_cache=need_cache)
        last = hidden[:, -1, :].float()
        # First tokens: only their rows of the head, in fp32, unnormalised. The vocabulary's normaliser
        # at this position is the same for every spelling of a row and cancels in the label softmax
        # below, so the full-vocabulary projection is paid only where a multi-token spelling continues.
        firsts = sorted({v.ids[0] for v in variants})
        col = {t: j for j, t in enumerate(firsts)}
        first = last @ head[firsts].float().T  # (B, len(firsts))
        lengths = mask.sum(dim=1)
        single = [col[v.ids[0]] for v in variants if len(v.ids) == 1]
        floor = first[:, single].max(dim=1).values - SKIP_LOGPROB if single else None
        # Spellings of several tokens whose first token is within SKIP_LOGPROB of the best one-token
        # spelling in some row continue from the prompt's KV cache, all of them in ONE forward pass
        # (the cache repeated once per spelling): on a CPU a decode step costs the same at batch 1
        # and 4, so choice costs one prefill plus one step, not one step per spelling.
        cols = [first[:, col[v.ids[0]]].clone() for v in variants]
        multi = [
            j for j, v in enumerate(variants) if len(v.ids) > 1 and (floor is None or bool((cols[j] >= floor).any()))
        ]
        for j, v in enumerate(variants):
            if len(v.ids) > 1 and j not in multi:
                cols[j] = torch.full_like(cols[j], -math.inf)  # e^SKIP_LOGPROB times less likely: negligible
        if multi:
            b, m = ids.shape[0], len(multi)
            width = max(len(variants[j].ids) for j in multi) - 1
            pad = self.tokenizer.pad_token_id or 0
            # Row r * m + i: prompt r continued by spelling multi[i] (right-padded to the longest).
            cont = torch.tensor(
                [list(variants[j].ids[:-1]) + [pad] * (width + 1 - len(variants[j].ids)) for j in multi],
                device=self.device,
            ).repeat(b, 1)
            cont_mask = torch.tensor(
                [[1] * (len(variants[j].ids) - 1) + [0] * (width + 1 - len(variants[j].ids)) for j in multi],
                device=self.device,
            ).repeat(b, 1)
            full_mask = torch.cat([mask.repeat_interleave(m, dim=0), cont_mask], dim=1)
            past.batch_repeat_interleave(m)  # the prompt's cache is not needed again: extended in place
            offset = lengths.repeat_interleave(m)  # positions go on from each row's real length
            steps = torch.arange(width, device=self.device).unsqueeze(0)
            h, _ = self._hidden(cont, full_mask, offset.unsqueeze(1) + steps, past=past)
            logp = torch.log_softmax(h.float() @ self._head_fp32().T, dim=-1)  # (b*m, width, vocab)
            for i, j in enumerate(multi):
                rows = torch.arange(b, device=self.device) * m + i
                for pos, tid in enumerate(variants[j].ids[1:]):
                    cols[j] = cols[j] + logp[rows, pos, tid]
        scores = torch.stack(cols, dim=1)
        probs_out = []
        for row in scores:
            per_label = {l: -math.inf for l in labels}
            for v, s in zip(variants, row.tolist()):
                per_label[v.label] = _logaddexp(per_label[v.label], s)
            z = -math.inf
            for s in per_label.values():
                z = _logaddexp(z, s)
            probs = {l: math.exp(s - z) for l, s in per_label.items()}
            best = max(labels, key=lambda l: (probs[l], -labels.index(l)))
            probs_out.append(Answer(raw_text=best, label_probs=probs, completion_tokens=0))
        return probs_out


class _StopAtLabel:
    """``teacher.stop_at_label``: a row is done as soon as what it generated is exactly one spelling of a label
    (``label_variants``): the answer is then decided, and the next decoding step would only read the end-of-turn
    token (with this, 1.40x -> 1.63x the issue's prompts per CPU-second, README "Teacher"). Rows done early are padded by ``generate`` and cut at the pad like an end of turn."""

    def __init__(self, variants: list[_Variant], prompt_len: int) -> None:
        self.spellings = {v.ids for v in variants}
        self.longest = max((len(s) for s in self.spellings), default=0)
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        new = input_ids[:, self.prompt_len :]
        if new.shape[1] > self.longest:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        done = [tuple(row) in self.spellings for row in new.tolist()]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _prefix_cache_supported(model) -> bool:
    """Full attention in every layer (a sliding window would need its own prefix handling) and a
    base model under ``model.model`` (what ``_choose`` calls)."""
    cfg = model.config.get_text_config(decoder=True)
    types = getattr(cfg, "layer_types", None) or ["full_attention"]
    return set(types) == {"full_attention"} and hasattr(model, "model") and not cfg.is_encoder_decoder


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))
