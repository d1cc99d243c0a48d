"""Fine-tuning an encoder on (LLM or gold) labels: bf16 autocast, length-grouped batches,
a held-out validation split and best-epoch selection. A plain loop instead of the Trainer:
it imports in a fraction of the time and keeps every step visible.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from llambert.config import StudentConfig
from llambert.hardware import resolve_bf16
from llambert.metrics import classification_metrics
from llambert.progress import progress
from llambert.student.encoding import encode, length_grouped_batches, pad_batch, sorted_batches


@dataclass
class Phase:
    """One stretch of training on one label source (the 'combined' recipe has two)."""

    name: str
    texts: list[str]
    labels: list[int]
    doc_ids: list[str] = field(default_factory=list)
    # Teacher distribution per example over the task's label ids (None: a hard label), and a loss weight.
    probs: list[dict[int, float] | None] | None = None
    weights: list[float] | None = None

    def subset(self, idx: list[int], name: str | None = None) -> Phase:
        pick = lambda xs: [xs[i] for i in idx] if xs else xs  # noqa: E731
        return Phase(
            name or self.name,
            pick(self.texts),
            pick(self.labels),
            pick(self.doc_ids),
            pick(self.probs),
            pick(self.weights),
        )


@dataclass
class TrainResult:
    path: Path
    n_train: int
    n_val: int
    best_epoch: int
    metrics: dict
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    train_examples_per_s: float = 0.0


def load_classifier(base_path: str, label_names: list[str], label_ids: list[int]):
    """Tokenizer + a sequence classifier (a fresh head on a base model; a fine-tuned llambert checkpoint, which
    self-distillation may continue, keeps its own); attention dropout off (see below)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_path)
    config = AutoConfig.from_pretrained(base_path)
    config.num_labels = len(label_names)
    config.id2label = {i: n for i, n in enumerate(label_names)}
    config.label2id = {n: i for i, n in enumerate(label_names)}
    config.llambert_label_ids = list(label_ids)
    # Attention dropout keeps PyTorch off its fused attention kernel on CPU: 2x slower training
    # for the same accuracy (measured on MiniLM-L6, see shared notes).
    if hasattr(config, "attention_probs_dropout_prob"):
        config.attention_probs_dropout_prob = 0.0
    model = AutoModelForSequenceClassification.from_pretrained(base_path, config=config)
    return tok, model


