"""The one training loop both networks use; the launcher runs it once per rank.

``fit(task, spec, dist)``:

1. rank 0 builds the model and, with ``spec.resume``, loads the last
   checkpoint of ``spec.work_dir``; the state is broadcast to every rank;
2. each epoch every rank runs exactly ``steps_per_epoch`` steps on its own
   Petastorm shard (:class:`~ytspark.train.data.ShardBatches`); the optimizer
   averages gradients across ranks (the learning rate is scaled by size);
3. after each epoch rank 0 evaluates on the validation split, appends the
   epoch's metrics to ``metrics.jsonl``/``metrics.csv``, writes a checkpoint
   (atomically) and decides early stopping, which is broadcast;
4. rank 0 exports the best epoch's weights as a versioned model directory.

Only rank 0 logs, checkpoints and exports. A process killed at any point
resumes with ``resume=True`` from the last completed epoch and ends at the
same step count as an uninterrupted run. ``YTSPARK_FAULT_STEP=N`` (and
``YTSPARK_FAULT_RANK``, default 0) kill that rank with exit code 137 at
global step N: the fault-injection hook of the reliability tests.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch
from torch import nn

from ytspark import storage
from ytspark.models.export import write_model_dir
from ytspark.rows import read_split
from ytspark.train.data import ShardBatches, steps_per_epoch
from ytspark.train.dist import Dist

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
STATE = "checkpoint.json"
BEST = "best.pt"


class Task(Protocol):
    """What the loop needs from a network (candidate generation, ranking)."""

    kind: str  # model kind in the export: candidate | ranker
    fields: list[str]  # Parquet columns to read (training split)
    # optional val_fields: list[str], the validation split's columns when they differ (default: fields)
    monitor: str  # validation metric for early stopping (higher is better)

    def train_rows(self) -> int: ...
    def train_path(self) -> str: ...
    def val_path(self) -> str: ...
    def fingerprint(self) -> dict: ...
    def build_model(self) -> nn.Module: ...
    def loss_module(self, model: nn.Module, rank: int) -> nn.Module: ...
    def to_batch(self, cols: dict): ...
    def evaluate(self, model: nn.Module, val_cols: dict) -> dict: ...
    def export(self, model: nn.Module) -> tuple[dict, dict, dict]: ...


@dataclass
class RunSpec:
    """Optimisation and bookkeeping settings of one training run."""

    work_dir: str  # checkpoints and per-epoch metrics (fixed per model kind, so --resume finds them)
    models_root: str  # where the model directory is published
    batch_size: int = 512
    epochs: int = 10
    lr: float = 0.002
    weight_decay: float = 0.0
    patience: int = 3
    shuffle_buffer: int = 20000
    reader_workers: int = 2
    threads: int = 0
    seed: int = 11
    resume: bool = False
    progress: bool = True
    max_steps_per_epoch: int = 0  # 0 = one pass over the training rows


@dataclass
class FitResult:
    model_dir: str | None
    epochs_run: int
    global_step: int
    best_epoch: int
    best: dict
    history: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _atomic_save(obj, path: str) -> None:
    storage.save_torch(path, obj)  # atomic per file on every filesystem


def _atomic_json(obj, path: str) -> None:
    storage.save_json(path, obj)


def _jsonable(obj):
    """``obj`` as it reads back from JSON (tuples become lists), for comparing with saved state."""
    return json.loads(json.dumps(obj, sort_keys=True, default=float))


def _write_metrics(work: str, history: list[dict]) -> None:
    _atomic_json(history, storage.join(work, "metrics.json"))
    keys = sorted({k for h in history for k in h})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    storage.save_text(storage.join(work, "metrics.csv"), buf.getvalue())


def _fault(global_step: int, rank: int) -> None:
    at = os.environ.get("YTSPARK_FAULT_STEP")
    if at and int(at) == global_step and rank == int(os.environ.get("YTSPARK_FAULT_RANK", "0")):
        log.error("fault injection: rank %d exits at global step %d", rank, global_step)
        os._exit(137)


def _progress(total: int, enabled: bool, desc: str):
    """A tqdm bar on rank 0 when stderr is a terminal (log files get the per-epoch log line instead)."""
    import sys

    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the lock file
        return None
    return tqdm(total=total, desc=desc, unit="step", leave=False, mininterval=2.0)


def fit(task: Task, spec: RunSpec, dist: Dist | None = None) -> FitResult:
    """Train ``task`` on every rank of ``dist``; rank 0 returns the published model directory."""
    dist = dist or Dist()
    rank, size = dist.rank, dist.size
    torch.set_num_threads(spec.threads or max(1, (os.cpu_count() or 1) // size))
    torch.manual_seed(spec.seed)
    work = spec.work_dir  # a local path or URL (storage): ranks share no disk with the driver
    if rank == 0 and not spec.resume:
        storage.remove(work)

    model = task.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr * size, weight_decay=spec.weight_decay)
    state = {"epoch": 0, "global_step": 0, "history": [], "best": None, "best_epoch": -1, "bad_epochs": 0}
    if rank == 0 and spec.resume and storage.path_exists(storage.join(work, CHECKPOINT)):
        saved = storage.load_json(storage.join(work, STATE))
        if saved.get("fingerprint") != _jsonable(task.fingerprint()):
            raise ValueError(f"--resume: the checkpoint in {work} was made for other data or another model "
                             f"({saved.get('fingerprint')} vs {task.fingerprint()}); rerun without --resume")
        ck = storage.load_torch(storage.join(work, CHECKPOINT))
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = {k: saved[k] for k in state}
        log.info("resuming %s from %s: epoch %d, global step %d", task.kind, work, state["epoch"],
                 state["global_step"])
    elif spec.resume and rank == 0:
        log.warning("--resume: no checkpoint in %s, starting from scratch", work)
    state = dist.broadcast_object(state, name="train_state")
    dist.broadcast_state(model, opt)
    opt = dist.optimizer(opt, model)
    loss_mod = dist.wrap(task.loss_module(model, rank))
    resumed_from = state["epoch"]

    steps = steps_per_epoch(task.train_rows(), spec.batch_size, size)
    if spec.max_steps_per_epoch:
        steps = min(steps, spec.max_steps_per_epoch)
    val_cols = read_split(task.val_path(), getattr(task, "val_fields", task.fields)) if rank == 0 else None
    if rank == 0:
        log.info("%s: %d rows, %d rank(s) x %d steps/epoch x batch %d, lr %.4g, up to %d epochs",
                 task.kind, task.train_rows(), size, steps, spec.batch_size, spec.lr * size, spec.epochs)

    best_state = None
    if rank == 0 and state["best_epoch"] >= 0 and storage.path_exists(storage.join(work, BEST)):
        best_state = storage.load_torch(storage.join(work, BEST))
    stop = state["epoch"] >= spec.epochs
    with ShardBatches(task.train_path(), task.fields, rank=rank, size=size, batch_size=spec.batch_size,
                      shuffle_buffer=spec.shuffle_buffer, seed=spec.seed + 7919 * state["epoch"] + rank,
                      workers=spec.reader_workers) as batches:
        while not stop:
            epoch = state["epoch"]
            model.train()
            bar = _progress(steps, spec.progress and rank == 0, f"{task.kind} epoch {epoch + 1}/{spec.epochs}")
            t0, total = time.time(), 0.0
            for i in range(steps):
                batch = task.to_batch(next(batches))
                loss = loss_mod(batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
                state["global_step"] += 1
                _fault(state["global_step"], rank)
                lv = float(loss.detach())
                if not math.isfinite(lv):
                    raise FloatingPointError(f"{task.kind}: loss is {lv} at epoch {epoch + 1} step {i + 1}; "
                                             "lower the learning rate (--set <section>.lr=...)")
                total += lv
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{lv:.4f}", ex_s=f"{(i + 1) * spec.batch_size * size / (time.time() - t0):.0f}")
            if bar is not None:
                bar.close()
            seconds = time.time() - t0
            train_loss = dist.mean(total / steps, name=f"loss{epoch}")
            state["epoch"] = epoch + 1
            if rank == 0:
                model.eval()
                with torch.no_grad():
                    metrics = task.evaluate(model, val_cols)
                row = {"epoch": epoch + 1, "global_step": state["global_step"], "train_loss": train_loss,
                       "seconds": round(seconds, 3),
                       "examples_per_s": round(steps * spec.batch_size * size / max(seconds, 1e-9), 1),
                       **{f"val_{k}": v for k, v in metrics.items()}}
                state["history"].append(row)
                score = metrics[task.monitor]
                if state["best"] is None or score > state["best"][task.monitor]:
                    state["best"], state["best_epoch"], state["bad_epochs"] = metrics, epoch + 1, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    _atomic_save(best_state, storage.join(work, BEST))
                else:
                    state["bad_epochs"] += 1
                inner = getattr(opt, "_opt", opt)
                _atomic_save({"model": model.state_dict(), "opt": inner.state_dict()},
                             storage.join(work, CHECKPOINT))
                _atomic_json({**state, "fingerprint": task.fingerprint()}, storage.join(work, STATE))
                _write_metrics(work, state["history"])
                log.info("%s epoch %d/%d: loss %.4f, val %s=%.4f (best %.4f @ %d), %.0f ex/s", task.kind,
                         epoch + 1, spec.epochs, train_loss, task.monitor, score, state["best"][task.monitor],
                         state["best_epoch"], row["examples_per_s"])
                stop_now = state["epoch"] >= spec.epochs or state["bad_epochs"] >= spec.patience
            else:
                stop_now = None
            stop = dist.broadcast_object(stop_now, name=f"stop{epoch}")

    model_dir = None
    if rank == 0:
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        arrays, json_files, meta = task.export(model)
        json_files = {**json_files, "metrics.json": {"history": state["history"], "best": state["best"],
                                                     "best_epoch": state["best_epoch"],
                                                     "global_step": state["global_step"],
                                                     "ranks": size, "backend": dist.name}}
        model_dir = str(write_model_dir(spec.models_root, task.kind, state_dict=model.state_dict(), meta=meta,
                                        arrays=arrays, json_files=json_files))
        log.info("%s model -> %s (best epoch %d: %s)", task.kind, model_dir, state["best_epoch"], state["best"])
    return FitResult(model_dir=model_dir, epochs_run=state["epoch"], global_step=state["global_step"],
                     best_epoch=state["best_epoch"], best=state["best"] or {}, history=state["history"],
                     resumed_from_epoch=resumed_from)
