"""`make bench-student`: how fast the student labels and learns, and the paper's learning curve.

Stages (each resumable; results go to DuckDB tables in ``bench`` of ``var/bench/student.duckdb``
and to ``docs/bench_student.md`` with a PNG of the curve):

- ``label``: LLM labels for a fixed, seeded order of IMDb train reviews, by the offline
  Qwen2.5-Coder-0.5B-Instruct in choice mode, through the project's teacher runner, so answers
  are cached in ``labeling.llm_cache`` and never paid for twice. Labels prefixes of the order
  (250, 500, ...) one after the other, so a stopped run leaves a usable prefix.
- ``speed``: documents/s of our inference (``StudentPredictor``) against
  ``transformers.pipeline("text-classification")`` on the same model and the same 5,000 IMDb
  test reviews, in one process; training examples/s; peak memory. Also the faster-path trials
  (int8 dynamic quantization, torch.compile, ONNX Runtime when installed) at equal accuracy.
- ``curve``: test accuracy against the number of training labels, gold and LLM labels
  (MiniLM, max_length 128, few epochs, a fixed 1,000-review test subset).
- ``report``: the markdown and the plot from the tables; its last section, how the student is
  trained and chosen, is prose written by hand in ``docs/bench_student_notes.md``.

Run with ``nice -n 10`` on a shared machine; ``--help`` lists the sizes to turn down.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import duckdb
import polars as pl

from benchmarks.common import BENCH_VAR, DOCS, conditions, imdb_dir, logger
from llambert.config import PROJECT_ROOT, StudentConfig, load_settings

BENCH_DB = BENCH_VAR / "student.duckdb"  # teacher answer cache (warehouse schema)
RESULTS_DB = BENCH_VAR / "student_results.duckdb"  # figures: bench.learning_curve
SPEED_DB = BENCH_VAR / "student_speed.duckdb"  # figures: bench.student_speed
# (two files: DuckDB has one writer per file, and the stages may run side by side)
CKPT_DIR = BENCH_VAR / "student_checkpoints"
DOC = DOCS / "bench_student.md"
PLOT = DOCS / "bench_student_curve.png"
DESIGN_NOTES = DOCS / "bench_student_notes.md"  # the report's last section, prose written by hand
CURVE_SIZES = (250, 500, 1000, 2000, 4000)
TEACHER = "qwen2.5-coder-0.5b-instruct"
RUN_ID = time.strftime("%Y%m%dT%H%M%S")
STUDENT = "all-minilm-l6-v2"
STAGES = ("label", "curve", "speed", "batches", "report")


log = logger("bench-student")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_cache(path: Path = BENCH_DB) -> duckdb.DuckDBPyConnection:
    from llambert.warehouse import connect, ensure_schemas

    con = connect(path)
    ensure_schemas(con)
    return con


def open_bench(path: Path = RESULTS_DB) -> duckdb.DuckDBPyConnection:
    from llambert.warehouse import connect

    con = connect(path)
    con.execute("CREATE SCHEMA IF NOT EXISTS bench")
    con.execute("""
        CREATE TABLE IF NOT EXISTS bench.student_speed (
            run_id VARCHAR, measured_at TIMESTAMP DEFAULT current_timestamp, what VARCHAR, model VARCHAR,
            n_docs INTEGER, max_length INTEGER, batch_size INTEGER, seconds DOUBLE, docs_per_s DOUBLE,
            accuracy DOUBLE, agreement_with_pipeline DOUBLE, peak_rss_mib DOUBLE, details JSON);
        CREATE TABLE IF NOT EXISTS bench.learning_curve (
            run_id VARCHAR, measured_at TIMESTAMP DEFAULT current_timestamp, label_source VARCHAR,
            n_labels INTEGER, label_accuracy DOUBLE, test_accuracy DOUBLE, test_f1 DOUBLE, n_test INTEGER,
            epochs INTEGER, max_length INTEGER, train_seconds DOUBLE, train_examples_per_s DOUBLE, details JSON);
        CREATE TABLE IF NOT EXISTS bench.student_batches (
            run_id VARCHAR, measured_at TIMESTAMP DEFAULT current_timestamp, max_length INTEGER,
            batch_size INTEGER, round INTEGER, n_docs INTEGER, seconds DOUBLE, docs_per_s DOUBLE);
    """)
    return con


def imdb(split: str, data_dir: Path) -> pl.DataFrame:
    """IMDb rows with the warehouse's doc_id (md5 of the text), deduplicated, in a seeded order."""
    import hashlib

    frame = pl.read_parquet(data_dir / f"{split}.parquet", columns=["text", "label"])
    texts = frame["text"].to_list()
    frame = frame.with_columns(
        doc_id=pl.Series([hashlib.md5(t.encode("utf-8")).hexdigest() for t in texts]),
        label=pl.col("label").cast(pl.Int64),
    ).unique("doc_id", keep="first", maintain_order=True)
    order = [hashlib.md5(f"bench:{d}".encode()).hexdigest() for d in frame["doc_id"].to_list()]
    return frame.with_columns(k=pl.Series(order)).sort("k").drop("k")