def split_validation(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    n_val = int(round(n * fraction)) if n >= 10 else 0
    return idx[n_val:], idx[:n_val]


def train_student(
    base_path: str,
    label_names: list[str],
    label_ids: list[int],
    phases: list[Phase],
    cfg: StudentConfig,
    out_dir: Path,
    val: Phase | None = None,
    model_card: dict | None = None,
    threads: int | None = None,
) -> TrainResult:
    """Train through ``phases`` in order; keep the epoch with the best validation metric.

    Labels are task label ids; internally they become 0..n-1 indexes. Without an explicit
    ``val`` phase, ``cfg.val_fraction`` of the last phase is held out: the labels the final model
    is meant to fit (gold, for the combined recipe).
    """
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    to_index = {lid: i for i, lid in enumerate(label_ids)}
    tok, model = load_classifier(base_path, label_names, label_ids)

    phases = [p for p in phases if p.texts]
    if not phases:
        raise ValueError("no training examples: the label source is empty (see labeling.parsed_labels)")
    if val is None:
        last = phases[-1]
        tr, va = split_validation(len(last.texts), cfg.val_fraction, cfg.seed)
        val = last.subset(va, "val")
        phases[-1] = last.subset(tr)
    val_ids = encode(tok, val.texts, cfg.max_length, cfg.truncation) if val.texts else []
    val_y = [to_index[y] for y in val.labels]

    t_start = time.perf_counter()
    history: list[dict] = []
    best_state, best_score, best_epoch = None, -math.inf, 0
    seen = 0
    train_seconds = 0.0
    epoch_no = 0
    for phase in phases:
        ids = encode(tok, phase.texts, cfg.max_length, cfg.truncation)
        ys = [to_index[y] for y in phase.labels]
        targets = soft_targets(phase, to_index, cfg)
        weights = example_weights(phase, ys, len(label_ids), cfg)
        steps_per_epoch = math.ceil(len(ids) / (cfg.batch_size * cfg.grad_accum))
        n_epochs = epochs_for(steps_per_epoch, cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        total = steps_per_epoch * n_epochs
        warm = int(total * cfg.warmup_ratio)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm))
        )
        stale, steps_done = 0, 0
        for _ in range(n_epochs):
            # Early stopping only once the small-set minimum of steps is done: a model still predicting the
            # majority class has a flat validation F1 in its first epochs, and stopping there keeps it collapsed.
            if (
                cfg.early_stopping_patience
                and stale >= cfg.early_stopping_patience
                and steps_done >= cfg.min_train_steps
            ):
                break
            steps_done += steps_per_epoch
            epoch_no += 1
            model.train()
            t0 = time.perf_counter()
            losses = []
            batches = length_grouped_batches([len(x) for x in ids], cfg.batch_size, rng)
            with progress(len(ids), f"train {phase.name} epoch {epoch_no}", "ex") as bar:
                for bi, batch in enumerate(batches):
                    enc = pad_batch([ids[i] for i in batch], tok.pad_token_id or 0)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=resolve_bf16(cfg.bf16)):
                        logits = model(**enc).logits
                    logp = torch.log_softmax(logits.float(), dim=-1)
                    per_example = -(targets[batch] * logp).sum(-1)  # cross-entropy to a (soft or one-hot) target
                    w = weights[batch]
                    loss = (per_example * w).sum() / w.sum() / cfg.grad_accum
                    loss.backward()
                    if (bi + 1) % cfg.grad_accum == 0 or bi == len(batches) - 1:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                        opt.step()
                        sched.step()
                        opt.zero_grad(set_to_none=True)
                    losses.append(loss.item() * cfg.grad_accum)
                    bar.update(len(batch))
            epoch_s = time.perf_counter() - t0
            train_seconds += epoch_s
            seen += len(ids)
            row = {
                "epoch": epoch_no,
                "phase": phase.name,
                "train_loss": sum(losses) / max(1, len(losses)),
                "seconds": epoch_s,
            }
            if val_ids:
                preds, _, vloss = _predict_ids(model, tok, val_ids, cfg, val_y)
                m = classification_metrics(val_y, preds, list(range(len(label_ids))))
                row |= {"val_loss": vloss, "val_accuracy": m["accuracy"], "val_f1": m["macro_f1"]}
                # Macro-F1 picks the epoch: accuracy rewards predicting the majority class of a skewed set.
                score = row["val_f1"]
            else:
                score = -row["train_loss"]
            history.append(row)
            if score > best_score:
                best_score, best_epoch, stale = score, epoch_no, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
    if best_state is not None:
        model.load_state_dict(best_state)
    best = next(r for r in history if r["epoch"] == best_epoch)
    metrics = {k: v for k, v in best.items() if k.startswith("val_")} | {"best_epoch": best_epoch}
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    n_train = sum(len(p.texts) for p in phases)
    _write_model_card(out_dir, model_card or {}, cfg, metrics, history, n_train, len(val.texts))
    return TrainResult(
        path=out_dir,
        n_train=n_train,
        n_val=len(val.texts),
        best_epoch=best_epoch,
        metrics=metrics,
        history=history,
        seconds=time.perf_counter() - t_start,
        train_examples_per_s=seen / train_seconds if train_seconds else 0.0,
    )


def soft_targets(phase: Phase, to_index: dict[int, int], cfg: StudentConfig) -> torch.Tensor:
    """n x k training targets: one-hot labels, or (soft_labels) the teacher's distribution p^(1/T) renormalised."""
    k = len(to_index)
    out = torch.zeros(len(phase.labels), k)
    for i, y in enumerate(phase.labels):
        p = phase.probs[i] if (cfg.soft_labels and phase.probs) else None
        if p:
            v = torch.tensor([max(float(p.get(lid, 0.0)), 0.0) for lid in to_index], dtype=torch.float64)
            if v.sum() > 0:
                v = v.clamp_min(1e-12) ** (1.0 / cfg.distill_temperature)
                out[i] = (v / v.sum()).float()
                continue
        out[i, to_index[y]] = 1.0
    return out


