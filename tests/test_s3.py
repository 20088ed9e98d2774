"""Models, checkpoints and training data on S3: a real S3 server on loopback (moto's ThreadedMotoServer), s3fs as
the client, the same code paths as on AWS (``AWS_ENDPOINT_URL`` points botocore at the server).

- every Python-side storage function on ``s3://`` and ``s3a://``; a directory published over an older one;
- a model export killed while it copies the staged directory into place (S3 has no rename): the half-copied
  version has no ``_SUCCESS``, so no reader accepts it, and ``LATEST`` stays on the previous model;
- training with the prepared data and the models root on S3 (Petastorm reads through s3fs), killed mid-epoch
  (the loop's ``YTSPARK_FAULT_STEP`` hook), resumed from the checkpoint on S3 to the same step count: one rank
  through the launcher's code (``launcher.train`` -> ``worker.run``), and two Horovod ranks under ``horovodrun``
  (rank 1 killed) whose spec and result also travel through S3;
- ``ytspark train-candidates --models s3://...`` (the CLI, its own process) publishes there, and ``score`` reads the
  model back from there.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_config, write_known_answer_prepared
from ytspark import storage
from ytspark.models.export import ModelDirError, load_candidate, read_model_dir, resolve_model_dir, write_model_dir
from ytspark.rows import read_split
from ytspark.train.data import steps_per_epoch
from ytspark.train.launcher import run_spec, train

ROOT = Path(__file__).resolve().parent.parent
SMALL = ("candidate.hidden=[64]", "candidate.embed_dim=16", "candidate.batch_size=64", "candidate.lr=0.01",
         "candidate.recency=\"last_k\"", "candidate.recent_k=2", "train.progress=false", "train.shuffle_buffer=512",
         "train.reader_workers=1", "train.patience=10")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env():
    """A moto S3 server on 127.0.0.1 and the environment that points boto/s3fs at it (restored afterwards)."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is pinned in requirements.lock")
    pytest.importorskip("s3fs", reason="s3fs is pinned in requirements.lock")
    import s3fs

    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield env
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def bucket(s3_env) -> str:
    """A fresh bucket per test: ``s3://<name>``."""
    name = f"ytspark-{uuid.uuid4().hex[:10]}"
    fs, _ = storage.filesystem(f"s3://{name}")
    fs.mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> str:
    return write_known_answer_prepared(tmp_path_factory.mktemp("known") / "prepared")


def _upload(local: str, url: str) -> None:
    fs, p = storage.filesystem(url)
    fs.put(local.rstrip("/") + "/", p, recursive=True)


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def test_storage_functions_on_s3_and_s3a(bucket):
    a = bucket.replace("s3://", "s3a://")
    storage.save_json(f"{a}/x/m.json", {"k": [1, 2]})  # written as s3a://, read as s3:// (the same object)
    assert storage.load_json(f"{bucket}/x/m.json") == {"k": [1, 2]}
    assert storage.path_exists(f"{a}/x/m.json") and storage.list_names(f"{a}/x") == ["m.json"]
    storage.save_npy(f"{a}/arr.npy", np.arange(4, dtype=np.int32))
    assert storage.load_npy(f"{a}/arr.npy").tolist() == [0, 1, 2, 3]
    storage.save_torch(f"{a}/c.pt", {"w": torch.ones(3)})
    assert torch.equal(storage.load_torch(f"{a}/c.pt")["w"], torch.ones(3))
    storage.save_text(f"{a}/x/m.json", "{}")  # one PUT replaces the object whole
    assert storage.load_json(f"{a}/x/m.json") == {}
    with storage.staged_dir(f"{a}/pub") as tmp:
        storage.save_text(f"{tmp}/one.txt", "1")
    with storage.staged_dir(f"{a}/pub") as tmp:
        storage.save_text(f"{tmp}/two.txt", "2")
    assert storage.list_names(f"{a}/pub") == ["_SUCCESS", "two.txt"] and storage.is_published(f"{a}/pub")
    with pytest.raises(RuntimeError):
        with storage.staged_dir(f"{a}/pub") as tmp:
            storage.save_text(f"{tmp}/three.txt", "3")
            raise RuntimeError("fails before publishing")
    assert storage.list_names(f"{a}/pub") == ["_SUCCESS", "two.txt"]
    assert storage.list_names(bucket) == ["arr.npy", "c.pt", "pub", "x"]  # no temporary left
    storage.remove(f"{a}/x")
    assert not storage.path_exists(f"{bucket}/x/m.json")


