"""Tokenizing and batching for encoders: truncation choices and length-grouped dynamic padding."""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch


def encode(tokenizer, texts: list[str], max_length: int, truncation: str = "head") -> list[list[int]]:
    """Token ids with special tokens, at most ``max_length`` long.

    ``head`` keeps the beginning; ``head_tail`` keeps the first quarter and the last
    three quarters of the budget, which often hold a review's verdict.
    """
    if truncation == "head":
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    prefix, suffix = special_affixes(tokenizer)
    body = tokenizer(texts, add_special_tokens=False)["input_ids"]
    budget = max_length - len(prefix) - len(suffix)
    head = budget // 4
    out = []
    for ids in body:
        if len(ids) > budget:
            ids = ids[:head] + ids[len(ids) - (budget - head) :]
        out.append(prefix + ids + suffix)
    return out


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single text ([CLS] / [SEP])."""
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x")["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            return full[:i], full[i + len(bare) :]
    return [], []


def pad_batch(seqs: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random, mega: int = 50) -> list[list[int]]:
    """Shuffle, sort within mega-batches by length, then shuffle the batches.

    Keeps training random while padding little (the Trainer's group_by_length idea).
    """
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    batches = []
    for start in range(0, len(idx), batch_size * mega):
        block = sorted(idx[start : start + batch_size * mega], key=lambda i: -lengths[i])
        batches += [block[i : i + batch_size] for i in range(0, len(block), batch_size)]
    rng.shuffle(batches)
    return batches


def sorted_batches(lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    """Inference order: longest first, so memory peaks early and padding is minimal."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