# -- label ------------------------------------------------------------------------------------
def teacher_settings(args):
    return load_settings(
        overrides={
            "home": str(PROJECT_ROOT / "var"),
            "data_dir": str(args.data_dir),
            "teacher": {
                "model": TEACHER,
                "mode": "choice",
                "batch_size": 8,
                "max_prompt_tokens": args.max_prompt_tokens,
            },
            "threads": args.threads,
        }
    )


def stage_label(args) -> None:
    """LLM labels for prefixes of the train order; resumable through the answer cache."""
    from llambert.tasks import load_task
    from llambert.teacher import make_teacher
    from llambert.teacher.runner import label_documents

    settings = teacher_settings(args)
    task = load_task(settings.task)
    train = imdb("train", args.data_dir)
    con = open_cache()
    backend = make_teacher(settings, task)
    try:
        deadline = time.time() + args.label_budget_s
        for n in sorted(s for s in CURVE_SIZES if s <= args.llm_max):
            docs = train.head(n).select("doc_id", "text")
            run = label_documents(con, backend, docs, task.version, batch_size=8, commit_every=16)
            log(
                f"LLM labels for the first {n} train reviews: {run.prompts} asked, {run.cached} cached, "
                f"{run.prompts_per_s or 0:.2f} prompts/s"
            )
            if time.time() > deadline:
                log("label budget spent; the curve uses the largest fully labeled prefix")
                break
    finally:
        backend.close()
        con.close()


def llm_labels(con: duckdb.DuckDBPyConnection, args, docs: pl.DataFrame) -> pl.DataFrame:
    """(doc_id, llm_label) for the docs whose answer is cached; label id from the answer's best label."""
    from llambert.models import resolve_model
    from llambert.tasks import load_task
    from llambert.teacher import decoding_params

    settings = teacher_settings(args)
    task = load_task(settings.task)
    identity = resolve_model(TEACHER, settings.models_dir, role="teacher").identity
    decoding = decoding_params(settings).key()
    names = {l.name: l.id for l in task.labels}
    con.register("wanted", docs.select("doc_id"))
    rows = con.execute(
        "SELECT r.doc_id, c.raw_text FROM labeling.llm_requests r JOIN labeling.llm_cache c USING (cache_key) "
        "WHERE r.model_identity = ? AND r.decoding = ? AND r.doc_id IN (SELECT doc_id FROM wanted)",
        [identity, decoding],
    ).pl()
    con.unregister("wanted")
    return (
        rows.unique("doc_id")
        .with_columns(llm_label=pl.col("raw_text").replace_strict(names, default=None, return_dtype=pl.Int64))
        .select("doc_id", "llm_label")
    )


# -- speed ------------------------------------------------------------------------------------
_CPU: dict[str, float] = {}


def _timed_predict(pred, texts: list[str]) -> tuple[list[int], float]:
    """Labels and wall seconds; the process CPU seconds of the call go to _CPU['last']."""
    t0, c0 = time.perf_counter(), time.process_time()
    labels, _ = pred.predict(texts)
    _CPU["last"] = time.process_time() - c0
    return labels, time.perf_counter() - t0


def _accuracy(pred: list[int], gold: list[int]) -> float:
    return sum(a == b for a, b in zip(pred, gold)) / len(gold)