KILLED_PUBLISH = """
import os, sys
import numpy as np, torch
from ytspark import storage
from ytspark.models import export
root = sys.argv[1]
export.write_model_dir(root, "candidate", state_dict={"w": torch.ones(2)}, meta={}, version="v1")
fs, _ = storage.filesystem(root)  # the same (cached) s3fs instance the export uses
copied = []
real_copy = fs.copy
def dying_copy(src, dst, **kw):  # S3 has no rename: the staged files are copied; die after the second
    real_copy(src, dst, **kw)
    copied.append(dst)
    if len(copied) == 2:
        os._exit(137)
fs.copy = dying_copy
export.write_model_dir(root, "candidate", state_dict={"w": torch.zeros(2)}, meta={}, version="v2",
                       arrays={"video_embeddings": np.zeros((3, 2), np.float32), "video_bias": np.zeros(3)})
"""


def test_half_published_model_on_s3_is_never_seen(bucket):
    root = f"{bucket}/models"
    r = subprocess.run([sys.executable, "-c", KILLED_PUBLISH, root], capture_output=True, text=True, timeout=300,
                       env=_env())
    assert r.returncode == 137, r.stderr[-3000:]
    v2 = f"{root}/candidate/v2"
    assert len(storage.list_names(v2)) == 2 and not storage.is_published(v2)  # half copied, no marker
    assert storage.load_text(f"{root}/candidate/LATEST").strip() == "v1"
    assert resolve_model_dir(root, "candidate") == f"{root}/candidate/v1"
    assert torch.equal(read_model_dir(root, "candidate").state_dict()["w"], torch.ones(2))
    with pytest.raises(ModelDirError, match="incomplete"):
        read_model_dir(v2, "candidate")


def test_model_export_load_on_s3a(bucket):
    root = bucket.replace("s3://", "s3a://") + "/models"
    d = write_model_dir(root, "candidate", state_dict={"w": torch.arange(3.0)}, meta={"model_config": {}},
                        arrays={"video_embeddings": np.eye(2, dtype=np.float32)},
                        json_files={"vocab/video.json": {"values": ["a"]}})
    md = read_model_dir(root, "candidate")
    assert md.path == d and torch.equal(md.state_dict()["w"], torch.arange(3.0))
    assert np.array_equal(md.array("video_embeddings"), np.eye(2)) and md.names("vocab") == ["video.json"]


