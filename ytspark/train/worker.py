"""What runs on each training rank: rebuild the task from a plain-dict spec and call the loop.

A spec is JSON-safe so that every launcher can ship it: ``{"task": "candidate",
"config": Config.to_dict(), "prepared": ..., "run": RunSpec fields}``.
``python -m ytspark.train.worker SPEC.json`` is the entry point ``horovodrun``
starts on each rank (``SPEC.json`` a local path or URL); rank 0 writes its result next to the spec.
"""
from __future__ import annotations

import logging
import sys

from ytspark import storage
from ytspark.config import config_from_dict
from ytspark.train.dist import Dist


def build_task(spec: dict):
    cfg = config_from_dict(spec["config"])
    if spec["task"] == "candidate":
        from ytspark.train.candidate_task import CandidateTask

        encoder = spec.get("encoder") or cfg.candidate.encoder
        if encoder == "sequence":
            from ytspark.train.sequence_task import SequenceTask

            return SequenceTask(cfg, spec["prepared"])
        if encoder != "bag":
            raise ValueError(f"candidate.encoder '{encoder}' is trained as bag and sequence runs "
                             "(ytspark.train.launcher.train); a rank builds one of them")
        return CandidateTask(cfg, spec["prepared"])
    if spec["task"] == "ranker":
        from ytspark.train.ranker_task import RankerTask

        return RankerTask(cfg, spec["prepared"], spec.get("candidate_model"), spec.get("rank_rows"))
    raise ValueError(f"unknown training task '{spec['task']}' (candidate | ranker)")


def run(spec: dict, dist: Dist | None = None) -> dict:
    """Train on this rank; returns the :class:`~ytspark.train.loop.FitResult` as a dict."""
    from ytspark.train.loop import RunSpec, fit

    dist = dist or Dist()
    if dist.rank != 0:
        logging.getLogger("ytspark").setLevel(logging.WARNING)
    return fit(build_task(spec), RunSpec(**spec["run"]), dist).to_dict()


def run_horovod(spec: dict) -> dict:
    """Entry point on a Horovod rank (``horovod.spark.run`` or ``horovodrun``)."""
    from ytspark.train.dist import HorovodDist

    _logging()
    return run(spec, HorovodDist())


def run_torch(spec: dict) -> dict:
    """Entry point on a torch.distributed rank (PySpark ``TorchDistributor``)."""
    from ytspark.train.dist import TorchDist

    _logging()
    return run(spec, TorchDist())


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = storage.load_json(argv[0])
    result = run_horovod(spec)
    if result.get("model_dir"):
        storage.save_json(spec["result_path"], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