class OrtPredictor:
    """The trial ONNX Runtime path: same tokenization, order and padding as StudentPredictor.

    Exported in fp32 with eager attention (the pattern ORT's BERT fusion recognises), then fused by
    `onnxruntime.transformers.optimizer` into Attention / SkipLayerNorm / BiasGelu kernels.
    """

    def __init__(self, path: str, max_length: int, batch_size: int, work: Path, threads: int | None = None) -> None:
        import onnxruntime as ort
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.version = ort.__version__
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
        model.set_attn_implementation("eager")
        self.config = model.config
        self.label_ids = list(getattr(model.config, "llambert_label_ids", None) or range(model.config.num_labels))
        work.mkdir(parents=True, exist_ok=True)
        self.onnx_path = work / "model.onnx"
        t0 = time.perf_counter()
        ids = torch.ones((2, 16), dtype=torch.long)
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids)),
            str(self.onnx_path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}, "logits": {0: "b"}},
            dynamo=False,
            opset_version=17,
        )
        self.export_s = time.perf_counter() - t0
        self.threads = threads
        self.max_length, self.batch_size = max_length, batch_size
        self.fused: dict = {}
        self._session(self.onnx_path)

    def _session(self, onnx_path: Path) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])

    def optimize(self) -> None:
        """Fuse attention, layer norms and GELU (ORT's transformer optimizer, BERT patterns)."""
        from onnxruntime.transformers.optimizer import optimize_model

        m = optimize_model(
            str(self.onnx_path),
            model_type="bert",
            num_heads=self.config.num_attention_heads,
            hidden_size=self.config.hidden_size,
            opt_level=1,
        )
        self.fused = {k: v for k, v in m.get_fused_operator_statistics().items() if v}
        self.onnx_path = self.onnx_path.with_name("model.fused.onnx")
        m.save_model_to_file(str(self.onnx_path))
        self._session(self.onnx_path)

    def quantize(self, per_channel: bool = False, matmul_only: bool = False) -> None:
        """Dynamic int8 weights (VNNI kernels); per-channel and MatMul-only keep more accuracy."""
        from onnxruntime.quantization import QuantType, quantize_dynamic

        q = self.onnx_path.with_name(f"model.int8{'.pc' if per_channel else ''}{'.mm' if matmul_only else ''}.onnx")
        # DefaultTensorType: the fused com.microsoft ops have no ONNX shape inference; their outputs are float.
        quantize_dynamic(
            str(self.onnx_path),
            str(q),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=["MatMul"] if matmul_only else None,
            extra_options={"DefaultTensorType": 1},
        )
        self._session(q)

    def predict(self, texts: list[str]) -> tuple[list[int], list[float]]:
        import numpy as np

        from llambert.student.encoding import encode, pad_batch, sorted_batches

        ids = encode(self.tokenizer, texts, self.max_length)
        labels, probs = [0] * len(ids), [0.0] * len(ids)
        for batch in sorted_batches([len(x) for x in ids], self.batch_size):
            enc = pad_batch([ids[i] for i in batch], self.tokenizer.pad_token_id or 0)
            logits = self.session.run(["logits"], {k: v.numpy() for k, v in enc.items()})[0]
            e = np.exp(logits - logits.max(-1, keepdims=True))
            p = e / e.sum(-1, keepdims=True)
            for j, i in enumerate(batch):
                labels[i] = self.label_ids[int(p[j].argmax())]
                probs[i] = float(p[j].max())
        return labels, probs


