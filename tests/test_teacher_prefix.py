"""The transformers teacher's prefix KV cache and its cheap choice path (issue 17 items 1-2).

The prefix cache must not change answers: the model reads the same token sequence, the shared
prefix from a cache computed once. Compared here on real IMDb reviews with the tiny chat teacher,
zero-shot and few-shot, at batch 1 and in padded batches, in both modes.
"""

from __future__ import annotations

import polars as pl
import pytest

from llambert.tasks import load_task
from llambert.teacher.base import DecodingParams


def _teacher(tiny_models, mode: str, few_shot: int = 0, prefix_cache: bool = True, dtype: str = "float32"):
    from llambert.teacher.hf_backend import TransformersTeacher

    dec = DecodingParams(
        mode=mode, max_new_tokens=6, temperature=0.0, top_k=0, few_shot=few_shot, max_prompt_tokens=256
    )
    return TransformersTeacher(
        str(tiny_models["teacher"]), "tiny", load_task("imdb_sentiment"), dec, dtype=dtype, prefix_cache=prefix_cache
    )


@pytest.fixture(scope="module")
def reviews(imdb_dir) -> list[str]:
    texts = pl.read_parquet(imdb_dir / "test.parquet").sample(10, seed=3)["text"].str.slice(0, 500).to_list()
    # Odd first characters (with a tokenizer that merges them into the template's last token such a prompt
    # takes the uncached path; the tiny tokenizer does not merge them, the fallback has its own test below).
    return texts + ["\n\nstarts with blank lines, a good film", " leading space, boring", '"Quoted" and great']


def _batches(items, size):
    return [items[i : i + size] for i in range(0, len(items), size)]


@pytest.mark.parametrize("few_shot", [0, 2])
def test_choice_same_labels_and_probabilities_with_prefix_cache(tiny_models, reviews, few_shot):
    off = _teacher(tiny_models, "choice", few_shot, prefix_cache=False)
    on = _teacher(tiny_models, "choice", few_shot, prefix_cache=True)
    prompts = on.prepare(reviews)
    assert prompts == off.prepare(reviews)
    want = off.answer(prompts)
    prefix = on.shared_prefix()
    assert len(prefix) > 10
    if few_shot:  # the few-shot turns are in the cached prefix
        assert len(prefix) > len(_teacher(tiny_models, "choice", 0).shared_prefix()) + 20
    for size in (1, 4):
        got = [a for batch in _batches(prompts, size) for a in on.answer(batch)]
        assert [a.raw_text for a in got] == [a.raw_text for a in want]
        assert [a.prompt_tokens for a in got] == [a.prompt_tokens for a in want]
        for g, w in zip(got, want):
            for name in w.label_probs:
                assert g.label_probs[name] == pytest.approx(w.label_probs[name], abs=1e-4)
    assert on.tokens_reused >= len(prefix) * (len(reviews) - 3) * 2  # at least all ordinary reviews, twice
    assert off.tokens_reused == 0
    assert len(on._prefix_kv) == 1  # computed once


def test_choice_with_prefix_cache_in_bf16_keeps_labels(tiny_models, reviews):
    """The backend's default dtype: the cached prefix is computed in a batch of its own, so bf16
    rounding may differ in the last bits, not in the labels."""
    off = _teacher(tiny_models, "choice", 2, prefix_cache=False, dtype="bfloat16")
    on = _teacher(tiny_models, "choice", 2, prefix_cache=True, dtype="bfloat16")
    prompts = on.prepare(reviews)
    want, got = off.answer(prompts), on.answer(prompts)
    assert [a.raw_text for a in got] == [a.raw_text for a in want]
    for g, w in zip(got, want):
        for name in w.label_probs:
            assert g.label_probs[name] == pytest.approx(w.label_probs[name], abs=2e-2)


@pytest.mark.parametrize("few_shot", [0, 2])
def test_generate_same_text_with_prefix_cache(tiny_models, reviews, few_shot):
    off = _teacher(tiny_models, "generate", few_shot, prefix_cache=False)
    on = _teacher(tiny_models, "generate", few_shot, prefix_cache=True)
    prompts = on.prepare(reviews)
    base = off.answer(prompts)
    want = [a.raw_text for a in base]
    assert any(w for w in want)  # the tiny teacher says something
    for size in (1, 4):
        got = [a for batch in _batches(prompts, size) for a in on.answer(batch)]
        assert [a.raw_text for a in got] == want
        assert [a.completion_tokens for a in got] == [a.completion_tokens for a in base]
    assert on.tokens_reused > 0


