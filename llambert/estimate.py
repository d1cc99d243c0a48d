"""`llambert estimate`: size a run before paying for it, on this machine, with these models and this data.

1. The configured corpus (raw.corpus when the warehouse has it, else the configured sources read in
   memory: nothing is ingested) gives the teacher's pool.
2. ``n`` pool documents, stratified by length (one per length bin, seeded), are labeled by the configured
   teacher through the real runner: the answers go to ``labeling.llm_cache``, so the run that follows pays
   nothing for them again (an estimate run twice asks nothing the second time and reuses their latencies).
3. A line ``seconds = a + b x prompt chars`` is fitted to the per-answer latencies (longer prompts cost
   more: prefill), and the teacher's time for ``sample.size`` prompts is projected from the pool's mean
   prompt length (measured on up to 500 pool documents' rendered prompts).
4. The student's base model is timed on the same documents: inference (docs/s at ``infer_max_length``)
   and training steps (forward + backward + optimizer step at ``max_length``, examples/s). Training time
   = epochs (with the ``min_train_steps`` rule) x labels / rate, plus self-distillation's second training on
   labels + ``self_distill`` pool documents; corpus labeling = documents / docs/s.

Every assumption is printed with the figures.
"""

from __future__ import annotations

import hashlib
import math
import time

import numpy as np
import polars as pl

from llambert.config import Settings
from llambert.hardware import resolve_device


def corpus_frame(settings: Settings) -> tuple[pl.DataFrame, str]:
    """(doc_id, text, split, gold_label) of the configured corpus, and where it came from."""
    import duckdb

    from llambert.warehouse import connect, table_exists

    path = settings.warehouse_path
    if path.exists():
        con = connect(path, read_only=True, wait_s=60)
        try:
            if table_exists(con, "raw.corpus"):
                frame = con.execute("SELECT doc_id, text, split, gold_label FROM raw.corpus").pl()
                if frame.height:
                    return frame, f"raw.corpus in {path}"
        except duckdb.Error:
            pass
        finally:
            con.close()
    from llambert.corpus.readers import read_source
    from llambert.pipeline import INITIAL_BATCH, batch_sources
    from llambert.tasks import load_task

    names = {l.name: l.id for l in load_task(settings.task).labels}
    frames = [read_source(s, p, names).rows for s, p in batch_sources(settings, INITIAL_BATCH)]
    rows = (
        pl.concat(frames)
        if frames
        else pl.DataFrame(schema={"text": pl.Utf8, "split": pl.Utf8, "gold_label": pl.Int64})
    )
    frame = rows.unique("text", keep="first", maintain_order=True).select("text", "split", "gold_label")
    frame = frame.with_columns(
        doc_id=pl.Series([hashlib.md5(t.encode()).hexdigest() for t in frame["text"]], dtype=pl.Utf8)
    )
    return frame.select("doc_id", "text", "split", "gold_label"), "the configured sources (not ingested)"


