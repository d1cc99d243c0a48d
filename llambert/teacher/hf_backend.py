"""The transformers teacher: bf16, batched, left-padded; free generation or label scoring.

``generate`` is the paper's way (greedy text, then the task's parser). ``choice`` scores every
label's continuation after the prompt and returns a probability per label, so it never
discards. Scores use the tokens the chat template really produces after the generation
prompt (for Qwen: "positive", not " positive"), summed over spelling variants, and the final
projection is computed in fp32 from the bf16 hidden state (a bf16 head ties label scores).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from llambert.tasks import Task
from llambert.teacher.base import Answer, DecodingParams
from llambert.teacher.prompts import render_chat


# A spelling of several tokens is scored only if its first token is within this many nats of
# the best one-token spelling in some row (e^-20 ~ 2e-9: below any decision that matters).
SKIP_LOGPROB = 20.0


@dataclass
class _Variant:
    label: str
    ids: tuple[int, ...]


def load_causal_lm(path: str, dtype: str = "bfloat16"):
    """Tokenizer (left padding, a pad token) and an eval-mode causal LM."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # A base model (no chat template) gets a plain few-shot transcript: see prompts.apply_template.
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    model.eval()
    return tok, model


class TransformersTeacher:
    name = "transformers"

    def __init__(
        self,
        model_path: str,
        model_identity: str,
        task: Task,
        decoding: DecodingParams,
        dtype: str = "bfloat16",
        threads: int | None = None,
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.task = task
        self.decoding = decoding
        self.model_identity = model_identity
        self.tokenizer, self.model = load_causal_lm(model_path, dtype)
        self._variants: list[_Variant] | None = None
        self._head32: torch.Tensor | None = None

    # -- prompts ---------------------------------------------------------------------------
    def prepare(self, texts: list[str]) -> list[str]:
        d = self.decoding
        return [render_chat(self.tokenizer, self.task, t, d.few_shot, d.max_prompt_tokens) for t in texts]

    def close(self) -> None:
        del self.model
        self._head32 = None

    # -- answering ---------------------------------------------------------------------------
    def answer(self, prepared: list[str]) -> list[Answer]:
        if not prepared:
            return []
        t0 = time.perf_counter()
        enc = self.tokenizer(prepared, return_tensors="pt", padding=True, add_special_tokens=False)
        prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
        with torch.inference_mode():
            if self.decoding.mode == "choice":
                outs = self._choose(enc)
            else:
                outs = self._generate(enc)
        per = (time.perf_counter() - t0) / len(prepared)
        for a, n in zip(outs, prompt_tokens):
            a.prompt_tokens = int(n)
            a.latency_s = per
        return outs

    def _generate(self, enc) -> list[Answer]:
        d = self.decoding
        sample = d.temperature > 0
        kwargs = dict(max_new_tokens=d.max_new_tokens, do_sample=sample, pad_token_id=self.tokenizer.pad_token_id)
        if sample:
            kwargs.update(temperature=d.temperature, top_k=d.top_k or None)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        answers = []
        stop = {self.tokenizer.pad_token_id, self.tokenizer.eos_token_id}
        for row in new.tolist():
            kept = []
            for t in row:
                if t in stop:
                    break
                kept.append(t)
            answers.append(Answer(raw_text=self.tokenizer.decode(kept, skip_special_tokens=True), completion_tokens=len(kept)))
        return answers

    def label_variants(self) -> list[_Variant]:
        """Token sequences that spell each label right after the generation prompt."""
        if self._variants is not None:
            return self._variants
        tok = self.tokenizer
        probe = render_chat(tok, self.task, "x", self.decoding.few_shot, self.decoding.max_prompt_tokens)
        base = tok(probe, add_special_tokens=False)["input_ids"]
        seen: set[tuple[int, ...]] = set()
        variants: list[_Variant] = []
        for label in self.task.labels:
            spellings = {label.name, label.name.lower(), label.name.capitalize(), label.name.upper()}
            spellings |= {" " + s for s in spellings}
            for s in sorted(spellings):
                full = tok(probe + s, add_special_tokens=False)["input_ids"]
                ids = tuple(full[len(base) :]) if full[: len(base)] == base else tuple(tok(s, add_special_tokens=False)["input_ids"])
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

    def _hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, past=None, offset=None):
        """Last hidden states (and the KV cache); positions count real tokens only (left padding)."""
        if offset is None:
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        else:  # continuing after a cached prompt: positions go on from each row's length
            position_ids = offset.unsqueeze(1) + torch.arange(input_ids.shape[1]).unsqueeze(0)
        out = self.model.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past, use_cache=True,
        )
        return out.last_hidden_state, out.past_key_values

    def _choose(self, enc) -> list[Answer]:
        """One forward pass over the prompts; label spellings of several tokens continue from the
        KV cache (a few tokens each) instead of re-reading the prompt once per spelling."""
        variants = self.label_variants()
        head = self.model.get_output_embeddings().weight
        labels = self.task.label_names
        ids, mask = enc["input_ids"], enc["attention_mask"]
        hidden, past = self._hidden(ids, mask)
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
        multi = [j for j, v in enumerate(variants) if len(v.ids) > 1
                 and (floor is None or bool((cols[j] >= floor).any()))]
        for j, v in enumerate(variants):
            if len(v.ids) > 1 and j not in multi:
                cols[j] = torch.full_like(cols[j], -math.inf)  # e^SKIP_LOGPROB times less likely: negligible
        if multi:
            b, m = ids.shape[0], len(multi)
            width = max(len(variants[j].ids) for j in multi) - 1
            pad = self.tokenizer.pad_token_id or 0
            # Row r * m + i: prompt r continued by spelling multi[i] (right-padded to the longest).
            cont = torch.tensor([list(variants[j].ids[:-1]) + [pad] * (width + 1 - len(variants[j].ids))
                                 for j in multi]).repeat(b, 1)
            cont_mask = torch.tensor([[1] * (len(variants[j].ids) - 1) + [0] * (width + 1 - len(variants[j].ids))
                                      for j in multi]).repeat(b, 1)
            full_mask = torch.cat([mask.repeat_interleave(m, dim=0), cont_mask], dim=1)
            past.batch_repeat_interleave(m)  # the prompt's cache is not needed again: extended in place
            h, _ = self._hidden(cont, full_mask, past=past, offset=lengths.repeat_interleave(m))
            logp = torch.log_softmax(h.float() @ self._head_fp32().T, dim=-1)  # (b*m, width, vocab)
            for i, j in enumerate(multi):
                rows = torch.arange(b) * m + i
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


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))