def _run_rank_in_subprocess(spec: dict, env: dict) -> subprocess.CompletedProcess:
    code = ("import json,sys,logging; logging.basicConfig(level=logging.INFO);"
            "from ytspark.train import worker; worker.run(json.loads(sys.argv[1]))")
    return subprocess.run([sys.executable, "-c", code, json.dumps(spec)], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_killed_training_resumes_from_the_checkpoint_on_s3(bucket, prepared):
    """Prepared data and models on S3 only: the rank is killed mid-epoch 2, resumes from S3 to the same step."""
    data, models = f"{bucket.replace('s3://', 's3a://')}/prepared", f"{bucket}/models"
    _upload(prepared, data)
    assert len(read_split(f"{data}/candidates/train", ["label"])["label"]) == 3200  # Petastorm through s3fs
    cfg = make_config(*SMALL, "candidate.epochs=2")
    steps = steps_per_epoch(3200, 64, 1)
    proc = _run_rank_in_subprocess(run_spec(cfg, "candidate", data, models), _env(YTSPARK_FAULT_STEP=str(steps + 7)))
    assert proc.returncode == 137, proc.stderr[-3000:]
    work = f"{models}/candidate/_work"
    assert storage.load_json(f"{work}/checkpoint.json")["epoch"] == 1  # the epoch-1 checkpoint is on S3
    assert storage.list_names(f"{models}/candidate") == ["_work"]  # nothing published, no LATEST

    resumed = train(cfg, "candidate", data, models, resume=True)  # the launcher's code, launcher=local: one rank
    assert resumed["resumed_from_epoch"] == 1 and resumed["global_step"] == 2 * steps
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["model_dir"].startswith(f"{models}/candidate/")
    assert resolve_model_dir(models, "candidate") == resumed["model_dir"]
    model, md = load_candidate(models)  # read back from S3
    assert md.json("metrics.json")["global_step"] == 2 * steps and resumed["best"]["hr@10"] >= 0.5
    assert "metrics.csv" in storage.list_names(work)


@pytest.mark.slow
@pytest.mark.horovod
def test_horovod_rank_killed_resumes_from_s3_with_two_ranks(bucket, prepared, monkeypatch):
    """Two Horovod ranks (horovodrun; spec and result also travel through S3), data and models on S3: rank 1
    dies mid-epoch 2, the launcher says --resume, and two ranks resume from the S3 checkpoint to the same step."""
    from ytspark.train.launcher import TrainingFailed

    if not Path(sys.executable).with_name("horovodrun").exists():
        pytest.skip("horovodrun is not installed (make env builds Horovod)")
    data, models = f"{bucket}/prepared", f"{bucket}/models"
    _upload(prepared, data)
    cfg = make_config(*SMALL, "candidate.epochs=2", "train.launcher=\"horovodrun\"", "train.num_proc=2",
                      "train.threads_per_proc=1")
    steps = steps_per_epoch(3200, 64, 2)
    monkeypatch.setenv("YTSPARK_FAULT_STEP", str(steps + 7))
    monkeypatch.setenv("YTSPARK_FAULT_RANK", "1")
    with pytest.raises(TrainingFailed, match=r"launcher 'horovodrun'.*--resume"):
        train(cfg, "candidate", data, models)
    monkeypatch.delenv("YTSPARK_FAULT_STEP")
    monkeypatch.delenv("YTSPARK_FAULT_RANK")
    assert storage.load_json(f"{models}/candidate/_work/checkpoint.json")["epoch"] == 1
    assert storage.list_names(f"{models}/candidate") == ["_work"]  # nothing published; launch files removed

    result = train(cfg, "candidate", data, models, resume=True)
    assert result["resumed_from_epoch"] == 1 and result["global_step"] == 2 * steps
    assert read_model_dir(models, "candidate").json("metrics.json")["ranks"] == 2
    assert storage.list_names(f"{models}/candidate") == sorted(["LATEST", "_work", Path(result["model_dir"]).name])


# Small seeded platform (as tests/test_cluster.py): enough users for every split, small enough for 2 busy cores.
DATA = ("generate.users=120", "generate.videos=200", "generate.channels=20", "generate.days=20",
        "generate.visits_per_user=6.0", "generate.partitions=2", "prepare.max_examples_per_user=10")


@pytest.mark.slow
def test_cli_trains_to_s3_and_score_reads_the_model_back(spark, bucket, tmp_path):
    from ytspark.pipeline import run_prepare, run_score
    from ytspark.config import load_config
    from ytspark.generate import generate

    generate(spark, make_config(*DATA).generate, str(tmp_path / "raw"))
    sets = [*DATA, 'validate.as_of="2026-11-23"', 'score.run_date="2026-11-23"']
    data = {"events": tmp_path / "raw" / "events", "users": tmp_path / "raw" / "users",
            "videos": tmp_path / "raw" / "videos", "format": "parquet", "output": tmp_path / "out"}
    cfg = load_config("local", [*sets, *[f"data.{k}={json.dumps(str(v))}" for k, v in data.items()]])
    run_prepare(spark, cfg)
    prepared, models = str(tmp_path / "out" / "prepared"), f"{bucket}/models"

    r = subprocess.run([sys.executable, "-m", "ytspark.cli", "train-candidates", "--profile", "local",
                        "--prepared", prepared, "--models", models, "--output", str(tmp_path / "out"),
                        "--set", "candidate.epochs=1", "--set", "candidate.hidden=[32]", "--set", "train.progress=false"],
                       capture_output=True, text=True, timeout=900, env=_env())
    assert r.returncode == 0, r.stderr[-4000:]
    version = storage.load_text(f"{models}/candidate/LATEST").strip()
    assert storage.is_published(f"{models}/candidate/{version}")
    assert not (tmp_path / "out" / "models").exists() and not Path("s3:").exists()  # nothing landed locally

    m = run_score(spark, cfg, prepared, models, "2026-11-23")
    table = tmp_path / "out" / "recommendations" / "run_date=2026-11-23"
    assert (table / "_SUCCESS").exists()
    got = spark.read.parquet(str(table))
    assert got.select("user_id").distinct().count() == 120 and got.count() == 120 * cfg.score.n
    assert {r.model_version for r in got.select("model_version").distinct().collect()} == {version}
    assert m is not None
