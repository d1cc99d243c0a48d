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
    if not getattr(tok, "chat_template", None):
        raise ValueError(
            f"the tokenizer at {path} has no chat template: llambert's prompts need an instruction-tuned "
            "chat model (or add a chat_template to tokenizer_config.json)"
        )
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

    # -- prompts ---------------------------------------------------------------------------
    def prepare(self, texts: list[str]) -> list[str]:
        d = self.decoding
        return [render_chat(self.tokenizer, self.task, t, d.few_shot, d.max_prompt_tokens) for t in texts]

    def close(self) -> None:
        del self.model

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

    def _hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return self.model.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state

    def _choose(self, enc) -> list[Answer]:
        variants = self.label_variants()
        head = self.model.get_output_embeddings().weight
        labels = self.task.label_names
        if all(len(v.ids) == 1 for v in variants):
            hidden = self._hidden(enc["input_ids"], enc["attention_mask"])[:, -1, :].float()
            ids = torch.tensor([v.ids[0] for v in variants])
            logits = hidden @ head[ids].float().T  # (B, V): the only rows we need, in fp32
            scores = logits
        else:
            scores = self._sequence_logprobs(enc, variants, head)
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

    def _sequence_logprobs(self, enc, variants: list[_Variant], head: torch.Tensor) -> torch.Tensor:
        """Log P(variant | prompt) for multi-token label spellings: one pass per variant."""
        ids, mask = enc["input_ids"], enc["attention_mask"]
        cols = []
        for v in variants:
            cont = torch.tensor(v.ids).unsqueeze(0).expand(ids.shape[0], -1)
            full_ids = torch.cat([ids, cont], dim=1)
            full_mask = torch.cat([mask, torch.ones_like(cont)], dim=1)
            hidden = self._hidden(full_ids, full_mask)[:, -len(v.ids) - 1 : -1, :].float()
            total = torch.zeros(ids.shape[0])
            for pos, tid in enumerate(v.ids):
                logits = _fp32_logits(hidden[:, pos, :], head)
                total += torch.log_softmax(logits, dim=-1)[:, tid]
            cols.append(total)
        return torch.stack(cols, dim=1)


def _fp32_logits(hidden: torch.Tensor, head: torch.Tensor, chunk: int = 32768) -> torch.Tensor:
    return torch.cat([hidden @ head[i : i + chunk].float().T for i in range(0, head.shape[0], chunk)], dim=-1)


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))
