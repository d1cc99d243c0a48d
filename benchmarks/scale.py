"""`make bench-scale`: corpus labeling on Ray against the local engine, and the loader (issue 15).

One run, interleaved on the same documents (the first ``--docs`` IMDb unsup reviews, ingested with the
product's own ``pipeline.ingest_batch``):

- ``local``: ``pipeline._predict_local`` with ``threads: 2``;
- ``ray-1x2``: ``inference.engine: ray``, 1 worker x 2 CPUs;
- ``ray-2x1``: 2 workers x 1 CPU;

in that order, ``--repeats`` times, ``predictions.labels`` emptied before each. The student is the real
all-MiniLM-L6-v2 encoder with a fresh (untrained) 2-label head: the cost per document is that of a
fine-tuned one (same encoder, same head shape, same tokens). Then the loader
(``predictions_store.load_staged``) on ``--loader-rows`` synthetic staged predictions into
``predictions.storage: table`` and ``parquet``. Every measurement is a row of ``bench.scale`` in
``var/bench/scale.duckdb`` (with the load average beside it); ``docs/bench_scale.md`` is generated from
this run's rows, with an Amdahl projection to 7.8M and 100M documents.

    nice -n 10 .venv/bin/python -m benchmarks.scale --docs 20000 --loader-rows 10000000

The bench home (warehouse, corpus parquet, student folder, staged loader files) lives under
``var/bench/scale/`` and is reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import BENCH_VAR, DOCS, connect_bench, imdb_dir, logger
from llambert.config import Settings

ROOT = BENCH_VAR / "scale"
DB = BENCH_VAR / "scale.duckdb"
DOC = DOCS / "bench_scale.md"
STUDENT = "all-minilm-l6-v2"
CHECKPOINT_ID = "bench-scale-minilm-fresh-head"
LOADER_CHECKPOINT_ID = "bench-scale-loader"
BATCH = "initial"
PROJECT_DOCS = (7_800_000, 100_000_000)
PROJECT_WORKERS = (1, 2, 4, 8, 16, 64)
# (name, inference settings); the local engine ignores the inference section.
CONFIGS = (
    ("local", {"engine": "local"}),
    ("ray-1x2", {"engine": "ray", "workers": 1, "cpus_per_worker": 2.0}),
    ("ray-2x1", {"engine": "ray", "workers": 2, "cpus_per_worker": 1.0}),
)

DDL = """
CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE IF NOT EXISTS bench.scale (
    run_id          VARCHAR NOT NULL,
    measured_at     TIMESTAMP NOT NULL,
    kind            VARCHAR NOT NULL,   -- label | loader
    config          VARCHAR NOT NULL,   -- local, ray-1x2, ray-2x1 | table, parquet
    repeat          INTEGER,
    rows            BIGINT NOT NULL,    -- documents labeled, or predictions loaded
    seconds         DOUBLE NOT NULL,    -- wall seconds of the whole step
    per_s           DOUBLE NOT NULL,    -- rows / seconds
    ratio_vs_local  DOUBLE,             -- label: per_s / the local engine's per_s in the same repeat
    export_s        DOUBLE,
    ray_s           DOUBLE,
    load_s          DOUBLE,
    workers         INTEGER,
    cpus_per_worker DOUBLE,
    load_1m_before  DOUBLE,
    load_5m_before  DOUBLE,
    load_15m_before DOUBLE,
    load_1m_after   DOUBLE,
    cpu_model       VARCHAR,
    cpus            INTEGER,
    details         JSON
);
"""


log = logger("bench-scale")


# -- machine ------------------------------------------------------------------------------------


def machine() -> dict:
    """lscpu's model name and core counts, the CPUs this process may use, native bf16, versions."""
    info: dict = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from llambert.hardware import native_bf16

    try:
        import ray

        ray_version = ray.__version__
    except ImportError:
        ray_version = None
    import torch

    sockets = int(info.get("Socket(s)", "1") or 1)
    per_socket = info.get("Core(s) per socket")
    return {
        "cpu_model": info.get("Model name", "unknown"),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cores": sockets * int(per_socket) if per_socket and per_socket.isdigit() else None,
        "threads_per_core": info.get("Thread(s) per core"),
        "native_bf16": native_bf16(),
        "ray": ray_version,
        "torch": torch.__version__,
    }


