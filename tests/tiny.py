"""Tiny random models built from a config, with a tokenizer the project makes itself.

For the fast tests: no download at all, and they load through the same local-directory
path as real models. A tiny teacher answers near-randomly; a tiny student learns a little.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_WORDS = (
    "positive negative yes no the a movie film review is was good bad great awful i it this and of to "
    "loved hated boring wonderful terrible plot acting please answer only decide if following make your "
    "decision based on whole text term related human nervous system otherwise"
).split()


def _tokenizer(special: list[str], corpus: list[str] | None = None, vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    texts = (corpus or []) + [" ".join(_WORDS)] * 20 + _WORDS
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def build_tiny_teacher(
    path: str | Path, seed: int = 0, teach: list[tuple[list[dict], str]] | None = None, steps: int = 60
) -> Path:
    """A 2-layer Qwen2 chat model (about 0.1M parameters) with a chat template.

    ``teach``: (messages, answer) pairs it is briefly trained on, so it answers in the task's
    format (a label word, then end of turn) instead of random tokens: enough for tests of the
    generate-and-parse path. What it says is still close to a guess.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    tok = _tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "[UNK]"])
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(config)
    if teach:
        _teach_format(model, tok, teach, steps)
    model = model.to(torch.bfloat16)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_tiny_student(path: str | Path, seed: int = 0) -> Path:
    """A 2-layer BERT encoder (about 0.1M parameters)."""
    import torch
    from transformers import BertConfig, BertModel

    path = Path(path)
    tok = _tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token = (
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
    )
    from tokenizers import processors

    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.cls_token_id), ("[SEP]", tok.sep_token_id)],
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
    )
    BertModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _teach_format(model, tok, teach: list[tuple[list[dict], str]], steps: int) -> None:
    """A few AdamW steps of next-token loss on the answer tokens only."""
    import torch

    rows = []
    for messages, answer in teach:
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"][-200:]
        a_ids = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append((p_ids + a_ids, [-100] * len(p_ids) + a_ids))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = [rows[i] for i in torch.randint(len(rows), (8,), generator=g).tolist()]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x, _ in batch])
        labels = torch.tensor([[-100] * (width - len(y)) + y for _, y in batch])
        mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(x) for x, _ in batch])[:, None]).long()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