def stratified_by_length(pool: pl.DataFrame, n: int, seed: int = 0) -> pl.DataFrame:
    """``n`` documents, one from each of ``n`` equal-count bins of text length (shortest to longest)."""
    if pool.height <= n:
        return pool
    ordered = pool.with_columns(_len=pl.col("text").str.len_chars()).sort("_len", "doc_id")
    rng = np.random.default_rng(seed)
    edges = np.linspace(0, ordered.height, n + 1).astype(int)
    picks = [int(rng.integers(lo, hi)) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
    return ordered[picks].drop("_len")


def fit_latency(chars: list[float], seconds: list[float]) -> tuple[float, float]:
    """``seconds = a + b x chars`` by least squares, both >= 0 (else the proportional fit through 0)."""
    x, y = np.asarray(chars, float), np.asarray(seconds, float)
    if len(x) >= 2 and np.ptp(x) > 0:
        b, a = np.polyfit(x, y, 1)
        if a >= 0 and b >= 0:
            return float(a), float(b)
    if x.sum() > 0:
        return 0.0, float(y.sum() / x.sum())
    return float(y.mean()) if len(y) else 0.0, 0.0


def _training_epochs(settings: Settings, n_train: int) -> int:
    cfg = settings.student
    steps_per_epoch = max(1, math.ceil(n_train / (cfg.batch_size * cfg.grad_accum)))
    need = math.ceil(cfg.min_train_steps / steps_per_epoch) if cfg.min_train_steps else 0
    return max(cfg.epochs, min(cfg.max_epochs, need))


def measure_student(settings: Settings, n_labels: int, texts: list[str]) -> dict:
    """The student's base model on ``texts``: inference docs/s and training examples/s on this machine."""
    cfg = settings.student
    if cfg.kind == "linear":
        return {"kind": "linear"}
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from llambert.hardware import resolve_bf16
    from llambert.models import resolve_model

    if settings.threads:
        torch.set_num_threads(settings.threads)
    base = resolve_model(cfg.model, settings.models_dir, role="student")
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(base.path))
    model = AutoModelForSequenceClassification.from_pretrained(str(base.path), num_labels=n_labels)
    load_s = time.perf_counter() - t0
    bf16 = resolve_bf16(cfg.bf16)
    by_len = sorted(texts, key=len)  # the corpus labeler sorts by length too

    def batches(items, size):
        return [items[i : i + size] for i in range(0, len(items), size)]

    model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        enc = tok(by_len[:2], truncation=True, max_length=cfg.infer_max_length, padding=True, return_tensors="pt")
        model(**enc)  # warm-up
        t0 = time.perf_counter()
        for chunk in batches(by_len, cfg.infer_batch_size):
            enc = tok(chunk, truncation=True, max_length=cfg.infer_max_length, padding=True, return_tensors="pt")
            model(**enc)
        infer_s = time.perf_counter() - t0
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    labels = torch.zeros(cfg.batch_size, dtype=torch.long)
    t0 = time.perf_counter()
    for chunk in batches(by_len, cfg.batch_size):
        enc = tok(chunk, truncation=True, max_length=cfg.max_length, padding=True, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(**enc).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[: len(chunk)])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    train_s = time.perf_counter() - t0
    return {
        "kind": cfg.kind,
        "model": base.identity,
        "load_seconds": load_s,
        "docs": len(texts),
        "infer_docs_per_s": len(texts) / infer_s if infer_s > 0 else None,
        "train_examples_per_s": len(texts) / train_s if train_s > 0 else None,
        "bf16": bf16,
    }