def loadavg() -> tuple[float, float, float]:
    return tuple(round(x, 2) for x in os.getloadavg())


# -- bench home: corpus, warehouse, student -------------------------------------------------------


def settings_for(home: Path, corpus: Path, inference: dict | None = None, storage: str = "table") -> Settings:
    """The product's settings for the bench home (built from a dict: no llambert.yaml or env in the way)."""
    return Settings.model_validate(
        {
            "home": str(home),
            "data_dir": str(imdb_dir()),
            "sources": [{"name": "imdb", "path": str(corpus), "format": "parquet", "split": "unsup"}],
            "threads": 2,
            "student": {"infer_max_length": 256, "bf16": "auto"},
            "inference": {"num_cpus": 2, **(inference or {})},
            "predictions": {"storage": storage},
        }
    )


def build_corpus(n: int) -> tuple[Path, Path, int]:
    """The first ``n`` unsup reviews as a parquet file and a warehouse whose batch ``initial`` holds them
    (cached per ``n``); returns (home, parquet, documents in raw.corpus)."""
    import polars as pl

    from llambert import pipeline
    from llambert.warehouse import open_warehouse

    home = ROOT / f"home-{n}"
    corpus = ROOT / "corpus" / f"unsup_first_{n}.parquet"
    marker = home / "ingested.json"
    if marker.exists():
        stats = json.loads(marker.read_text())
        log(f"corpus: reusing {home} ({stats['documents']:,} documents in raw.corpus)")
        return home, corpus, stats["documents"]
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    corpus.parent.mkdir(parents=True, exist_ok=True)
    src = imdb_dir() / "unsup.parquet"
    t0 = time.perf_counter()
    frame = pl.scan_parquet(src).head(n).select("id", "text", "label").collect()
    if frame.height < n:
        raise SystemExit(f"{src} has only {frame.height:,} rows, --docs asked for {n:,}")
    tmp = corpus.with_name(f".{corpus.name}.{uuid.uuid4().hex}.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, corpus)
    settings = settings_for(home, corpus)
    with open_warehouse(settings.warehouse_path) as con:
        stats = pipeline.ingest_batch(con, settings, BATCH)
    marker.write_text(json.dumps(stats.as_dict(), default=str))
    log(
        f"corpus: ingested the first {n:,} unsup reviews into {settings.warehouse_path} in "
        f"{time.perf_counter() - t0:.1f} s ({stats['documents']:,} documents, {stats['rejected_rows']} rejected)"
    )
    return home, corpus, stats["documents"]


def build_student() -> Path:
    """The real all-MiniLM-L6-v2 encoder with a fresh, untrained 2-label head (seeded), saved once."""
    folder = ROOT / "student-minilm-fresh-head"
    if (folder / "llambert_bench.json").exists():
        log(f"student: reusing {folder}")
        return folder
    import torch

    from llambert.models import resolve_model
    from llambert.student.train import load_classifier
    from llambert.tasks import load_task

    base = resolve_model(STUDENT, Settings().models_dir, role="student")
    task = load_task("imdb_sentiment")
    torch.manual_seed(0)
    tok, model = load_classifier(str(base.path), [lab.name for lab in task.labels], [lab.id for lab in task.labels])
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "llambert_bench.json").write_text(
        json.dumps({"base": STUDENT, "base_path": str(base.path), "head": "fresh, untrained (torch.manual_seed(0))"})
    )
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    log(f"student: {STUDENT} from {base.path} with a fresh 2-label head saved to {folder}")
    return folder


