"""``inference.engine: ray``: one batch's corpus labeling as a Ray Data job (README "Scaling out").

1. export: the batch's pending documents (no prediction from the champion yet) leave DuckDB as Parquet
   shards of ``inference.shard_rows`` rows, in one short read session;
2. ``ray.data.read_parquet`` -> ``map_batches`` with :class:`Labeler` actors (each loads the champion
   once; the same predictor code as the local engine, length-sorted batches inside each block) ->
   ``write_parquet`` into the run's staging folder, then a ``_COMPLETE`` marker;
3. the loader (:func:`llambert.predictions_store.load_staged`) puts the staged rows into predictions.labels,
   exactly once per document, and the run's folder is removed.

Ray retries a task whose actor died (Ray Data restarts map actors by default), and the loader
deduplicates, so a lost worker costs time, never rows. A run stopped after step 2 is loaded by the next
run without labeling again; one stopped before it labels only what is still pending.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import polars as pl

from llambert.config import ConfigError, Settings
from llambert.predictions_store import load_staged, remove_tree, safe

COMPLETE = "_COMPLETE"
# Ray remote args of the read and write steps: they are I/O and reserve no CPU, so actors that hold every
# CPU (workers x cpus_per_worker = num_cpus) cannot starve them.
IO = {"num_cpus": 0}


def _log(msg: str) -> None:
    from llambert.progress import emit

    emit(f"[llambert ray] {msg}")


class Labeler:
    """A Ray actor's labeling callable: the champion loaded once, then one Arrow block in, predictions out."""

    def __init__(
        self,
        path: str,
        max_length: int,
        batch_size: int,
        truncation: str,
        bf16: bool,
        threads: int,
        batch: str,
        checkpoint_id: str,
        progress_dir: str,
    ) -> None:
        from llambert.student.predict import load_predictor

        self.predictor = load_predictor(path, max_length, batch_size, truncation, bf16=bf16, threads=threads)
        self.batch, self.checkpoint_id = batch, checkpoint_id
        self.progress = Path(progress_dir) / f"{os.getpid()}.json"  # the driver sums these for its progress lines
        self.done = 0
        self._write()  # a started actor is visible even if it never gets a block

    def _write(self) -> None:
        tmp = self.progress.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "done": self.done, "at": time.time()}))
        os.replace(tmp, self.progress)

    def __call__(self, block):
        frame = pl.from_arrow(block).select("doc_id", "text")
        out = self.predictor.predict_frame(frame).with_columns(
            batch=pl.lit(self.batch), checkpoint_id=pl.lit(self.checkpoint_id)
        )
        self.done += out.height
        self._write()
        return out.to_arrow()


