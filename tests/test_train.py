"""Training: Petastorm shards, the single-process loop, checkpoints/resume, export, and real multi-rank launchers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_config, write_known_answer_prepared
from ytspark import schema as S
from ytspark.models.export import ModelDirError, load_candidate, read_model_dir, resolve_model_dir
from ytspark.models.features import CANDIDATE_FIELDS
from ytspark.rows import candidate_split, read_split
from ytspark.train.candidate_task import evaluate_candidates
from ytspark.train.data import ShardBatches, steps_per_epoch
from ytspark.train.launcher import run_spec, train

SMALL = ("candidate.hidden=[64]", "candidate.embed_dim=16", "candidate.batch_size=64", "candidate.lr=0.01",
         "candidate.recency=\"last_k\"", "candidate.recent_k=2", "train.progress=false", "train.shuffle_buffer=512",
         "train.reader_workers=1", "train.patience=10")


def small_cfg(*over: str):
    return make_config(*SMALL, *over)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> str:
    return write_known_answer_prepared(tmp_path_factory.mktemp("known") / "prepared")


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory) -> tuple[dict, str]:
    models = str(tmp_path_factory.mktemp("models"))
    return train(small_cfg("candidate.epochs=6"), "candidate", prepared, models), models


def test_steps_per_epoch_is_one_pass_shared_by_all_ranks():
    assert steps_per_epoch(3200, 64, 1) == 50
    assert steps_per_epoch(3200, 64, 2) == 25
    assert steps_per_epoch(10, 64, 2) == 1  # never zero steps
    with pytest.raises(ValueError):
        steps_per_epoch(100, 0, 1)


def test_shards_are_disjoint_cover_every_row_and_batches_have_fixed_size(prepared):
    path = f"{prepared}/candidates/train"
    cols = [S.USER_ID, S.CAND_LABEL, S.CAND_WATCH_HIST]
    whole = read_split(path, cols)
    shards = [read_split(path, cols, rank=r, size=2) for r in range(2)]
    key = lambda d: {(u, int(lab), tuple(h)) for u, lab, h in zip(d[S.USER_ID], d[S.CAND_LABEL], d[S.CAND_WATCH_HIST])}
    a, b = key(shards[0]), key(shards[1])
    assert not a & b
    assert a | b == key(whole)
    assert len(shards[0][S.USER_ID]) + len(shards[1][S.USER_ID]) == len(whole[S.USER_ID]) == 3200
    with ShardBatches(path, CANDIDATE_FIELDS, rank=1, size=2, batch_size=100, shuffle_buffer=300, seed=3) as it:
        seen = [next(it) for _ in range(40)]  # more than one pass over the shard: the reader never runs dry
    assert all(len(b[S.CAND_LABEL]) == 100 and b[S.CAND_WATCH_HIST].shape == (100, 50) for b in seen)


def test_known_answer_next_watch_is_learned_on_held_out_users(trained, prepared):
    result, _ = trained
    assert result["best"]["hr@10"] >= 0.95, result["history"]
    model, md = load_candidate(result["model_dir"])
    test = candidate_split(prepared, "test")  # users never seen in training or validation
    m = evaluate_candidates(model, test)
    assert m["hr@10"] >= 0.95 and m["mrr"] > 0.5, m
    # chance level for 40 videos with history excluded is ~10/38; an untrained model is near it
    fresh = evaluate_candidates(type(model)(model.config, md.json("quantiles.json")).eval(), test)
    assert fresh["hr@10"] < 0.6


@pytest.fixture(scope="module")
def prepared_seq(tmp_path_factory) -> str:
    return write_known_answer_prepared(tmp_path_factory.mktemp("known_seq") / "prepared", sequences=True)


def test_sequence_encoder_trains_on_windows_and_serves_from_candidate_rows(prepared_seq, tmp_path):
    cfg = small_cfg("candidate.epochs=4", 'candidate.encoder="sequence"', "candidate.seq_batch_size=32",
                    "candidate.attn_layers=1")
    result = train(cfg, "candidate", prepared_seq, str(tmp_path))
    assert result["best"]["hr@10"] >= 0.9, result["history"]
    assert result["global_step"] == 4 * steps_per_epoch(3200, 32, 1)
    model, md = load_candidate(result["model_dir"])
    assert model.config.encoder == "sequence" and md.meta["model_config"]["encoder"] == "sequence"
    m = evaluate_candidates(model, candidate_split(prepared_seq, "test"))  # held-out users, candidate rows
    assert m["hr@10"] >= 0.9, m


def test_auto_trains_both_encoders_and_publishes_the_better_with_both_figures(prepared_seq, tmp_path):
    cfg = small_cfg("candidate.epochs=2", 'candidate.encoder="auto"', "candidate.seq_batch_size=32",
                    "candidate.attn_layers=1")
    result = train(cfg, "candidate", prepared_seq, str(tmp_path))
    md = read_model_dir(tmp_path, "candidate")  # LATEST
    assert str(md.path) == result["model_dir"]
    choice = md.meta["encoder_choice"]
    figs = choice["validation"]
    assert set(figs) == {"bag", "sequence"} and all(0 <= f["fused"] <= 1 for f in figs.values())
    assert figs[choice["chosen"]]["fused"] >= max(f["fused"] for f in figs.values())
    assert md.meta["model_config"]["encoder"] == choice["chosen"]
    model, _ = load_candidate(tmp_path)
    assert evaluate_candidates(model, candidate_split(prepared_seq, "val"))["hr@10"] == \
        pytest.approx(figs[choice["chosen"]]["network"], abs=1e-6)
    # the pipeline's summary says what was published and both figures, as MODEL.json has them
    from ytspark.cli import encoder_choice_line

    line = encoder_choice_line(result["encoder_choice"])
    assert line.startswith(f"encoder: auto published {choice['chosen']}; validation hr@10 fused (network alone): ")
    for e in ("bag", "sequence"):
        assert f"{e} {figs[e]['fused']:.4f} ({figs[e]['network']:.4f})" in line


def test_export_is_a_complete_versioned_directory(trained, prepared):
    result, models = trained
    d = Path(result["model_dir"])
    assert resolve_model_dir(models, "candidate") == str(d)  # LATEST points at the new version
    md = read_model_dir(d, "candidate")
    model, _ = load_candidate(d)
    emb = md.array("video_embeddings")
    assert emb.dtype == np.float32 and emb.shape == (42, 16)
    assert np.array_equal(emb, model.video_embeddings().numpy()) and not emb[:2].any()
    assert md.json("vocab/video.json")["values"][0] == "v2"
    metrics = md.json("metrics.json")
    assert len(metrics["history"]) == result["epochs_run"] == 6
    assert metrics["global_step"] == 6 * steps_per_epoch(3200, 64, 1)
    assert {"train_loss", "val_hr@10", "examples_per_s"} <= set(metrics["history"][0])
    csv_lines = (Path(models) / "candidate" / "_work" / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch") and len(csv_lines) == 1 + result["epochs_run"]  # a header, a row an epoch
    # weights are plain tensors: loading needs no unpickling of arbitrary objects
    sd = torch.load(d / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())


def test_export_fuses_the_covisitation_of_the_training_rows_with_a_validation_weight(trained, prepared):
    from ytspark.models.covisit import build_covisitation, choose_weight, load_covisitation
    from ytspark.models.features import batch_from_numpy

    result, _ = trained
    model, md = load_candidate(result["model_dir"])
    entry = md.meta["covisit"]
    c = small_cfg().candidate
    assert (entry["window"], entry["top_m"], entry["recent_k"]) == (c.covisit_window, c.covisit_top_m,
                                                                   c.covisit_recent_k)
    tr = read_split(f"{prepared}/candidates/train", [S.CAND_WATCH_HIST, S.CAND_LABEL])
    cv = build_covisitation(tr[S.CAND_WATCH_HIST], tr[S.CAND_LABEL], model.config.n_videos, c.covisit_window,
                            c.covisit_top_m, c.covisit_recent_k, c.covisit_decay)
    val = candidate_split(prepared, "val")
    with torch.no_grad():
        w, table = choose_weight(cv, lambda a, b: model.logits_full(model.user_vector(batch_from_numpy(
            {k: v[a:b] for k, v in val.items()}))).numpy(), val[S.CAND_WATCH_HIST], val[S.CAND_LABEL],
            c.covisit_weights, c.eval_k)
    assert entry["weight"] == w and entry["val_hr@10"] == {str(k): round(v, 5) for k, v in table.items()}
    # the label is a fixed function of the last watch: the table alone knows it
    assert table[max(table)] >= 0.95, table
    fused = load_covisitation(md)
    if w > 0:
        assert fused.weight == w
        for name, arr in cv.arrays().items():
            np.testing.assert_array_equal(fused.arrays()[name], arr)
    else:
        assert fused is None and "covisit_indptr" not in md.meta["arrays"]


def test_model_dir_from_another_format_version_is_refused(trained, tmp_path):
    import shutil

    result, _ = trained
    other = tmp_path / "old"
    shutil.copytree(result["model_dir"], other)
    meta = json.loads((other / "MODEL.json").read_text())
    (other / "MODEL.json").write_text(json.dumps({**meta, "format_version": 0}))
    with pytest.raises(ModelDirError, match="retrain"):
        read_model_dir(other, "candidate")
    with pytest.raises(ModelDirError, match="train-candidates"):
        read_model_dir(tmp_path / "nothing-here", "candidate")


def _run_in_subprocess(spec: dict, env: dict) -> subprocess.CompletedProcess:
    code = ("import json,sys,logging; logging.basicConfig(level=logging.INFO);"
            "from ytspark.train import worker; worker.run(json.loads(sys.argv[1]))")
    return subprocess.run([sys.executable, "-c", code, json.dumps(spec)], env=env, capture_output=True, text=True,
                          timeout=600)


def test_killed_run_resumes_from_last_checkpoint_to_the_same_step_count(prepared, tmp_path):
    cfg = small_cfg("candidate.epochs=3")
    steps = steps_per_epoch(3200, 64, 1)
    whole = train(cfg, "candidate", prepared, str(tmp_path / "whole"))
    assert whole["global_step"] == 3 * steps

    models = str(tmp_path / "killed")
    env = {**os.environ, "YTSPARK_FAULT_STEP": str(steps + 7)}  # mid-way through epoch 2
    proc = _run_in_subprocess(run_spec(cfg, "candidate", prepared, models), env)
    assert proc.returncode == 137, proc.stderr[-2000:]
    work = Path(models) / "candidate" / "_work"
    assert json.loads((work / "checkpoint.json").read_text())["epoch"] == 1
    assert not (Path(models) / "candidate" / "LATEST").exists()  # nothing half-exported

    resumed = train(cfg, "candidate", prepared, models, resume=True)
    assert resumed["resumed_from_epoch"] == 1
    assert resumed["global_step"] == whole["global_step"]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    last, ref = resumed["history"][-1]["train_loss"], whole["history"][-1]["train_loss"]
    assert abs(last - ref) <= 0.5 * ref + 0.2, (last, ref)
    assert resumed["best"]["hr@10"] >= 0.5


def test_resume_refuses_a_checkpoint_of_another_model(prepared, tmp_path):
    models = str(tmp_path / "m")
    train(small_cfg("candidate.epochs=1"), "candidate", prepared, models)
    with pytest.raises(ValueError, match="without --resume"):
        train(small_cfg("candidate.epochs=2", "candidate.embed_dim=8"), "candidate", prepared, models, resume=True)


# --- real multi-rank launchers -------------------------------------------------------------------------------

SHARD_SCRIPT = """
import json, sys
from ytspark.rows import read_split
from ytspark.train.dist import HorovodDist
d = HorovodDist()
cols = read_split(sys.argv[1] + '/candidates/train', ['user_id', 'label'], rank=d.rank, size=d.size)
json.dump({'rank': d.rank, 'size': d.size, 'rows': [[u, int(l)] for u, l in zip(cols['user_id'], cols['label'])]},
          open(sys.argv[2] + f'/rank{d.rank}.json', 'w'))