def stage_speed(args) -> None:
    """Our inference vs transformers.pipeline on the same model and reviews, in this one process."""
    import torch
    from transformers import pipeline as hf_pipeline

    from llambert.models import resolve_model
    from llambert.student.predict import StudentPredictor

    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = sorted((int(x) for x in args.curve_sizes.split(",")), reverse=True)
    path = next(
        (CKPT_DIR / f"curve-gold-{n}" for n in sizes if (CKPT_DIR / f"curve-gold-{n}" / "config.json").exists()),
        CKPT_DIR / "none",
    )
    log(f"speed: checkpoint {path}")
    if not (path / "config.json").exists():
        log(f"{path} missing (run the curve stage first): using the base model with an untrained head")
        path = resolve_model(STUDENT, PROJECT_ROOT / "var" / "models", role="student").path
    test = imdb("test", args.data_dir).head(args.speed_docs)
    texts, gold = test["text"].to_list(), test["label"].to_list()
    res = open_bench(SPEED_DB)
    L = args.speed_max_length

    def record(what, n, max_length, batch, seconds, acc, agree, details=None):
        # CPU seconds of this process: on a machine shared with other jobs, docs per CPU-second says
        # what the code costs; wall docs/s says what this machine gave it at that moment.
        cpu = _CPU.pop("last", None)
        details = (details or {}) | ({"cpu_seconds": cpu, "docs_per_cpu_s": n / cpu} if cpu else {})
        res.execute(
            "INSERT INTO bench.student_speed (run_id, what, model, n_docs, max_length, batch_size, seconds, "
            "docs_per_s, accuracy, agreement_with_pipeline, peak_rss_mib, details) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                RUN_ID,
                what,
                STUDENT,
                n,
                max_length,
                batch,
                seconds,
                n / seconds if seconds else None,
                acc,
                agree,
                peak_rss_mib(),
                json.dumps(details or {}),
            ],
        )
        log(
            f"{what}: {n} docs in {seconds:.1f} s = {n / seconds:.1f} docs/s, accuracy {acc:.4f}, "
            f"agreement {agree if agree is None else round(agree, 4)}, peak RSS {peak_rss_mib():.0f} MiB"
        )

    # 1. ours, the product path: bf16, inference_mode, length-sorted batches, dynamic padding.
    import tracemalloc

    B = StudentConfig().infer_batch_size  # the product's default
    ours = StudentPredictor(str(path), max_length=L, batch_size=B)
    tracemalloc.start()
    ours_labels, ours_s = _timed_predict(ours, texts)
    py_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    # 2. transformers.pipeline, default settings (fp32, batch size 1); truncation=True is the one
    #    setting it needs, or reviews longer than the model's 512 positions fail.
    clf = hf_pipeline("text-classification", model=str(path))
    t0, c0 = time.perf_counter(), time.process_time()
    out = clf(texts, truncation=True)
    pipe_s, pipe_cpu = time.perf_counter() - t0, time.process_time() - c0
    ours_cpu = _CPU.pop("last")
    name_to_id = {v: int(k) for k, v in clf.model.config.id2label.items()}
    pipe_labels = [name_to_id[o["label"]] for o in out]
    agree = _accuracy(ours_labels, pipe_labels)
    _CPU["last"] = ours_cpu
    record(
        f"llambert StudentPredictor (bf16, sorted batches of {B})",
        len(texts),
        L,
        B,
        ours_s,
        _accuracy(ours_labels, gold),
        agree,
        {
            "python_heap_peak_mib": py_peak,
            "speedup_vs_pipeline_wall": pipe_s / ours_s,
            "speedup_vs_pipeline_cpu": pipe_cpu / ours_cpu,
        },
    )
    _CPU["last"] = pipe_cpu
    record(
        "transformers.pipeline default (fp32, batch 1, truncation=True)",
        len(texts),
        512,
        1,
        pipe_s,
        _accuracy(pipe_labels, gold),
        1.0,
    )
    del clf

    # 3. training examples/s at the paper's batch 16, seq 256, bf16 autocast (the product's settings).
    part = imdb("train", args.data_dir).tail(args.train_examples)
    from llambert.student.train import Phase, train_student

    base = resolve_model(STUDENT, PROJECT_ROOT / "var" / "models", role="student")
    cfg = student_cfg(
        args,
    ).model_copy(update={"max_length": 256, "epochs": 1})
    c0 = time.process_time()
    r = train_student(
        str(base.path),
        ["negative", "positive"],
        [0, 1],
        [Phase("speed", part["text"].to_list(), part["label"].to_list())],
        cfg,
        CKPT_DIR / "train-speed",
        threads=args.threads,
    )
    res.execute(
        "INSERT INTO bench.student_speed (run_id, what, model, n_docs, max_length, batch_size, seconds, docs_per_s, "
        "peak_rss_mib, details) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [
            RUN_ID,
            "training (bf16 autocast, batch 16, 1 epoch)",
            STUDENT,
            r.n_train,
            256,
            16,
            r.n_train / r.train_examples_per_s,
            r.train_examples_per_s,
            peak_rss_mib(),
            json.dumps({"cpu_seconds_incl_load": (cpu := time.process_time() - c0), "docs_per_cpu_s": r.n_train / cpu}),
        ],
    )
    log(f"training: {r.train_examples_per_s:.1f} examples/s at max_length 256, batch 16")

    # 4. faster paths (torch.compile last: its compile is the slowest part), on a subset, against our bf16 path on
    # the same subset.
    n = min(args.trial_docs, len(texts))
    sub, sub_gold = texts[:n], gold[:n]
    base_labels, base_s = _timed_predict(ours, sub)
    record(f"trial: bf16 (reference) on {n}", n, L, B, base_s, _accuracy(base_labels, sub_gold), None)
    fp32 = StudentPredictor(str(path), max_length=L, batch_size=B, bf16=False)
    lab, sec = _timed_predict(fp32, sub)
    record(f"trial: fp32 on {n}", n, L, B, sec, _accuracy(lab, sub_gold), None)
    try:
        from torch.ao.quantization import quantize_dynamic

        fp32.model = quantize_dynamic(fp32.model, {torch.nn.Linear}, dtype=torch.qint8)
        lab, sec = _timed_predict(fp32, sub)
        record(f"trial: int8 dynamic quantization on {n}", n, L, B, sec, _accuracy(lab, sub_gold), None)
    except Exception as e:  # noqa: BLE001 - a trial that cannot run is reported, not fatal
        log(f"int8 dynamic quantization failed: {e!r}")
    del fp32
    try:
        ort_pred = OrtPredictor(str(path), L, B, CKPT_DIR / "onnx", threads=args.threads)
        lab, sec = _timed_predict(ort_pred, sub)
        record(
            f"trial: ONNX Runtime fp32 on {n}",
            n,
            L,
            B,
            sec,
            _accuracy(lab, sub_gold),
            None,
            {"onnxruntime": ort_pred.version, "export_s": ort_pred.export_s},
        )
        ort_pred.optimize()
        lab, sec = _timed_predict(ort_pred, sub)
        record(
            f"trial: ONNX Runtime fp32, fused attention on {n}",
            n,
            L,
            B,
            sec,
            _accuracy(lab, sub_gold),
            None,
            {"onnxruntime": ort_pred.version, "fused": ort_pred.fused},
        )
        for per_channel, matmul_only, what in (
            (False, False, "int8 (dynamic)"),
            (True, True, "int8 per-channel, MatMul only"),
        ):
            ort_pred.quantize(per_channel=per_channel, matmul_only=matmul_only)
            lab, sec = _timed_predict(ort_pred, sub)
            record(
                f"trial: ONNX Runtime fused {what} on {n}",
                n,
                L,
                B,
                sec,
                _accuracy(lab, sub_gold),
                None,
                {"onnxruntime": ort_pred.version},
            )
    except ImportError as e:
        log(f"onnxruntime not importable ({e}): ONNX Runtime not tried (make bench-student installs the [onnx] extra)")
    except Exception as e:  # noqa: BLE001
        log(f"ONNX Runtime trial failed: {e!r}")
    try:
        comp = StudentPredictor(str(path), max_length=L, batch_size=B)
        comp.model = torch.compile(comp.model, dynamic=True)
        t0 = time.perf_counter()
        comp.predict(sub[: min(128, n)])  # compile (and one warm batch) outside the timing
        warm = time.perf_counter() - t0
        lab, sec = _timed_predict(comp, sub)
        record(
            f"trial: torch.compile bf16 on {n}",
            n,
            L,
            B,
            sec,
            _accuracy(lab, sub_gold),
            None,
            {"compile_and_warmup_s": warm},
        )
    except Exception as e:  # noqa: BLE001
        log(f"torch.compile failed: {e!r}")
    res.close()