def init_ray(settings: Settings) -> None:
    """Join ``inference.ray_address`` or start a local Ray with ``inference.num_cpus`` CPUs."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "setting 'inference.engine' is 'ray' but Ray is not installed: "
            "pip install 'llambert[ray]' (or set inference.engine: local)"
        ) from None
    if ray.is_initialized():
        return
    cfg = settings.inference
    project = str(Path(__file__).resolve().parents[1])
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (project, os.environ.get("PYTHONPATH")) if p)}}
    if cfg.ray_address:
        ray.init(address=cfg.ray_address, runtime_env=env, log_to_driver=False)
    else:
        # One logical CPU more than the cores given: Ray Data's file-listing task asks for a whole CPU and
        # would wait forever behind actors that reserve all of them (it only lists, it computes nothing).
        ray.init(
            num_cpus=(cfg.num_cpus or os.cpu_count()) + 1,
            include_dashboard=False,
            runtime_env=env,
            log_to_driver=False,
            configure_logging=False,
        )
    need = cfg.workers * cfg.cpus_per_worker + 1
    have = ray.cluster_resources().get("CPU", 0)
    if have < need:
        raise ConfigError(
            f"settings 'inference.workers' x 'inference.cpus_per_worker' = {cfg.workers} x {cfg.cpus_per_worker:g} "
            f"CPUs, plus 1 for Ray Data's file listing, is more than the Ray cluster's {have:g} CPUs: the job "
            "would wait forever. Lower inference.workers or inference.cpus_per_worker"
            + (" or raise inference.num_cpus." if not cfg.ray_address else ", or add nodes.")
        )


def staged_runs(settings: Settings, batch: str, checkpoint_id: str) -> list[Path]:
    """This batch's and checkpoint's runs whose Ray output is complete but not loaded yet (oldest first)."""
    root = settings.staging_dir / f"batch={safe(batch)}" / safe(checkpoint_id)
    return sorted((p for p in root.glob("*") if (p / COMPLETE).exists()), key=lambda p: (p / COMPLETE).stat().st_mtime)


def load_run(session, settings: Settings, run: Path, batch: str, checkpoint_id: str) -> int:
    """Load one complete staged run, then remove it (a crash in between loads it again: still exactly once)."""
    files = str(run / "out" / "*.parquet")
    if not list((run / "out").glob("*.parquet")):  # nothing was pending
        remove_tree(run)
        return 0
    t0 = time.perf_counter()
    with session() as c:
        n = load_staged(c, settings, files, batch, checkpoint_id, run.name)
    dt = time.perf_counter() - t0
    _log(
        f"loaded {n:,} staged predictions of run {run.name} into predictions.labels "
        f"({settings.predictions.storage}) in {dt:.1f} s ({n / dt:,.0f} rows/s)"
    )
    remove_tree(run)
    return n


PENDING = (
    "FROM raw.corpus c WHERE c.batch = ? AND NOT EXISTS (SELECT 1 FROM predictions.labels p "
    "WHERE p.doc_id = c.doc_id AND p.checkpoint_id = ?)"
)


def shard_size(pending: int, settings: Settings) -> int:
    """Rows per shard: ``inference.shard_rows`` at most, and small enough for 4 shards per worker.

    A shard is a Ray block, the unit one actor takes (a Parquet file is not split), so fewer shards
    than workers leaves actors idle."""
    per_worker = -(-pending // (4 * settings.inference.workers))
    return max(1, min(settings.inference.shard_rows, per_worker))


def export_pending(session, settings: Settings, batch: str, checkpoint_id: str, folder: Path) -> int:
    """The batch's documents without a prediction from the checkpoint, as Parquet shards (streamed)."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    with session() as c:
        rows = shard_size(c.execute(f"SELECT count(*) {PENDING}", [batch, checkpoint_id]).fetchone()[0], settings)
        reader = c.execute(
            f"SELECT c.doc_id, c.text {PENDING} ORDER BY c.doc_id", [batch, checkpoint_id]
        ).fetch_record_batch(rows)
        buf, i = [], 0
        for rb in reader:
            buf.append(rb)
            held = sum(b.num_rows for b in buf)
            if held >= rows:
                _write_shard(pq, buf, folder / f"shard-{i:06d}.parquet")
                n, buf, i = n + held, [], i + 1
        if buf:
            _write_shard(pq, buf, folder / f"shard-{i:06d}.parquet")
            n += sum(b.num_rows for b in buf)
    return n


def _write_shard(pq, batches, path: Path) -> None:
    import pyarrow as pa

    pq.write_table(pa.Table.from_batches(batches), path)


def read_shards(folder: Path, actor_start_timeout_s: float):
    """The exported shards as a Ray dataset of one block per shard, in a Ray Data context that hands out
    no block before every labeling actor has started."""
    import ray

    ctx = ray.data.DataContext.get_current()
    # A block is the unit one actor takes. Ray Data 2.60's default Parquet reader (datasource V2) packs
    # small files into blocks of up to target_max_block_size (128 MiB) and ignores override_num_blocks: a
    # 20,000-review batch became ONE block, so one actor labeled everything while the others idled. The V1
    # reader keeps one block per shard (shard_size makes at least 4 per worker).
    ctx.use_datasource_v2 = False
    # Without this the first actor up takes blocks while the others are still importing torch; with a fast
    # champion (the linear one labels a 500-row block in milliseconds) it could label the whole batch alone.
    ctx.wait_for_min_actors_s = actor_start_timeout_s
    blocks = len(list(folder.glob("*.parquet")))
    return ray.data.read_parquet(str(folder), ray_remote_args=IO, override_num_blocks=blocks)


