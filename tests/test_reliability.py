"""Faults: a Horovod rank dying mid-epoch, a stage killed while publishing, '..' in paths, pickled payloads.

- A rank killed (exit 137, the loop's ``YTSPARK_FAULT_STEP`` hook) under
  ``horovodrun``: the launcher raises TrainingFailed naming itself and
  ``--resume``; the resumed run ends at the same global step as an
  uninterrupted one.
- ``storage.atomic_dir``: a Spark write killed half-way (``os._exit`` in a
  subprocess) leaves the published directory as it was; a failing body
  removes its temporary directory; a model export killed half-way leaves
  ``LATEST`` on the previous model.
- ``storage.resolve``: ``..`` and symlinks cannot leave ``data.root``.
- Model loading never unpickles: a ``weights.pt`` or ``.npy`` holding an
  object is refused and its payload never runs.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_config, write_known_answer_prepared

from ytspark.models.export import read_model_dir, write_model_dir
from ytspark.storage import TMP_MARK, atomic_dir, resolve
from ytspark.train.data import steps_per_epoch
from ytspark.train.launcher import TrainingFailed, train

SMALL = ("candidate.hidden=[64]", "candidate.embed_dim=16", "candidate.batch_size=64", "candidate.lr=0.01",
         "candidate.recency=\"last_k\"", "candidate.recent_k=2", "train.progress=false", "train.shuffle_buffer=512",
         "train.reader_workers=1", "train.patience=10")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> str:
    return write_known_answer_prepared(tmp_path_factory.mktemp("known") / "prepared")


# ------------------------------------------------------------------ a Horovod rank dies mid-epoch


@pytest.mark.horovod
@pytest.mark.slow
def test_horovodrun_rank_killed_mid_epoch_is_reported_and_resume_reaches_the_same_step(prepared, tmp_path,
                                                                                         monkeypatch):
    if not Path(sys.executable).with_name("horovodrun").exists():
        pytest.skip("horovodrun is not installed (make env builds Horovod)")
    cfg = make_config(*SMALL, "candidate.epochs=3", "train.launcher=\"horovodrun\"", "train.num_proc=2",
                      "train.threads_per_proc=1")
    steps = steps_per_epoch(3200, 64, 2)
    whole = train(cfg, "candidate", prepared, str(tmp_path / "whole"))
    assert whole["global_step"] == 3 * steps

    models = tmp_path / "killed"
    monkeypatch.setenv("YTSPARK_FAULT_STEP", str(steps + 7))  # rank 1 exits 137 mid-way through epoch 2
    monkeypatch.setenv("YTSPARK_FAULT_RANK", "1")
    with pytest.raises(TrainingFailed, match=r"launcher 'horovodrun'.*--resume"):
        train(cfg, "candidate", prepared, str(models))
    monkeypatch.delenv("YTSPARK_FAULT_STEP")
    monkeypatch.delenv("YTSPARK_FAULT_RANK")
    work = models / "candidate" / "_work"
    assert json.loads((work / "checkpoint.json").read_text())["epoch"] == 1
    assert not (models / "candidate" / "LATEST").exists()  # nothing exported from the failed run

    resumed = train(cfg, "candidate", prepared, str(models), resume=True)
    assert resumed["resumed_from_epoch"] == 1
    assert resumed["global_step"] == whole["global_step"]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    md = read_model_dir(resumed["model_dir"], "candidate")
    assert md.json("metrics.json")["ranks"] == 2 and md.json("metrics.json")["global_step"] == 3 * steps


# ------------------------------------------------------------------ atomic publish


KILLED_WRITER = """
import os, sys
from pyspark.sql import SparkSession
from ytspark.storage import atomic_dir
spark = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
with atomic_dir(spark, sys.argv[1]) as tmp:
    spark.range(1000).write.parquet(tmp + "/part")   # half of the output is written ...
    os._exit(137)                                     # ... and the stage is killed