def test_prompts_without_the_prefix_take_the_uncached_path(tiny_models):
    """A prompt the backend did not render (another system prompt): answered as without the cache."""
    on = _teacher(tiny_models, "choice", prefix_cache=True)
    off = _teacher(tiny_models, "choice", prefix_cache=False)
    tok = on.tokenizer
    odd = tok.apply_chat_template(
        [{"role": "system", "content": "Say yes."}, {"role": "user", "content": "good movie"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    mixed = [odd] + on.prepare(["bad movie", "great acting"])
    got, want = on.answer(mixed), off.answer(mixed)
    assert [a.raw_text for a in got] == [a.raw_text for a in want]
    for g, w in zip(got, want):
        for name in w.label_probs:
            assert g.label_probs[name] == pytest.approx(w.label_probs[name], abs=1e-4)
    assert on.tokens_reused == 2 * len(on.shared_prefix())


def test_prefix_cache_setting_reaches_the_backend_and_no_cache_key(tiny_settings):
    from llambert.teacher import decoding_params, make_teacher

    task = load_task("imdb_sentiment")
    s = tiny_settings.model_copy(deep=True)
    assert s.teacher.prefix_cache is True
    key_on = decoding_params(s).key()
    s.teacher.prefix_cache = False
    assert decoding_params(s).key() == key_on  # same answers by design: never part of the cache key
    teacher = make_teacher(s, task)
    assert teacher.prefix_cache is False
    teacher.close()


def test_choice_single_token_labels_no_kv_no_vocabulary_projection(tiny_models, monkeypatch):
    """When every label spelling is one token: one forward pass of the base model without a KV
    cache, the LM head never run over the vocabulary, only its label rows at the last position."""
    from llambert.teacher import hf_backend

    for prefix_cache in (False, True):
        on = _teacher(tiny_models, "choice", prefix_cache=prefix_cache)
        want = _teacher(tiny_models, "choice", prefix_cache=False).answer(on.prepare(["good movie", "awful, boring"]))
        on._variants = [v for v in on.label_variants() if len(v.ids) == 1]  # as for a tokenizer with one-token labels
        assert {v.label for v in on._variants} == {"positive", "negative"}
        calls, head_calls = [], []
        real = hf_backend.TransformersTeacher._hidden

        def spy(self, *a, **k):
            out = real(self, *a, **k)
            calls.append((k.get("use_cache"), out[1]))
            return out

        monkeypatch.setattr(hf_backend.TransformersTeacher, "_hidden", spy)
        hook = on.model.get_output_embeddings().register_forward_hook(lambda *a: head_calls.append(1))
        got = on.answer(on.prepare(["good movie", "awful, boring"]))
        hook.remove()
        monkeypatch.undo()
        assert len(calls) == 1 and calls[0][0] is False and calls[0][1] is None  # one pass, no KV cache returned
        assert head_calls == [] and on._head32 is None  # no full-vocabulary projection, no fp32 head
        assert all(sum(a.label_probs.values()) == pytest.approx(1.0) for a in got)
        # Dropping the (tiny) multi-token spellings changes probabilities a little, not the labels here.
        assert [a.raw_text for a in got] == [a.raw_text for a in want]


@pytest.mark.real
def test_real_teacher_same_answers_with_prefix_cache(imdb_dir):
    """Qwen2.5-Coder-0.5B, 2-shot (182 cached tokens), fp32: the same probabilities (1e-4) and the same
    generated text with and without the cache. In bf16 the cached path moves probabilities by as much
    as batching the uncached path does (both ~5e-3 on 8 reviews: rounding of different matmul shapes)."""
    from llambert.config import Settings
    from llambert.models import is_installed
    from llambert.teacher import make_teacher

    if not is_installed("qwen2.5-coder-0.5b-instruct"):
        pytest.fail("qwen2.5-coder-0.5b-instruct is not installed: run `make test-real`, which installs it")
    texts = pl.read_parquet(imdb_dir / "test.parquet").sample(4, seed=5)["text"].str.slice(0, 600).to_list()
    settings = Settings(
        teacher={
            "model": "qwen2.5-coder-0.5b-instruct",
            "mode": "choice",
            "few_shot": 2,
            "dtype": "float32",
            "max_new_tokens": 4,
        }
    )
    teacher = make_teacher(settings, load_task("imdb_sentiment"))
    prompts = teacher.prepare(texts)
    got = {}
    for mode in ("choice", "generate"):
        teacher.decoding.mode = mode
        for cache in (False, True):
            teacher.prefix_cache = cache
            got[mode, cache] = teacher.answer(prompts[:2]) + teacher.answer(prompts[2:])  # batch 2: padded tails
    assert len(teacher.shared_prefix()) > 150 and teacher.tokens_reused >= 2 * 4 * len(teacher.shared_prefix())
    teacher.close()
    assert [a.raw_text for a in got["generate", True]] == [a.raw_text for a in got["generate", False]]
    for on, off in zip(got["choice", True], got["choice", False]):
        assert on.raw_text == off.raw_text
        for name in off.label_probs:
            assert on.label_probs[name] == pytest.approx(off.label_probs[name], abs=1e-4)


# -- int8 dynamic quantization (teacher.quantize) ---------------------------------------------------


def test_int8_teacher_quantizes_every_linear_but_the_head_and_keeps_its_answers_close(tiny_models, reviews):
    """int8 reads the same prompts through int8 linears; the output head stays fp32 (choice reads its rows)."""
    from llambert.teacher.hf_backend import TransformersTeacher

    dec = DecodingParams(mode="choice", max_new_tokens=6, temperature=0.0, top_k=0, few_shot=0, max_prompt_tokens=256)
    task = load_task("imdb_sentiment")
    fp32 = TransformersTeacher(str(tiny_models["teacher"]), "tiny", task, dec, dtype="float32")
    int8 = TransformersTeacher(str(tiny_models["teacher"]), "tiny+int8", task, dec, quantize=True)
    linears = [m for m in int8.model.modules() if "quantized" in type(m).__module__]
    assert len(linears) >= 4 * len(int8.model.model.layers)  # q/k/v/o (+ mlp) of every layer
    assert type(int8.model.get_output_embeddings()).__module__.startswith("torch.nn.modules")  # the head: fp32
    prompts = fp32.prepare(reviews)
    assert prompts == int8.prepare(reviews)
    want, got = fp32.answer(prompts), [a for p in prompts for a in int8.answer([p])]
    assert [a.prompt_tokens for a in got] == [a.prompt_tokens for a in want]
    diffs = [abs(g.label_probs[n] - w.label_probs[n]) for g, w in zip(got, want) for n in w.label_probs]
    assert max(diffs) < 0.05, diffs  # quantization noise, not another model
    assert sum(g.raw_text == w.raw_text for g, w in zip(got, want)) >= len(want) - 2


def test_int8_setting_gets_its_own_answer_cache_and_refuses_other_paths(tiny_settings):
    from pydantic import ValidationError

    from llambert.config import TeacherConfig
    from llambert.teacher import make_teacher

    s = tiny_settings.model_copy(deep=True)
    s.teacher.quantize = "int8"
    teacher = make_teacher(s, load_task("imdb_sentiment"))
    assert teacher.model_identity.endswith("+int8")  # never mixed with the float model's cached answers
    teacher.close()
    for bad in ({"backend": "vllm"}, {"device": "cuda"}, {"dtype": "bfloat16"}):
        with pytest.raises(ValidationError, match="teacher.quantize int8"):
            TeacherConfig(quantize="int8", **bad)


def test_stop_at_label_skips_the_end_of_turn_step_and_keeps_every_answer(tiny_models, reviews):
    """teacher.stop_at_label: the same raw answers as decoding to the end of turn, at batch 1 and in padded
    batches, with one forward pass fewer for every prompt whose first answer token is a label spelling; an answer
    that is not a label (here: the tiny model's free text after a nudge) is decoded as before."""
    import dataclasses

    off = _teacher(tiny_models, "generate")
    on = _teacher(tiny_models, "generate")
    on.decoding = dataclasses.replace(on.decoding, stop_at_label=True)
    assert on.decoding.key() != off.decoding.key()  # the raw answer may be shorter: its own cache entries
    calls = {"on": 0, "off": 0}
    for name, t in (("on", on), ("off", off)):  # a hook, not a wrapper: generate reads forward's signature
        t.model.register_forward_pre_hook(lambda *_a, _name=name: calls.__setitem__(_name, calls[_name] + 1))
    prompts = off.prepare(reviews)
    want = [off.answer([p])[0] for p in prompts]
    got = [on.answer([p])[0] for p in prompts]
    assert [a.raw_text for a in got] == [a.raw_text for a in want]
    labelled = sum(a.raw_text.strip().lower() in ("positive", "negative") for a in want)
    assert labelled >= len(prompts) // 2  # the tiny teacher was taught the format
    assert calls["off"] - calls["on"] >= labelled
    batched = [a for batch in _batches(prompts, 4) for a in on.answer(batch)]
    assert [a.raw_text for a in batched] == [a.raw_text for a in want]


def test_choice_skips_only_spellings_whose_loss_is_bounded(tiny_models, reviews, monkeypatch):
    """SKIP_LOGPROB: a label spelling of several tokens is never likelier than its first token, so skipping the
    ones whose first token is s nats below the best one-token spelling moves a label's probability by at most
    (spellings) x e^-s. Checked against scoring every spelling, at the default and at thresholds tight enough
    that the tiny teacher's spellings are really skipped; the labels stay the same at the default."""
    import math

    import llambert.teacher.hf_backend as hb

    t = _teacher(tiny_models, "choice")
    prompts = t.prepare(reviews)
    k = len(t.label_variants())
    assert any(len(v.ids) > 1 for v in t.label_variants())  # there is something to skip

    def probs(skip: float) -> list[dict]:
        monkeypatch.setattr(hb, "SKIP_LOGPROB", skip)
        return [a.label_probs for a in t.answer(prompts)]

    default = hb.SKIP_LOGPROB
    exact = probs(1e9)
    moved = {}
    for skip in (default, 2.0, 0.5):
        got = probs(skip)
        moved[skip] = max(abs(g[name] - e[name]) for g, e in zip(got, exact) for name in e)
        assert moved[skip] <= k * math.exp(-skip) + 1e-6, (skip, moved[skip])
        if skip == default:
            assert [max(g, key=g.get) for g in got] == [max(e, key=e.get) for e in exact]
    assert moved[0.5] > 0  # the tight threshold did skip: the bound was tested, not just satisfied