def label_with_ray(session, settings: Settings, batch: str, checkpoint_id: str, path: str) -> dict:
    """Label the batch's pending documents on Ray and load them; returns counts and the loader's figures."""
    cfg = settings.inference
    root = settings.staging_dir / f"batch={safe(batch)}" / safe(checkpoint_id)
    for stale in (p for p in root.glob("*") if p.is_dir() and not (p / COMPLETE).exists()):
        _log(f"removing {stale}: a run that stopped before Ray finished (its documents are still pending)")
        remove_tree(stale)
    loaded_before = sum(
        load_run(session, settings, r, batch, checkpoint_id) for r in staged_runs(settings, batch, checkpoint_id)
    )
    run = root / (time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8])
    t0 = time.perf_counter()
    pending = export_pending(session, settings, batch, checkpoint_id, run / "in")
    if not pending:
        remove_tree(run)
        return {"engine": "ray", "predicted_now": 0, "loaded_from_earlier_runs": loaded_before}
    export_s = time.perf_counter() - t0
    init_ray(settings)
    import ray

    st = settings.student
    from llambert.hardware import resolve_bf16

    (run / "progress").mkdir()
    _log(
        f"labeling {pending:,} documents of batch {batch} on Ray: {cfg.workers} actor(s) x "
        f"{cfg.cpus_per_worker:g} CPU"
        + (f" + {cfg.gpus_per_worker:g} GPU" if cfg.gpus_per_worker else "")
        + f", staging {run}"
    )
    t1 = time.perf_counter()
    ds = read_shards(run / "in", cfg.actor_start_timeout_s).map_batches(
        Labeler,
        fn_constructor_kwargs=dict(
            path=str(path),
            max_length=st.infer_max_length,
            batch_size=st.infer_batch_size,
            truncation=st.truncation,
            bf16=resolve_bf16(st.bf16),
            threads=max(1, int(cfg.cpus_per_worker)),
            batch=batch,
            checkpoint_id=checkpoint_id,
            progress_dir=str(run / "progress"),
        ),
        compute=ray.data.ActorPoolStrategy(size=cfg.workers),
        batch_size=cfg.batch_rows,
        batch_format="pyarrow",
        num_cpus=cfg.cpus_per_worker,
        num_gpus=cfg.gpus_per_worker or None,
    )
    import threading

    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(run / "progress", pending, stop), daemon=True)
    watcher.start()
    try:
        ds.write_parquet(str(run / "out"), ray_remote_args=IO)
    except ray.exceptions.GetTimeoutError as e:
        raise ConfigError(
            f"the Ray cluster did not start {cfg.workers} labeling actor(s) of {cfg.cpus_per_worker:g} CPU"
            + (f" + {cfg.gpus_per_worker:g} GPU" if cfg.gpus_per_worker else "")
            + f" within inference.actor_start_timeout_s = {cfg.actor_start_timeout_s:g} s ({e}). Lower "
            "inference.workers or inference.cpus_per_worker, add nodes, or raise the timeout if the "
            "champion is slow to load; the batch's documents are still pending, nothing was lost."
        ) from e
    finally:
        stop.set()
        watcher.join(timeout=5)
    label_s = time.perf_counter() - t1
    started, actors = _actor_counts(run / "progress")
    _log(f"Ray job done in {label_s:.1f} s: {started} actor(s) started, {actors} labeled documents")
    (run / COMPLETE).write_text(json.dumps({"documents": pending, "seconds": label_s}))
    remove_tree(run / "in")
    t2 = time.perf_counter()
    loaded = load_run(session, settings, run, batch, checkpoint_id)
    load_s = time.perf_counter() - t2
    return {
        "engine": "ray",
        "predicted_now": pending,
        "loaded": loaded,
        "loaded_from_earlier_runs": loaded_before,
        "export_s": round(export_s, 2),
        "ray_s": round(label_s, 2),
        "load_s": round(load_s, 3),
        "load_rows_per_s": round(loaded / load_s) if load_s else None,
        "workers": cfg.workers,
        "actors_started": started,
        "actors_used": actors,
    }


def _actor_counts(folder: Path) -> tuple[int, int]:
    """Actor processes started, and those that labeled at least one document (their progress files):
    fewer of the latter than inference.workers means idle workers."""
    started = used = 0
    for f in folder.glob("*.json"):
        try:
            used += json.loads(f.read_text())["done"] > 0
            started += 1
        except (OSError, ValueError, KeyError):
            pass
    return started, used


def _watch(folder: Path, total: int, stop, every: float | None = None) -> None:
    """Progress of the Ray job in the driver's log: the actors' counts summed, every few seconds."""
    from llambert.progress import interval_s

    every = every or interval_s()
    if every <= 0:
        return
    t0 = time.monotonic()
    while not stop.wait(every):
        done = 0
        for f in folder.glob("*.json"):
            try:
                done += json.loads(f.read_text())["done"]
            except (OSError, ValueError, KeyError):
                pass
        rate = done / (time.monotonic() - t0)
        eta = f", ~{(total - done) / rate / 60:.1f} min left" if rate and done < total else ""
        _log(f"{min(done, total):,}/{total:,} documents labeled by the actors ({rate:,.1f} docs/s){eta}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `llambert predict` with inference.engine: ray")