# -- results -----------------------------------------------------------------------------------


def record(row: dict) -> None:
    con = connect_bench(DB, DDL)
    try:
        row = {**row, "details": json.dumps(row.get("details") or {}, default=str)}
        cols = list(row)
        con.execute(
            f"INSERT INTO bench.scale ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", [row[c] for c in cols]
        )
    finally:
        con.close()


# -- labeling ------------------------------------------------------------------------------------


def _clear(session, settings: Settings) -> None:
    """No prediction of the bench checkpoint, and no staged Ray run left from an earlier (stopped) run."""
    from llambert import predictions_store

    with session() as c:
        predictions_store.delete(c, settings, BATCH, CHECKPOINT_ID)
    shutil.rmtree(settings.staging_dir, ignore_errors=True)


def _count(session) -> int:
    with session() as c:
        return c.execute(
            "SELECT count(*) FROM predictions.labels WHERE batch = ? AND checkpoint_id = ?", [BATCH, CHECKPOINT_ID]
        ).fetchone()[0]


def _ray_stuck(name: str, limit: int):
    def handler(signum, frame):
        raise SystemExit(
            f"{name}: the Ray job did not finish within {limit} s (see the Ray Data progress lines "
            "above: an operator whose tasks never get a CPU is a scheduling deadlock); stopped"
        )

    return handler


def measure_labeling(
    home: Path, corpus: Path, docs: int, student: Path, repeats: int, run_id: str, mach: dict, ray_timeout: int = 900
) -> list[dict]:
    from llambert import pipeline, predictions_store
    from llambert.warehouse import Warehouse

    wh = Warehouse(settings_for(home, corpus).warehouse_path)
    with wh.session(prepare=True) as c:
        predictions_store.prepare(c, settings_for(home, corpus))
    rows = []
    ray_cpus = None
    for rep in range(1, repeats + 1):
        local_rate = None
        for name, inference in CONFIGS:
            settings = settings_for(home, corpus, inference)
            _clear(wh.session, settings)
            if inference["engine"] == "ray":
                import ray

                from llambert.ray_engine import init_ray

                if ray.is_initialized():
                    # A fresh Ray per configuration: the previous job's actors may still hold their CPUs
                    # when the next pool starts (measured: the 2-worker pool then ran one actor).
                    ray.shutdown()
                t0 = time.perf_counter()
                # Ray starts its workers at nice 15; the local engine runs at the caller's priority. Any other
                # process on the machine would then take CPU from Ray's actors and not from the local engine.
                os.environ.setdefault("RAY_worker_niceness", "0")
                init_ray(settings)  # inference.num_cpus 2, not timed
                import ray

                ray_cpus = ray.cluster_resources().get("CPU")
                log(
                    f"Ray started in {time.perf_counter() - t0:.1f} s (not in any measurement), {ray_cpus:g} logical "
                    "CPUs"
                )
            log(f"repeat {rep}/{repeats}: {name} on {docs:,} documents (load avg {os.getloadavg()[0]:.2f})")
            before = loadavg()
            t0 = time.perf_counter()
            if inference["engine"] == "ray":
                from llambert.ray_engine import label_with_ray

                # A Ray job that stops making progress (e.g. a task that never gets a CPU) fails the run
                # instead of hanging it: at most max(--ray-timeout, 10 x the local engine's wall time).
                limit = max(ray_timeout, int(10 * docs / local_rate) if local_rate else 0)
                signal.signal(signal.SIGALRM, _ray_stuck(name, limit))
                signal.alarm(limit)
                try:
                    got = label_with_ray(wh.session, settings, BATCH, CHECKPOINT_ID, str(student))
                finally:
                    signal.alarm(0)
                done = got["predicted_now"]
            else:
                got = {}
                done = pipeline._predict_local(wh.session, settings, BATCH, CHECKPOINT_ID, str(student))
            wall = time.perf_counter() - t0
            after = loadavg()
            stored = _count(wh.session)
            if done != docs or stored != docs:
                raise SystemExit(f"{name}: labeled {done:,} and stored {stored:,} predictions, expected {docs:,}")
            rate = done / wall
            if name == "local":
                local_rate = rate
            cfg = settings.inference
            row = {
                "run_id": run_id,
                "measured_at": datetime.now(UTC).replace(tzinfo=None),
                "kind": "label",
                "config": name,
                "repeat": rep,
                "rows": done,
                "seconds": round(wall, 3),
                "per_s": round(rate, 3),
                "ratio_vs_local": round(rate / local_rate, 4) if local_rate else None,
                "export_s": got.get("export_s"),
                "ray_s": got.get("ray_s"),
                "load_s": got.get("load_s"),
                "workers": cfg.workers if name != "local" else 1,
                "cpus_per_worker": cfg.cpus_per_worker if name != "local" else float(settings.threads),
                "load_1m_before": before[0],
                "load_5m_before": before[1],
                "load_15m_before": before[2],
                "load_1m_after": after[0],
                "cpu_model": mach["cpu_model"],
                "cpus": mach["cpus"],
                "details": {
                    "engine": inference["engine"],
                    "threads": settings.threads,
                    "infer_max_length": settings.student.infer_max_length,
                    "infer_batch_size": settings.student.infer_batch_size,
                    "truncation": settings.student.truncation,
                    "bf16": mach["native_bf16"],
                    "shard_rows": cfg.shard_rows,
                    "batch_rows": cfg.batch_rows,
                    "num_cpus": cfg.num_cpus,
                    "ray_logical_cpus": ray_cpus if name != "local" else None,
                    "load_rows_per_s": got.get("load_rows_per_s"),
                    "ray_result": got,
                },
            }
            record(row)
            rows.append(row)
            split = (
                f" (export {got['export_s']:.1f} s, Ray {got['ray_s']:.1f} s, load {got['load_s']:.2f} s)"
                if got.get("ray_s") is not None
                else ""
            )
            ratio = f", {row['ratio_vs_local']:.2f}x local" if row["ratio_vs_local"] and name != "local" else ""
            log(
                f"repeat {rep}: {name}: {done:,} docs in {wall:.1f} s = {rate:.1f} docs/s{ratio}{split}; "
                f"load avg {before[0]:.2f} -> {after[0]:.2f}"
            )
    _clear(wh.session, settings_for(home, corpus))
    return rows