def stage_batches(args) -> None:
    """The corpus-labeling batch size: each size on the same reviews, interleaved over two rounds
    (a shared machine drifts; interleaving keeps the comparison fair)."""
    from llambert.student.predict import StudentPredictor

    path = next(
        (
            CKPT_DIR / f"curve-gold-{n}"
            for n in (4000, 2000, 1000)
            if (CKPT_DIR / f"curve-gold-{n}" / "config.json").exists()
        ),
        None,
    )
    if path is None:
        log("batches: no curve-gold checkpoint (run the curve stage first)")
        return
    test = imdb("test", args.data_dir).head(args.trial_docs)
    texts = test["text"].to_list()
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    res = open_bench(SPEED_DB)
    for L in (256, 512):
        preds = {b: StudentPredictor(str(path), max_length=L, batch_size=b, threads=args.threads) for b in sizes}
        preds[sizes[0]].predict(texts[:32])  # warm-up
        for rnd in (1, 2):
            for b, pred in preds.items():
                _, sec = _timed_predict(pred, texts)
                res.execute(
                    "INSERT INTO bench.student_batches "
                    "(run_id, max_length, batch_size, round, n_docs, seconds, docs_per_s) VALUES (?,?,?,?,?,?,?)",
                    [RUN_ID, L, b, rnd, len(texts), sec, len(texts) / sec],
                )
                log(f"batches: {L} tokens, batch {b}, round {rnd}: {len(texts) / sec:.1f} docs/s")
    res.close()


# -- curve ------------------------------------------------------------------------------------
def student_cfg(args, **over):
    from llambert.config import StudentConfig

    return StudentConfig(
        model=STUDENT,
        max_length=args.curve_max_length,
        infer_max_length=args.curve_max_length,
        epochs=args.curve_epochs,
        learning_rate=args.curve_lr,
        batch_size=16,
        val_fraction=0.0,
        infer_batch_size=StudentConfig().infer_batch_size,
        **over,
    )