"""


def _horovodrun() -> str:
    exe = Path(sys.executable).with_name("horovodrun")
    if not exe.exists():
        pytest.skip("horovodrun is not installed (make env builds Horovod)")
    return str(exe)


@pytest.mark.horovod
def test_two_horovod_ranks_read_disjoint_shards_that_cover_every_row(prepared, tmp_path):
    script = tmp_path / "shards.py"
    script.write_text(SHARD_SCRIPT)
    proc = subprocess.run([_horovodrun(), "--gloo", "-np", "2", "-H", "localhost:2", sys.executable, str(script),
                           prepared, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [g["size"] for g in got] == [2, 2]
    rows = [{tuple(x) for x in g["rows"]} for g in got]
    whole = read_split(f"{prepared}/candidates/train", [S.USER_ID, S.CAND_LABEL])
    assert len(got[0]["rows"]) + len(got[1]["rows"]) == len(whole[S.USER_ID])
    assert abs(len(got[0]["rows"]) - len(got[1]["rows"])) <= len(whole[S.USER_ID]) // 8  # balanced row groups
    assert {(u, int(l)) for u, l in zip(whole[S.USER_ID], whole[S.CAND_LABEL])} == rows[0] | rows[1]


@pytest.mark.horovod
@pytest.mark.slow
def test_horovodrun_two_ranks_train_the_known_answer(prepared, tmp_path):
    _horovodrun()
    cfg = small_cfg("candidate.epochs=4", "train.launcher=\"horovodrun\"", "train.num_proc=2",
                    "train.threads_per_proc=1")
    r = train(cfg, "candidate", prepared, str(tmp_path / "models"))
    assert r["global_step"] == 4 * steps_per_epoch(3200, 64, 2)
    md = read_model_dir(r["model_dir"], "candidate")
    assert md.json("metrics.json")["ranks"] == 2 and md.json("metrics.json")["backend"] == "horovod"
    assert r["best"]["hr@10"] >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("launcher, backend", [pytest.param("horovod-spark", "horovod", marks=pytest.mark.horovod),
                                               ("torch-distributor", "torch")])
def test_spark_launchers_train_two_ranks_on_local_spark(spark, prepared, tmp_path, launcher, backend):
    cfg = small_cfg("candidate.epochs=3", f"train.launcher=\"{launcher}\"", "train.num_proc=2",
                    "train.threads_per_proc=1")
    r = train(cfg, "candidate", prepared, str(tmp_path / "models"), spark=spark)
    assert r["global_step"] == 3 * steps_per_epoch(3200, 64, 2)
    metrics = read_model_dir(r["model_dir"], "candidate").json("metrics.json")
    assert metrics["backend"] == backend and metrics["ranks"] == 2
    assert r["best"]["hr@10"] >= 0.8