def stop_ray(ray_tmp: Path | None) -> None:
    """ray.shutdown(), then any process still running from this script's own Ray folder (by PID)."""
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()
        log("Ray shut down")
    if ray_tmp is None:
        return
    marker = str(ray_tmp).encode()
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmd.read_bytes() and int(cmd.parent.name) != os.getpid():
                os.kill(int(cmd.parent.name), signal.SIGKILL)
                log(f"killed leftover Ray process {cmd.parent.name}")
        except (OSError, ValueError):
            pass
    shutil.rmtree(ray_tmp, ignore_errors=True)


# -- the loader ----------------------------------------------------------------------------------


def staged_files(n: int, files: int) -> Path:
    """``n`` synthetic staged predictions (the Ray job's output columns) in ``files`` Parquet files (cached)."""
    import duckdb

    folder = ROOT / "loader" / f"staged-{n}-{files}"
    if (folder / "_COMPLETE").exists():
        log(f"loader: reusing {n:,} staged rows in {folder}")
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    con = duckdb.connect()
    try:
        step = -(-n // files)
        for i in range(files):
            lo, hi = i * step, min(n, (i + 1) * step)
            if lo >= hi:
                break
            con.execute(
                f"COPY (SELECT md5(i::VARCHAR) AS doc_id, "
                f"(hash(i) % 2)::BIGINT AS label, 0.5 + (hash(i * 7) % 500000) / 1e6 AS probability, "
                f"'{BATCH}' AS batch, '{LOADER_CHECKPOINT_ID}' AS checkpoint_id FROM range({lo}, {hi}) t(i)) "
                f"TO '{folder / f'part-{i:03d}.parquet'}' (FORMAT parquet)"
            )
    finally:
        con.close()
    (folder / "_COMPLETE").write_text(str(n))
    log(f"loader: wrote {n:,} staged rows as {files} Parquet files in {time.perf_counter() - t0:.1f} s ({folder})")
    return folder


def measure_loader(n: int, files: int, run_id: str, mach: dict) -> list[dict]:
    from llambert import predictions_store
    from llambert.warehouse import open_warehouse

    folder = staged_files(n, files)
    glob = str(folder / "*.parquet")
    rows = []
    for storage in ("table", "parquet"):
        home = ROOT / "loader" / f"home-{storage}"
        shutil.rmtree(home, ignore_errors=True)  # a fresh warehouse with just the DDL, every run
        settings = settings_for(home, folder / "none.parquet", storage=storage)
        with open_warehouse(settings.warehouse_path) as con:
            predictions_store.prepare(con, settings)
            con.execute("CHECKPOINT")
            log(
                f"loader: {n:,} staged rows into predictions.labels (storage {storage}) "
                f"(load avg {os.getloadavg()[0]:.2f})"
            )
            before = loadavg()
            t0 = time.perf_counter()
            loaded = predictions_store.load_staged(con, settings, glob, BATCH, LOADER_CHECKPOINT_ID, "bench")
            load_only = time.perf_counter() - t0
            con.execute("CHECKPOINT")  # the table's rows on disk: part of what a load costs
            wall = time.perf_counter() - t0
            after = loadavg()
            stored = con.execute(
                "SELECT count(*) FROM predictions.labels WHERE checkpoint_id = ?", [LOADER_CHECKPOINT_ID]
            ).fetchone()[0]
        if loaded != n or stored != n:
            raise SystemExit(f"loader ({storage}): loaded {loaded:,}, stored {stored:,}, expected {n:,}")
        size = sum(p.stat().st_size for p in home.rglob("*") if p.is_file())
        row = {
            "run_id": run_id,
            "measured_at": datetime.now(UTC).replace(tzinfo=None),
            "kind": "loader",
            "config": storage,
            "repeat": None,
            "rows": loaded,
            "seconds": round(wall, 3),
            "per_s": round(loaded / wall, 1),
            "ratio_vs_local": None,
            "export_s": None,
            "ray_s": None,
            "load_s": round(wall, 3),
            "workers": None,
            "cpus_per_worker": None,
            "load_1m_before": before[0],
            "load_5m_before": before[1],
            "load_15m_before": before[2],
            "load_1m_after": after[0],
            "cpu_model": mach["cpu_model"],
            "cpus": mach["cpus"],
            "details": {
                "files": files,
                "load_staged_s": round(load_only, 3),
                "checkpoint_s": round(wall - load_only, 3),
                "home_bytes": size,
            },
        }
        record(row)
        rows.append(row)
        log(
            f"loader: storage {storage}: {loaded:,} rows in {wall:.2f} s = {loaded / wall:,.0f} rows/s "
            f"(load_staged {load_only:.2f} s + checkpoint {wall - load_only:.2f} s); load avg {before[0]:.2f} -> "
            f"{after[0]:.2f}"
        )
        shutil.rmtree(home, ignore_errors=True)
    return rows


# -- the report ----------------------------------------------------------------------------------


def _dur(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _n(x: float) -> str:
    return f"{x / 1e6:g}M" if x >= 1e6 else f"{x:,.0f}"


def report(run_id: str, out: Path, args, mach: dict, docs: int, student: Path) -> None:
    import duckdb

    con = duckdb.connect(str(DB), read_only=True)
    try:
        cols = [d[0] for d in con.execute("SELECT * FROM bench.scale LIMIT 0").description]
        data = [
            dict(zip(cols, r))
            for r in con.execute("SELECT * FROM bench.scale WHERE run_id = ? ORDER BY measured_at", [run_id]).fetchall()
        ]
    finally:
        con.close()
    label = [r for r in data if r["kind"] == "label"]
    loader = {r["config"]: r for r in data if r["kind"] == "loader"}
    det0 = json.loads(label[0]["details"]) if label else {}
    ray_cpus = next((json.loads(r["details"]).get("ray_logical_cpus") for r in label if r["config"] != "local"), None)
    started = data[0]["measured_at"] if data else datetime.now(UTC)
    cores = f", {mach['cores']} cores x {mach['threads_per_core']} thread(s)" if mach["cores"] else ""
    lines = [
        "# `make bench-scale`: corpus labeling on Ray, and the loader (issue 15)",
        "",
        f"Generated by `benchmarks/scale.py` from `var/bench/scale.duckdb` (`bench.scale`, run `{run_id}`, "
        f"{started:%Y-%m-%d %H:%M} UTC); reproduce with `make bench-scale` "
        f'(`SCALE_ARGS="--docs {args.docs} --loader-rows {args.loader_rows} --repeats {args.repeats}"`).',
        "",
        f"Machine: {mach['cpu_model']}, {mach['cpus']} CPUs for this process{cores}; native bf16: "
        f"{'yes' if mach['native_bf16'] else 'no'} (so `bf16: auto` ran {'bf16' if mach['native_bf16'] else 'fp32'}); "
        f"torch {mach['torch']}, Ray {mach['ray']}. One local Ray with `inference.num_cpus: 2`"
        + (f" ({ray_cpus:g} logical CPUs in the Ray cluster)" if ray_cpus else "")
        + ", started before the first Ray measurement (its start-up is in no figure).",
        "",
        f"Documents: the first {args.docs:,} IMDb unsup reviews, ingested with `pipeline.ingest_batch` "
        f"({docs:,} distinct documents in `raw.corpus`). Student: {STUDENT} (the real encoder) with a fresh, "
        "**untrained** 2-label head (`save_pretrained`): the labels are meaningless, but the cost per document is "
        "that of a fine-tuned checkpoint (same encoder, same head shape, same tokens)."
        + (
            f" `infer_max_length` {det0['infer_max_length']}, `infer_batch_size` {det0['infer_batch_size']}, "
            f"truncation `{det0['truncation']}`; Ray: `shard_rows` {det0['shard_rows']}, `batch_rows` "
            f"{det0['batch_rows']}."
            if det0
            else ""
        ),
        "",
    ]
    if label:
        busiest = max(r["load_1m_before"] for r in label + list(loader.values()))
        lines += [
            "## Labeling: local engine vs Ray",
            "",
            "Interleaved in one run (local, Ray 1 worker x 2 CPUs, Ray 2 workers x 1 CPU, then again for each "
            "repeat), `predictions.labels` emptied before each. Wall seconds cover the whole step: for the local "
            "engine the model load, labeling and its chunked inserts; for Ray the export of the pending documents "
            "to Parquet shards, the Ray Data job (actor start and model load included) and the loader. The ratio "
            "is against the local engine of the same repeat.",
            "",
            "| repeat | configuration | docs | seconds | docs/s | vs local | export / Ray / load s | Ray stage docs/s "
            "| actors that labeled | load avg 1 min (before -> after) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in label:
            split = f"{r['export_s']:.1f} / {r['ray_s']:.1f} / {r['load_s']:.2f}" if r["ray_s"] is not None else "–"
            ray_rate = f"{r['rows'] / r['ray_s']:.1f}" if r["ray_s"] else "–"
            det = r["details"] if isinstance(r["details"], dict) else json.loads(r["details"] or "{}")
            actors = (det.get("ray_result") or {}).get("actors_used", "–")
            lines.append(
                f"| {r['repeat']} | {r['config']} | {r['rows']:,} | {r['seconds']:.1f} | {r['per_s']:.1f} | "
                f"{r['ratio_vs_local']:.2f}x | {split} | {ray_rate} | {actors} | {r['load_1m_before']:.2f} -> "
                f"{r['load_1m_after']:.2f} |"
            )
        lines.append("")
        if busiest > mach["cpus"]:
            lines += [
                f"The machine was shared: a 1-minute load average up to {busiest:.2f} on {mach['cpus']} CPUs "
                "before some measurements. Compare the configurations within a repeat (the ratio column); the "
                "absolute rates are lower bounds.",
                "",
            ]
    if loader:
        lines += [
            "## The loader",
            "",
            f"`predictions_store.load_staged` on {args.loader_rows:,} synthetic staged predictions (the Ray job's "
            f"columns: md5 doc ids, batch, checkpoint, label, probability) in {args.loader_files} Parquet files, "
            "into a fresh warehouse that holds only the DDL. `table`: one `INSERT OR REPLACE` transaction into the "
            "primary-keyed table, then a `CHECKPOINT` (timed: the rows on disk are part of the load); `parquet`: "
            "one deduplicating rewrite of the staged rows into the dataset behind the view, no warehouse write.",
            "",
            "| storage | rows | seconds | rows/s | of which load_staged / checkpoint s | load avg 1 min |",
            "|---|---|---|---|---|---|",
        ]
        for storage in ("table", "parquet"):
            r = loader.get(storage)
            if r:
                d = json.loads(r["details"])
                lines.append(
                    f"| {storage} | {r['rows']:,} | {r['seconds']:.2f} | {r['per_s']:,.0f} | "
                    f"{d['load_staged_s']:.2f} / {d['checkpoint_s']:.2f} | {r['load_1m_before']:.2f} -> "
                    f"{r['load_1m_after']:.2f} |"
                )
        lines.append("")
    ray2 = [r for r in label if r["config"] == "ray-2x1" and r["ray_s"]]
    if ray2 and loader:
        stage_rate = sum(r["rows"] for r in ray2) / sum(r["ray_s"] for r in ray2)
        wall_rate = sum(r["rows"] for r in ray2) / sum(r["seconds"] for r in ray2)
        export_s = sum(r["export_s"] or 0.0 for r in ray2)
        export_rate = sum(r["rows"] for r in ray2) / export_s if export_s else None
        per_worker = stage_rate / 2
        lt, lp = loader.get("table"), loader.get("parquet")
        lines += [
            "## Projection (Amdahl)",
            "",
            "time(N, K) = N / (K x per-worker rate) + N / loader rate. Per-worker rate = the Ray 2-worker "
            f"configuration's Ray-stage rate / 2 = {stage_rate:.1f} / 2 = **{per_worker:.1f} docs/s** (documents / "
            "seconds of the Ray Data job, summed over the repeats; the stage includes actor start and model load, "
            "which a long job amortises, so this is conservative; its export and load are not in it, since the "
            f"loader is the second term). The whole 2-worker step ran at {wall_rate:.1f} docs/s. The loader is "
            "serial: with `storage: table` every row goes through the warehouse's one writer (rate measured into an "
            "empty table); with `storage: parquet` the load is one file rewrite per Ray run, also serial in this "
            "design but with no warehouse lock, so it could be split per run or per node. K = inf is the loader's "
            "floor.",
            "",
            "| workers K | "
            + " | ".join(f"{_n(n)} docs, {s}" for n in PROJECT_DOCS for s in ("table", "parquet") if loader.get(s))
            + " |",
            "|---|" + "---|" * sum(1 for _ in PROJECT_DOCS for s in ("table", "parquet") if loader.get(s)),
        ]
        for k in (*PROJECT_WORKERS, None):
            cells = []
            for n in PROJECT_DOCS:
                for s in ("table", "parquet"):
                    if loader.get(s):
                        t = (n / (k * per_worker) if k else 0.0) + n / loader[s]["per_s"]
                        cells.append(_dur(t))
            lines.append(f"| {k if k else 'inf'} | " + " | ".join(cells) + " |")
        lines.append("")
        for s, r in (("table", lt), ("parquet", lp)):
            if r:
                k_half = per_worker and r["per_s"] / per_worker
                lines.append(
                    f"- `{s}`: the loader ({r['per_s']:,.0f} rows/s) costs as much as the labeling once "
                    f"K is about {k_half:,.0f} workers of this kind."
                )
        if export_rate:
            lines.append(
                f"- Not in the formula: the export of pending documents to shards, also serial on the "
                f"driver ({export_rate:,.0f} docs/s here, so {_dur(PROJECT_DOCS[-1] / export_rate)} for "
                f"{_n(PROJECT_DOCS[-1])} documents)."
            )
        lines.append("")
    lines += [
        "## On GPUs",
        "",
        "Set `inference.gpus_per_worker` (e.g. 1, or 0.5 to put two actors on a GPU) and a much larger "
        "`student.infer_batch_size` (hundreds of documents per forward pass instead of the CPU's 16): the per-worker "
        "rate grows by one to two orders of magnitude, so the serial terms, the export and above all the loader, "
        "dominate at far fewer workers than in the table above; `predictions.storage: parquet` (no warehouse writer) "
        "is then the setting to use. The CPU-side tokenization in each actor may also become its bottleneck.",
        "",
        "## Not measured",
        "",
        "- GPUs (none here): the GPU paragraph is reasoning, not a measurement.",
        "- More than one node: Ray ran on this machine only; a cluster adds scheduling, object transfer and "
        "`inference.staging_dir` on a shared filesystem (NFS or similar), whose bandwidth and latency were not "
        "measured.",
        "- The loader into a table that already holds millions of rows (the primary-key index grows), and "
        "concurrent readers of the warehouse during a load.",
        "- More workers than CPUs, and Ray's behaviour when an actor dies (`tests/test_ray_engine.py` tests that "
        "no rows are lost, not what it costs).",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    log(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20_000, help="first N IMDb unsup reviews to label")
    ap.add_argument("--repeats", type=int, default=1, help="times the interleaved order local, ray-1x2, ray-2x1 runs")
    ap.add_argument("--loader-rows", type=int, default=10_000_000, help="synthetic staged predictions to load")
    ap.add_argument("--loader-files", type=int, default=10, help="Parquet files they are written as")
    ap.add_argument(
        "--ray-timeout",
        type=int,
        default=900,
        help="seconds a Ray configuration may take at least (the limit is the larger of this and 10x "
        "the local engine's time) before the run stops as stuck",
    )
    ap.add_argument("--skip-labeling", action="store_true", help="only the loader (and the report)")
    ap.add_argument("--out", type=Path, default=DOC, help="the markdown report")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    mach = machine()
    log(
        f"run {run_id}: {mach['cpu_model']}, {mach['cpus']} CPUs, native bf16 {mach['native_bf16']}, "
        f"load avg {os.getloadavg()[0]:.2f}"
    )
    ROOT.mkdir(parents=True, exist_ok=True)
    home, corpus, docs = build_corpus(args.docs)
    student = build_student()
    ray_tmp = None
    if not args.skip_labeling:
        if "RAY_TMPDIR" not in os.environ:  # Ray's own folder, short (socket paths), removed at the end
            ray_tmp = Path(tempfile.mkdtemp(prefix="llrs", dir="/tmp"))
            os.environ["RAY_TMPDIR"] = str(ray_tmp)
        try:
            measure_labeling(home, corpus, docs, student, args.repeats, run_id, mach, args.ray_timeout)
        finally:
            stop_ray(ray_tmp)
    measure_loader(args.loader_rows, args.loader_files, run_id, mach)
    report(run_id, args.out, args, mach, docs, student)


if __name__ == "__main__":
    main()