def train_and_test(args, name: str, texts, labels, test: pl.DataFrame, keep: bool = False) -> dict:
    """Fine-tune MiniLM on (texts, labels) with the project's trainer; accuracy on the test subset."""
    import shutil

    from llambert.metrics import classification_metrics
    from llambert.models import resolve_model
    from llambert.student.predict import StudentPredictor
    from llambert.student.train import Phase, train_student

    base = resolve_model(STUDENT, PROJECT_ROOT / "var" / "models", role="student")
    out = CKPT_DIR / name
    cfg = student_cfg(args)
    res = train_student(
        str(base.path),
        ["negative", "positive"],
        [0, 1],
        [Phase(name, texts, labels)],
        cfg,
        out,
        model_card={"title": f"bench {name}", "task": "imdb_sentiment", "recipe": name},
        threads=args.threads,
    )
    pred = StudentPredictor(str(out), max_length=args.curve_max_length, batch_size=StudentConfig().infer_batch_size)
    got, _ = pred.predict(test["text"].to_list())
    m = classification_metrics(test["label"].to_list(), got, [0, 1])
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return {
        "test_accuracy": m["accuracy"],
        "test_f1": m["macro_f1"],
        "train_seconds": res.seconds,
        "train_examples_per_s": res.train_examples_per_s,
    }


def curve_point_measured(res: duckdb.DuckDBPyConnection, source: str, n: int, cfg_key: str) -> bool:
    """Whether this (label source, size, config) point is already in bench.learning_curve (resume)."""
    # Parenthesized: DuckDB binds `=` tighter than `->>`.
    return (
        res.execute(
            "SELECT count(*) FROM bench.learning_curve WHERE label_source = ? AND n_labels = ? "
            "AND (details->>'config') = ?",
            [source, n, cfg_key],
        ).fetchone()[0]
        > 0
    )


def stage_curve(args) -> None:
    """Test accuracy against the number of training labels, gold then LLM; rows already measured are kept."""
    train = imdb("train", args.data_dir)
    test = imdb("test", args.data_dir).head(args.curve_test)
    sizes = [int(x) for x in args.curve_sizes.split(",")]
    sources = [s for s in args.curve_sources.split(",") if s]
    llm = None
    if "llm" in sources:
        cache = open_cache()
        llm = llm_labels(cache, args, train.head(max(sizes)))
        cache.close()
    res = open_bench()
    cfg_key = f"epochs={args.curve_epochs};max_length={args.curve_max_length};lr={args.curve_lr};test={args.curve_test}"
    for source in sources:
        for n in sizes:
            if curve_point_measured(res, source, n, cfg_key):
                continue
            part = train.head(n)
            if source == "llm":
                part = part.join(llm, on="doc_id", how="left")
                if part["llm_label"].null_count():
                    log(
                        f"LLM labels cover {part.height - part['llm_label'].null_count()} of the first {n}: "
                        "stop the LLM curve"
                    )
                    break
                ys = part["llm_label"].to_list()
            else:
                ys = part["label"].to_list()
            label_acc = sum(a == b for a, b in zip(ys, part["label"].to_list())) / n
            log(f"curve {source} n={n}: training")
            r = train_and_test(args, f"curve-{source}-{n}", part["text"].to_list(), ys, test, keep=(source == "gold"))
            log(f"curve {source} n={n}: test accuracy {r['test_accuracy']:.4f} ({r['train_examples_per_s']:.1f} ex/s)")
            res.execute(
                "INSERT INTO bench.learning_curve (run_id, label_source, n_labels, label_accuracy, "
                "test_accuracy, test_f1, n_test, epochs, max_length, train_seconds, train_examples_per_s, details) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    RUN_ID,
                    source,
                    n,
                    label_acc,
                    r["test_accuracy"],
                    r["test_f1"],
                    test.height,
                    args.curve_epochs,
                    args.curve_max_length,
                    r["train_seconds"],
                    r["train_examples_per_s"],
                    json.dumps({"config": cfg_key, "model": STUDENT, "teacher": TEACHER if source == "llm" else None}),
                ],
            )
    res.close()


