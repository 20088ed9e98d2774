"""The one place that starts training ranks: in-process, Horovod on Spark, horovodrun, or TorchDistributor.

``train(cfg, task, prepared, models_root, resume=False, spark=None)`` builds a
JSON-safe spec and hands it to the launcher named by ``train.launcher``:

- ``local``: one rank in this process (tests, laptops);
- ``horovod-spark``: ``horovod.spark.run`` starts ``train.num_proc`` Horovod
  ranks (Gloo) inside Spark tasks on the executors, so ranks land where the
  cluster has room; needs a SparkSession with at least ``num_proc`` task slots;
- ``horovodrun``: ``horovodrun --gloo -np N`` on this host (or the hosts in
  ``HOROVOD_HOSTS``, e.g. ``host1:2,host2:2``);
- ``torch-distributor``: PySpark's ``TorchDistributor`` (torch.distributed
  over Gloo with DistributedDataParallel) on the executors.

Every rank runs :func:`ytspark.train.worker.run` on its Petastorm shard; the
result of rank 0 (the published model directory and per-epoch history) is
returned. A rank that dies makes the launcher raise :class:`TrainingFailed`
naming the backend and what to do; ``resume=True`` continues from the last
epoch checkpoint.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

from ytspark import storage
from ytspark.config import Config
from ytspark.train import worker

log = logging.getLogger(__name__)

LAUNCHERS = ("local", "horovod-spark", "horovodrun", "torch-distributor")


class TrainingFailed(RuntimeError):
    """A training rank failed; the message names the launcher and how to resume."""


def run_spec(cfg: Config, task: str, prepared: str, models_root: str, resume: bool = False,
             candidate_model: str | None = None, rank_rows: str | None = None, encoder: str | None = None) -> dict:
    """The JSON-safe description of one training run that every rank receives.

    ``encoder`` (candidate only): bag | sequence, default ``candidate.encoder``.
    """
    section = cfg.candidate if task == "candidate" else getattr(cfg, "ranker")
    t = cfg.train
    encoder = encoder or (cfg.candidate.encoder if task == "candidate" else None)
    batch = cfg.candidate.seq_batch_size if encoder == "sequence" else section.batch_size
    # ranks run in other working directories, on other hosts: local paths become absolute here, on the driver
    models_root = storage.to_url(models_root)
    return {
        "task": task, "config": cfg.to_dict(), "prepared": prepared, "candidate_model": candidate_model,
        "rank_rows": rank_rows, "encoder": encoder,
        "run": {"work_dir": storage.join(models_root, task, "_work"), "models_root": models_root,
                "batch_size": batch, "epochs": section.epochs,
                "lr": cfg.candidate.seq_lr if encoder == "sequence" else section.lr,
                "weight_decay": section.weight_decay, "patience": t.patience, "shuffle_buffer": t.shuffle_buffer,
                "reader_workers": t.reader_workers, "threads": t.threads_per_proc, "seed": t.seed,
                "resume": resume, "progress": t.progress, "max_steps_per_epoch": t.steps_per_epoch},
    }


def _fail(launcher: str, task: str, err: BaseException | str) -> TrainingFailed:
    return TrainingFailed(f"training '{task}' with launcher '{launcher}' failed: {err}. The last finished epoch "
                          f"is checkpointed; rerun with --resume to continue from it")


def train(cfg: Config, task: str, prepared: str, models_root: str, resume: bool = False, spark=None,
          candidate_model: str | None = None, rank_rows: str | None = None) -> dict:
    """Train ``task`` (candidate | ranker) on ``prepared``; returns rank 0's FitResult dict.

    With ``candidate.encoder = auto`` both encoders are trained and the better one on validation is
    published (:func:`ytspark.train.choose.train_auto`).
    """
    if task == "candidate" and cfg.candidate.encoder == "auto":
        from ytspark.train.choose import train_auto

        return train_auto(cfg, models_root, lambda encoder, root: _train_one(
            cfg, task, prepared, root, resume, spark, candidate_model, rank_rows, encoder))
    return _train_one(cfg, task, prepared, models_root, resume, spark, candidate_model, rank_rows)


def _train_one(cfg: Config, task: str, prepared: str, models_root: str, resume: bool = False, spark=None,
               candidate_model: str | None = None, rank_rows: str | None = None,
               encoder: str | None = None) -> dict:
    launcher, n = cfg.train.launcher, cfg.train.num_proc
    if launcher not in LAUNCHERS:
        raise ValueError(f"train.launcher must be one of {LAUNCHERS}, got '{launcher}'")
    if n < 1:
        raise ValueError(f"train.num_proc must be >= 1, got {n}")
    spec = run_spec(cfg, task, prepared, models_root, resume, candidate_model, rank_rows, encoder)
    log.info("training %s with launcher=%s, %d rank(s)", task, launcher, 1 if launcher == "local" else n)
    if launcher == "local":
        return worker.run(spec)
    if launcher == "horovodrun":
        return _horovodrun(spec, n, task)
    if spark is None:
        raise ValueError(f"train.launcher={launcher} needs a SparkSession")
    if launcher == "horovod-spark":
        import horovod.spark

        try:
            results = horovod.spark.run(worker.run_horovod, args=(spec,), num_proc=n, use_gloo=True,
                                        env=_worker_env(), stdout=sys.stdout, stderr=sys.stderr)
        except Exception as e:  # a dead rank surfaces here as a Spark/Horovod error
            raise _fail(launcher, task, e) from e
        return next(r for r in results if r.get("model_dir"))
    from pyspark.ml.torch.distributor import TorchDistributor

    master = spark.sparkContext.master
    try:
        result = TorchDistributor(num_processes=n, local_mode=False, use_gpu=False).run(worker.run_torch, spec)
    except Exception as e:
        raise _fail(launcher, task, e) from e
    if not result or not result.get("model_dir"):
        raise _fail(launcher, task, f"rank 0 returned no model directory (master {master})")
    return result


def _worker_env() -> dict:
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    return env


def _horovodrun(spec: dict, n: int, task: str) -> dict:
    """Spec and result travel through the models root (storage), so ranks on other hosts read and write them."""
    hosts = os.environ.get("HOROVOD_HOSTS", f"localhost:{n}")
    launch = storage.join(spec["run"]["models_root"], task, f"_launch-{uuid.uuid4().hex[:8]}")
    try:
        spec = {**spec, "result_path": storage.join(launch, "result.json")}
        spec_path = storage.join(launch, "spec.json")
        storage.save_json(spec_path, spec)
        exe = Path(sys.executable).with_name("horovodrun")
        cmd = [str(exe) if exe.exists() else "horovodrun", "--gloo", "-np", str(n), "-H", hosts,
               sys.executable, "-m", "ytspark.train.worker", spec_path]
        log.info("launching: %s", " ".join(cmd))
        proc = subprocess.run(cmd, env=_worker_env())
        if proc.returncode != 0:
            raise _fail("horovodrun", task, f"exit code {proc.returncode}")
        return storage.load_json(spec["result_path"])
    finally:
        storage.remove(launch)