def example_weights(phase: Phase, ys: list[int], k: int, cfg: StudentConfig) -> torch.Tensor:
    """Per-example loss weights: balanced classes (each class the same total weight) x teacher confidence."""
    w = torch.tensor(phase.weights if phase.weights else [1.0] * len(ys), dtype=torch.float32)
    if cfg.confidence == "weight" and phase.probs:
        conf = [max(p.values()) / max(sum(p.values()), 1e-12) if p else 1.0 for p in phase.probs]
        w = w * torch.tensor(conf, dtype=torch.float32)
    if cfg.class_weight == "balanced" and ys:
        counts = torch.bincount(torch.tensor(ys), minlength=k).float()
        present = counts > 0
        cw = torch.zeros(k)
        cw[present] = counts.sum() / (present.sum() * counts[present])
        w = w * cw[torch.tensor(ys)]
    return w


def epochs_for(steps_per_epoch: int, cfg: StudentConfig) -> int:
    """``epochs``, raised so that small label sets get at least ``min_train_steps`` steps (at most max_epochs)."""
    need = math.ceil(cfg.min_train_steps / max(1, steps_per_epoch)) if cfg.min_train_steps else 0
    return max(cfg.epochs, min(cfg.max_epochs, need))


def append_to_model_card(out_dir: Path, rows: dict) -> None:
    """Add rows to the card's field table (e.g. the gold-probe score measured after saving)."""
    card = out_dir / "README.md"
    lines = card.read_text().split("\n")
    at = lines.index("## Training configuration") - 1
    lines[at:at] = [f"| {k} | {v} |" for k, v in rows.items()]
    card.write_text("\n".join(lines))


def _predict_ids(model, tok, ids: list[list[int]], cfg: StudentConfig, y: list[int] | None = None):
    """Predicted indexes, max probabilities and (if y) the mean loss, in input order."""
    model.eval()
    preds = [0] * len(ids)
    probs = [0.0] * len(ids)
    loss_sum = 0.0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=resolve_bf16(cfg.bf16)):
        for batch in sorted_batches([len(x) for x in ids], cfg.infer_batch_size):
            logits = model(**pad_batch([ids[i] for i in batch], tok.pad_token_id or 0)).logits.float()
            p = logits.softmax(-1)
            top = p.max(-1)
            for j, i in enumerate(batch):
                preds[i] = int(top.indices[j])
                probs[i] = float(top.values[j])
            if y is not None:
                loss_sum += float(
                    torch.nn.functional.cross_entropy(logits, torch.tensor([y[i] for i in batch]), reduction="sum")
                )
    model.train()
    return preds, probs, loss_sum / max(1, len(ids))


def _write_model_card(
    out_dir: Path, card: dict, cfg: StudentConfig, metrics: dict, history: list[dict], n_train: int, n_val: int
) -> None:
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "tags: [llambert]",
        "---",
        f"# {card.get('title', 'llambert student')}",
        "",
        "Fine-tuned by llambert (LlamBERT: an LLM labels a sample, this encoder labels the rest).",
        "",
        "| field | value |",
        "|---|---|",
    ]
    for k, v in card.items():
        if k != "title":
            lines.append(f"| {k} | {v} |")
    lines += [f"| training examples | {n_train} |", f"| validation examples | {n_val} |"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    lines += ["", "## Training configuration", "", "```json", json.dumps(cfg.model_dump(), indent=2), "```", ""]
    lines += [
        "## Epochs",
        "",
        "| epoch | phase | train loss | val loss | val accuracy | val F1 | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in history:
        lines.append(
            f"| {r['epoch']} | {r['phase']} | {r['train_loss']:.4f} | {r.get('val_loss', float('nan')):.4f} | "
            f"{r.get('val_accuracy', float('nan')):.4f} | {r.get('val_f1', float('nan')):.4f} | {r['seconds']:.1f} |"
        )
    lines += [
        "",
        "```python",
        "from transformers import pipeline",
        f"clf = pipeline('text-classification', model='{out_dir}')",
        "```",
        "",
    ]
    (out_dir / "README.md").write_text("\n".join(lines))
    (out_dir / "llambert_training.json").write_text(
        json.dumps({"card": card, "metrics": metrics, "history": history}, indent=2, default=str)
    )