def estimate(settings: Settings, n: int = 20, seed: int = 0) -> dict:
    """Measure the configured teacher and student on ``n`` documents of the corpus; project the run."""
    from llambert.teacher import make_teacher
    from llambert.teacher.runner import label_documents
    from llambert.warehouse import Warehouse

    corpus, corpus_from = corpus_frame(settings)
    s = settings.sample
    pool = corpus.filter(pl.col("split").is_in(s.pool_splits) & ~pl.col("split").is_in(s.exclude_splits))
    if pool.is_empty():
        raise ValueError(
            f"no document of the corpus ({corpus_from}) is in a pool split {s.pool_splits}: check sample.pool_splits"
        )
    docs = stratified_by_length(pool.select("doc_id", "text"), n, seed)
    task = _task_with_examples(settings, corpus)
    t0 = time.perf_counter()
    backend = make_teacher(settings, task)
    load_s = time.perf_counter() - t0
    wh = Warehouse(settings.warehouse_path)
    try:
        with wh.session(prepare=True):
            pass
        run = label_documents(
            wh,
            backend,
            docs,
            task.version,
            batch_size=settings.teacher.resolved_batch_size(resolve_device(settings.teacher.device)),
            commit_every=settings.teacher.commit_every,
        )
        prepared = backend.prepare(docs["text"].to_list())
        rng = np.random.default_rng(seed)
        probe = pool if pool.height <= 500 else pool[rng.choice(pool.height, 500, replace=False).tolist()]
        pool_chars = float(np.mean([len(p.encode()) for p in backend.prepare(probe["text"].to_list())]))
        keys = _cache_keys(backend, prepared)
        identity, name, mode = backend.model_identity, backend.name, backend.decoding.mode
    finally:
        backend.close()
    with wh.session() as con:
        con.register("est_keys", pl.DataFrame({"cache_key": keys, "chars": [len(p.encode()) for p in prepared]}))
        lat = con.execute(
            "SELECT k.chars, c.latency_s, c.prompt_tokens FROM est_keys k JOIN labeling.llm_cache c USING (cache_key)"
        ).pl()
        con.unregister("est_keys")
    a, b = fit_latency(lat["chars"].to_list(), lat["latency_s"].to_list())
    # Answers asked now: the wall time is the truth (latencies overlap when requests run concurrently).
    scale = 1.0
    if run.prompts == docs.height and lat["latency_s"].sum() > 0:
        scale = run.seconds / float(lat["latency_s"].sum())
    per_prompt = (a + b * pool_chars) * scale
    student = measure_student(settings, len(task.label_ids), docs["text"].to_list())
    sizes = sorted({max(1, s.size // 2), s.size, s.size * 2})
    teacher_s = {k: k * per_prompt for k in sizes}
    n_train = max(1, int(round(s.size * (1 - settings.student.val_fraction))))
    epochs = _training_epochs(settings, n_train)
    train_s = infer_s = None
    # student.self_distill: a second encoder on the teacher's labels plus up to N unsampled pool documents,
    # which the first ensemble labels first (skipped under kind: linear or with no pool left).
    cfg = settings.student
    n_distill = min(cfg.self_distill, max(0, pool.height - s.size)) if cfg.kind != "linear" else 0
    if student.get("train_examples_per_s"):
        train_s = epochs * n_train / student["train_examples_per_s"]
        if n_distill:
            both = n_train + n_distill
            again = cfg.distill_epochs if cfg.distill_from == "encoder" else _training_epochs(settings, both)
            train_s += again * both / student["train_examples_per_s"]
    if student.get("infer_docs_per_s"):
        infer_s = corpus.height / student["infer_docs_per_s"]
        if n_distill and train_s is not None:
            train_s += n_distill / student["infer_docs_per_s"]
    return {
        "corpus_from": corpus_from,
        "corpus_docs": corpus.height,
        "pool_docs": pool.height,
        "sample_size": s.size,
        "measured": docs.height,
        "asked_now": run.prompts,
        "from_cache": run.cached,
        "teacher": {
            "model": identity,
            "backend": name,
            "mode": mode,
            "load_seconds": load_s,
            "seconds": run.seconds,
            "latency_sum": float(lat["latency_s"].sum()),
            "prompt_tokens_mean": float(lat["prompt_tokens"].mean()) if lat.height else None,
            "fit_a": a,
            "fit_b": b,
            "scale": scale,
            "pool_prompt_chars": pool_chars,
            "sample_prompt_chars": [int(min(lat["chars"])), int(max(lat["chars"]))] if lat.height else None,
            "seconds_per_prompt": per_prompt,
        },
        "student": student,
        "projection": {
            "teacher_seconds": teacher_s,
            "train_examples": n_train,
            "train_epochs": epochs,
            "distill_examples": n_distill,
            "train_early_stopping": settings.student.early_stopping_patience > 0,
            "train_seconds": train_s,
            "corpus_seconds": infer_s,
        },
    }


def _cache_keys(backend, prepared: list[str]) -> list[str]:
    from llambert.teacher.base import cache_key

    decoding = backend.decoding.key()
    return [cache_key(backend.model_identity, decoding, p) for p in prepared]


def _task_with_examples(settings: Settings, corpus: pl.DataFrame):
    """The task as the run will prompt it (few-shot gold examples drawn as ``with_gold_examples`` does)."""
    from llambert.tasks import load_task
    from llambert.teacher import with_gold_examples

    task = load_task(settings.task)
    if not settings.teacher.few_shot or settings.teacher.few_shot_source != "gold":
        return task
    import duckdb

    mem = duckdb.connect()
    try:
        mem.execute("CREATE SCHEMA raw; CREATE SCHEMA labeling; CREATE TABLE labeling.sample (doc_id VARCHAR)")
        mem.register("corpus_frame", corpus)
        mem.execute("CREATE TABLE raw.corpus AS SELECT * FROM corpus_frame")
        return with_gold_examples(mem, settings, task)
    finally:
        mem.close()


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def format_estimate(e: dict) -> list[str]:
    t, st, p = e["teacher"], e["student"], e["projection"]
    lines = [
        f"corpus: {e['corpus_docs']:,} documents from {e['corpus_from']}; teacher pool {e['pool_docs']:,}",
        f"teacher {t['model']} ({t['backend']}/{t['mode']}): {e['measured']} documents stratified by length "
        f"({e['asked_now']} asked now, {e['from_cache']} from the cache; answers kept, so the run will not pay for "
        f"them again); model load {t['load_seconds']:.1f} s",
        f"  per answer: {t['fit_a']:.3f} s + {t['fit_b'] * 1000:.3f} ms per prompt char (prompts of "
        f"{t['sample_prompt_chars'][0]:,}-{t['sample_prompt_chars'][1]:,} chars measured, pool mean "
        f"{t['pool_prompt_chars']:,.0f}) = {t['seconds_per_prompt']:.2f} s per prompt"
        + (f" (x{t['scale']:.2f}: wall time over summed latencies)" if abs(t["scale"] - 1) > 0.01 else ""),
    ]
    if st["kind"] == "linear":
        lines.append("student: linear floor only (TF-IDF + logistic regression): training and labeling take seconds")
    else:
        lines.append(
            f"student {st['model']}: inference {st['infer_docs_per_s']:.1f} docs/s, training "
            f"{st['train_examples_per_s']:.1f} examples/s ({st['docs']} documents; bf16 {st['bf16']})"
        )
    lines += ["", f"{'projected (this machine)':34} {'time':>10}"]
    for k, secs in p["teacher_seconds"].items():
        mark = "  <- sample.size" if k == e["sample_size"] else ""
        lines.append(f"{'teacher, ' + format(k, ',') + ' prompts':34} {_hms(secs):>10}{mark}")
    total = p["teacher_seconds"][e["sample_size"]]
    if p["train_seconds"] is not None:
        lines.append(
            f"{'student training':34} {_hms(p['train_seconds']):>10}  ("
            + ("at most " if p.get("train_early_stopping") else "")
            + f"{p['train_epochs']} epochs x {p['train_examples']:,} labels"
            + (
                "; early stopping on the validation split usually ends it sooner"
                if p.get("train_early_stopping")
                else ""
            )
            + ")"
        )
        total += p["train_seconds"]
    if p["corpus_seconds"] is not None:
        lines.append(f"{'corpus labeling':34} {_hms(p['corpus_seconds']):>10}  ({e['corpus_docs']:,} documents)")
        total += p["corpus_seconds"]
    lines.append(f"{'total for sample.size':34} {_hms(total):>10}")
    lines += [
        "",
        "assumptions: the teacher's time per prompt is linear in its length (fitted on the measured prompts; the "
        "pool's mean length from up to 500 rendered pool prompts); every sampled document is asked (cached answers "
        "make it less); the student trains on sample.size x (1 - student.val_fraction) labels (discarded answers "
        "make it fewer) for student.epochs (raised by min_train_steps); corpus labeling at the measured inference "
        "rate on length-sorted batches. Not counted: model loading, ingest, the linear floor and ensemble, scoring "
        "candidates on the gold probe, the contracts; a machine busy with other work is slower.",
    ]
    return lines