# -- report -----------------------------------------------------------------------------------
def stage_report(args) -> None:
    """docs/bench_student.md and the curve PNG, from the latest figures in the results tables."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llambert.reporting import markdown_table

    con = open_bench(SPEED_DB)
    speed = con.execute(
        "SELECT what, n_docs, max_length, batch_size, round(seconds, 1) AS seconds, "
        "round(docs_per_s, 1) AS docs_per_s, round(100 * accuracy, 2) AS accuracy_pct, "
        "round(100 * agreement_with_pipeline, 2) AS agreement_pct, "
        "round(CAST(details->>'docs_per_cpu_s' AS DOUBLE), 1) AS docs_per_cpu_s, "
        "round(peak_rss_mib) AS peak_rss_mib, details FROM bench.student_speed "
        "WHERE run_id = (SELECT max(run_id) FROM bench.student_speed) ORDER BY measured_at"
    ).pl()
    batches = con.execute(
        "SELECT max_length, batch_size, any_value(n_docs) AS n_docs, round(min(docs_per_s), 1) AS docs_per_s_min, "
        "round(max(docs_per_s), 1) AS docs_per_s_max FROM bench.student_batches "
        "WHERE run_id = (SELECT max(run_id) FROM bench.student_batches) GROUP BY ALL ORDER BY ALL"
    ).pl()
    con.close()
    con = open_bench(RESULTS_DB)
    curve = con.execute(
        "SELECT label_source, n_labels, round(100 * label_accuracy, 1) AS label_accuracy_pct, "
        "round(100 * test_accuracy, 2) AS test_accuracy_pct, round(100 * test_f1, 2) AS test_f1_pct, n_test, epochs, "
        "max_length, round(train_examples_per_s, 1) AS train_ex_per_s, details->>'config' AS config "
        "FROM bench.learning_curve QUALIFY row_number() OVER (PARTITION BY label_source, n_labels, config "
        "ORDER BY measured_at DESC) = 1 ORDER BY label_source DESC, n_labels"
    ).pl()
    con.close()
    fig, ax = plt.subplots(figsize=(6, 4))
    for source, style in (("gold", "o-"), ("llm", "s--")):
        part = curve.filter(pl.col("label_source") == source)
        if part.height:
            label = "gold labels" if source == "gold" else f"LLM labels ({TEACHER}, choice)"
            ax.plot(part["n_labels"], part["test_accuracy_pct"], style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training labels")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{STUDENT}, IMDb: accuracy vs number of training labels")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)
    text = render_markdown(speed, curve, markdown_table, batches)
    if args.note:  # what was special about this run (load, sizes turned down), right under the title
        title, rest = text.split("\n", 1)
        text = f"{title}\n\n> **This run:** {args.note}\n{rest}"
    DOC.write_text(text)
    log(f"wrote {DOC} and {PLOT}")


def trial_verdicts(speed: pl.DataFrame) -> list[str]:
    """One line per trial: speed and accuracy against the bf16 reference, and whether it is kept."""
    trials = speed.filter(pl.col("what").str.starts_with("trial:"))
    ref = trials.filter(pl.col("what").str.contains("bf16 \\(reference\\)"))
    if not ref.height:
        return ["(no trials in this run)"]
    # Compared per CPU-second when measured: on a shared machine wall time mostly measures the neighbours.
    col = "docs_per_cpu_s" if ref["docs_per_cpu_s"][0] is not None else "docs_per_s"
    unit = "docs/CPU-s" if col == "docs_per_cpu_s" else "docs/s"
    r_rate, r_acc = ref[col][0], ref["accuracy_pct"][0]
    out = []
    for row in trials.filter(~pl.col("what").str.contains("reference")).iter_rows(named=True):
        row["docs_per_s"] = row[col] if row[col] is not None else row["docs_per_s"]
        faster = row["docs_per_s"] > r_rate
        equal = abs(row["accuracy_pct"] - r_acc) <= 0.2
        verdict = (
            "kept"
            if faster and equal
            else "not kept ("
            + ", ".join(x for x in ("not faster" if not faster else "", "accuracy differs" if not equal else "") if x)
            + ")"
        )
        out.append(
            f"- {row['what'][7:]}: {row['docs_per_s']:.1f} {unit} vs {r_rate:.1f} for bf16 "
            f"({row['docs_per_s'] / r_rate:.2f}x), accuracy {row['accuracy_pct']:.2f}% vs {r_acc:.2f}%: **{verdict}**"
        )
    return out


def render_markdown(
    speed: pl.DataFrame, curve: pl.DataFrame, markdown_table, batches: pl.DataFrame | None = None
) -> str:
    ours = speed.filter(pl.col("what").str.starts_with("llambert"))
    pipe = speed.filter(pl.col("what").str.starts_with("transformers.pipeline"))
    ratio = (pipe["seconds"][0] / ours["seconds"][0]) if ours.height and pipe.height else None
    cpu_ratio = json.loads(ours["details"][0]).get("speedup_vs_pipeline_cpu") if ratio else None
    machine = conditions()
    lines = [
        "# Student benchmark (`make bench-student`)",
        "",
        "Produced by `nice -n 10 python -m benchmarks.student label speed curve report` "
        "(code: `benchmarks/student.py`; figures in `bench.student_speed` in `var/bench/student_speed.duckdb`, "
        "`bench.learning_curve` in `var/bench/student_results.duckdb`). Machine when this report was written: "
        f"{machine['cpu']}, {machine['cores']} cores, load average {machine['load_1m']}. "
        "The ratios are measured in the "
        "same process, back to back, under the same conditions; see the note above for how busy the machine was.",
        "",
        "## Inference: ours vs `transformers.pipeline`",
        "",
        f"Same fine-tuned {STUDENT} checkpoint, same IMDb test reviews, same process. "
        '`transformers.pipeline("text-classification", model=path)` with its defaults (fp32, batch size 1); '
        "it needs `truncation=True`, or reviews longer than 512 tokens fail. Ours: bf16 weights, "
        "`torch.inference_mode`, length-sorted batches of "
        + str(StudentConfig().infer_batch_size)
        + " with dynamic padding, same 512-token truncation.",
        "",
        (f"**Speed-up: {ratio:.2f}x in wall time" + (f", {cpu_ratio:.2f}x per CPU-second" if cpu_ratio else "") + "**")
        if ratio
        else "(speed stage not run yet)",
        "",
        markdown_table(speed.drop("details"), max_rows=50, max_chars=90) if speed.height else "",
        "",
        "Peak RSS is this process's `getrusage` peak so far (cumulative: the pipeline row includes ours); "
        "`details` of our row holds the Python heap peak (tracemalloc) while labeling.",
        "",
        "### Faster paths tried",
        "",
        "Each trial ran on the same subset right after the bf16 reference on that subset; a path is kept only "
        "if it is faster at equal accuracy (within 0.2 points):",
        "",
        *trial_verdicts(speed),
        "",
        "### Batch size for corpus labeling (`batches` stage)",
        "",
        "Our path at each batch size on the same reviews, interleaved over two rounds (min and max of the two):",
        "",
        markdown_table(batches) if batches is not None and batches.height else "(not measured in this results file)",
        "",
        "## Learning curve (the paper's Fig. 1, left)",
        "",
        f"Test accuracy of {STUDENT} against the number of training labels: IMDb train reviews in a fixed seeded "
        "order, the first n of them (nested subsets), labeled with gold labels or with the LLM's labels "
        f"({TEACHER}, offline Q4_K_M GGUF, bf16, choice mode: the label whose token scores higher, the paper's "
        "prompt). To fit a shared 2-core CPU: max_length 128, 2 epochs, lr 1e-4, batch 16, no validation split "
        "(last epoch), evaluated on a fixed subset of 1,000 IMDb test reviews (the first 1,000 of the seeded "
        "order). `label_accuracy_pct`: how many of the training labels agree with gold.",
        "",
        f"![learning curve]({PLOT.name})",
        "",
        markdown_table(curve.drop("config"), max_rows=50) if curve.height else "(curve stage not run yet)",
        "",
        DESIGN_NOTES.read_text(),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # No argparse `choices` here: with nargs="*" Python 3.11 checks the default list as one value and fails.
    p.add_argument(
        "stages",
        nargs="*",
        default=list(STAGES),
        metavar="{" + ",".join(STAGES) + "}",
        help="stages to run, in order (default: all)",
    )
    p.add_argument("--data-dir", type=Path, default=imdb_dir())
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--llm-max", type=int, default=1000, help="label at most this many train reviews with the LLM")
    p.add_argument("--label-budget-s", type=float, default=1800)
    p.add_argument("--max-prompt-tokens", type=int, default=256)
    p.add_argument("--speed-docs", type=int, default=5000)
    p.add_argument("--speed-max-length", type=int, default=512)
    p.add_argument("--train-examples", type=int, default=256, help="examples for the training-speed figure")
    p.add_argument("--trial-docs", type=int, default=1000, help="reviews for the faster-path trials")
    p.add_argument("--batch-sizes", type=str, default="8,16,32", help="batches stage: the sizes compared")
    p.add_argument("--curve-sizes", type=str, default=",".join(map(str, CURVE_SIZES)))
    p.add_argument("--curve-test", type=int, default=1000)
    p.add_argument("--curve-epochs", type=int, default=2)
    p.add_argument("--curve-max-length", type=int, default=128)
    p.add_argument("--curve-lr", type=float, default=1e-4)
    p.add_argument("--curve-sources", type=str, default="gold,llm")
    p.add_argument("--note", type=str, default="", help="report: a note on this run's conditions, shown at the top")
    args = p.parse_args(argv)
    unknown = [s for s in args.stages if s not in STAGES]
    if unknown:
        p.error(f"unknown stage(s) {unknown}: choose from {', '.join(STAGES)}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for stage in args.stages:
        log(f"stage {stage}")
        globals()[f"stage_{stage}"](args)


if __name__ == "__main__":
    main()