"""


@pytest.mark.spark
@pytest.mark.slow
def test_stage_killed_while_writing_leaves_the_published_directory_intact(spark, tmp_path):
    final = str(tmp_path / "table")
    with atomic_dir(spark, final) as tmp:
        spark.range(10).write.parquet(tmp + "/part")
    r = subprocess.run([sys.executable, "-c", KILLED_WRITER, final], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert r.returncode == 137, r.stderr[-2000:]
    leftovers = [p.name for p in tmp_path.iterdir() if TMP_MARK in p.name]
    assert len(leftovers) == 1  # the killed run's temporary directory: readers never look at it
    assert sorted(x.id for x in spark.read.parquet(final + "/part").collect()) == list(range(10))

    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(spark, final) as tmp:
            spark.range(5).write.parquet(tmp + "/part")
            raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir() if TMP_MARK in p.name] == leftovers  # a failure cleans up
    assert spark.read.parquet(final + "/part").count() == 10

    with atomic_dir(spark, final) as tmp:  # a rerun replaces the whole directory
        spark.range(3).write.parquet(tmp + "/part")
    assert spark.read.parquet(final + "/part").count() == 3


# ------------------------------------------------------------------ paths under data.root


def test_paths_cannot_escape_the_configured_root(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    assert resolve(str(root), "a/../b") == str(root / "b")
    for bad in ("..", "../x", "a/../../x", str(tmp_path / "elsewhere")):
        with pytest.raises(ValueError, match="escapes the configured data.root"):
            resolve(str(root), bad)
    os.symlink(tmp_path, root / "link")
    with pytest.raises(ValueError, match="escapes"):
        resolve(str(root), "link/outside")
    from ytspark.pipeline import paths

    with pytest.raises(ValueError, match="escapes the configured data.root"):
        paths(make_config(f'data.root="{root}"', 'data.output="../out"'))
    assert paths(make_config(f'data.root="{root}"', 'data.output="out"'))["prepared"] == f"{root}/out/prepared"


# ------------------------------------------------------------------ loading never unpickles


class _Payload:
    marker = ""

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_model_loading_refuses_pickled_objects(tmp_path):
    d = Path(write_model_dir(tmp_path / "models", "candidate", state_dict={"w": torch.ones(2)}, meta={},
                             arrays={"video_embeddings": np.zeros((3, 2), np.float32)}))
    md = read_model_dir(d, "candidate")
    assert torch.equal(md.state_dict()["w"], torch.ones(2))
    marker = tmp_path / "ran"
    payload = _Payload()
    payload.marker = str(marker)
    torch.save({"w": payload}, d / "weights.pt")
    with pytest.raises(pickle.UnpicklingError):
        read_model_dir(d, "candidate").state_dict()
    np.save(d / "video_embeddings.npy", np.array([payload], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        read_model_dir(d, "candidate").array("video_embeddings")
    assert not marker.exists()  # the payload never ran


KILLED_EXPORT = """
import os, sys
import numpy as np, torch
from ytspark.models import export
export.write_model_dir(sys.argv[1], "candidate", state_dict={"w": torch.ones(2)}, meta={}, version="v1")
real_save = np.save
def dying_save(*a, **k):  # the weights are written, then the process is killed during the arrays
    os._exit(137)
np.save = dying_save
export.write_model_dir(sys.argv[1], "candidate", state_dict={"w": torch.zeros(2)}, meta={}, version="v2",
                       arrays={"video_embeddings": np.zeros((3, 2), np.float32)})
"""


def test_export_killed_half_way_leaves_latest_on_the_previous_model(tmp_path):
    from ytspark.models.export import resolve_model_dir

    root = tmp_path / "models"
    r = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(root)], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert r.returncode == 137, r.stderr[-2000:]
    names = sorted(p.name for p in (root / "candidate").iterdir())
    assert names == [".tmp-v2", "LATEST", "v1"]  # v2 never published: only its hidden temporary exists
    assert resolve_model_dir(root, "candidate") == str(root / "candidate" / "v1")
    assert torch.equal(read_model_dir(root, "candidate").state_dict()["w"], torch.ones(2))
