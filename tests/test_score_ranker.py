"""Nightly scoring with a ranker: the top K reordered by the ranking network, its calibration, the blend
with the retrieval score, the serving objective, and the features it is fed (on the scoring world,
tests/score_world.py)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import DAY
from score_world import N, RUN_DATE, ranker_dir, read_lists, serving_block, serving_rows

from ytspark import schema as S
from ytspark.vocab import Vocab


# ------------------------------------------------------------------ the ranker hook

def test_ranker_reorders_the_top_k_by_expected_watch_time(spark, world, scored):
    from ytspark.score import run_score

    ranker = ranker_dir(world["tmp"] / "models", world["prepared"], seed=2)
    cfg = replace(world["cfg"], score=replace(world["cfg"].score, index="hnsw"))
    out = str(world["tmp"] / "out_ranked")
    m = run_score(spark, cfg, world["prepared"], world["model"], RUN_DATE, out, ranker_dir=ranker)
    df = read_lists(spark, f"{out}/recommendations/run_date={RUN_DATE}")
    assert m["ranker_version"] == "rank-2" and m["index"]["kind"] == "hnsw"
    assert m["index"]["recall_at_k"] >= 0.9  # 58 videos: HNSW is all but exact
    cand = df[df["source"] == "candidate"]
    assert set(df[S.USER_ID]) == world["users"] and (df.groupby(S.USER_ID)["rank"].max() == N).all()
    for _, g in cand.groupby(S.USER_ID):
        assert (np.diff(g["score"].to_numpy()) <= 0).all()  # ranked by the ranker's score
        assert (g["score"] > 0).all()  # exp(logit)
    # the ranked top N come from the retrieval top K: every retrieval score is within the user's top K
    base = scored["df"]
    assert set(cand[S.USER_ID]) == set(base[base["source"] == "candidate"][S.USER_ID])
    assert not (cand["score"].to_numpy() == cand["retrieval_score"].to_numpy()).all()


def test_calibrated_ranker_writes_watch_seconds_and_keeps_the_order(spark, world):
    """The same ranker with a calibration map in MODEL.json: the same lists in the same order, the written
    score = the map applied to exp(logit) (ytspark.models.score_calibration)."""
    from ytspark.models import score_calibration
    from ytspark.score import run_score

    cal = {"method": "isotonic-loglinear", "x_logit": [-3.0, 0.0, 3.0], "y_watch_s": [2.0, 20.0, 50.0],
           "slope_below": 0.5, "slope_above": 0.3, "n": 1}
    out = {}
    for name, c in (("raw", None), ("calibrated", cal)):
        ranker = ranker_dir(world["tmp"] / f"models_{name}", world["prepared"], seed=4, calibration=c)
        run_score(spark, world["cfg"], world["prepared"], world["model"], RUN_DATE, str(world["tmp"] / f"o_{name}"),
                  ranker_dir=ranker)
        out[name] = read_lists(spark, str(world["tmp"] / f"o_{name}" / "recommendations" / f"run_date={RUN_DATE}"))
    raw, calibrated = out["raw"], out["calibrated"]
    pd.testing.assert_frame_equal(raw[[S.USER_ID, "rank", S.VIDEO_ID]], calibrated[[S.USER_ID, "rank", S.VIDEO_ID]])
    cand = (raw["source"] == "candidate").to_numpy()
    want = score_calibration.apply(cal, raw["score"].to_numpy()[cand])
    np.testing.assert_allclose(calibrated["score"].to_numpy()[cand], want, rtol=1e-5)
    assert not np.allclose(calibrated["score"].to_numpy()[cand], raw["score"].to_numpy()[cand])


def test_ranker_blend_orders_by_logit_plus_weighted_retrieval_score(spark, world):
    """A ranker whose MODEL.json chose w = 3: ranks follow log(score) + 3 x retrieval_score, score stays exp(logit)."""
    from ytspark.score import run_score

    ranker = ranker_dir(world["tmp"] / "models_blend", world["prepared"], seed=2, blend={"retrieval_weight": 3.0})
    out = str(world["tmp"] / "out_blend")
    run_score(spark, world["cfg"], world["prepared"], world["model"], RUN_DATE, out, ranker_dir=ranker)
    cand = read_lists(spark, f"{out}/recommendations/run_date={RUN_DATE}").query("source == 'candidate'")
    key_sorted = score_sorted = 0
    for _, g in cand.groupby(S.USER_ID):
        g = g.sort_values("rank")
        key = np.log(g["score"].to_numpy(np.float64)) + 3.0 * g["retrieval_score"].to_numpy(np.float64)
        assert (np.diff(key) <= 1e-4).all()
        key_sorted += 1
        score_sorted += bool((np.diff(g["score"].to_numpy()) <= 0).all())
    assert key_sorted == cand[S.USER_ID].nunique() > 0
    assert score_sorted < key_sorted  # the blend moved some list away from the score-only order


@pytest.mark.parametrize("objective,column", [("next_watch", "retrieval_score"), ("watch_time", "score")])
def test_the_serving_objective_picks_the_order(spark, world, objective, column):
    """The same ranker (its MODEL.json chose w = 3) served with ranker.objective = next_watch orders by the
    retrieval score, with watch_time by the ranker's score; the manifest says which order was served."""
    from dataclasses import replace

    from ytspark.score import run_score

    ranker = ranker_dir(world["tmp"] / f"models_{objective}", world["prepared"], seed=2,
                         blend={"retrieval_weight": 3.0})
    out = str(world["tmp"] / f"out_{objective}")
    cfg = replace(world["cfg"], ranker=replace(world["cfg"].ranker, objective=objective))
    m = run_score(spark, cfg, world["prepared"], world["model"], RUN_DATE, out, ranker_dir=ranker)
    assert m["order"] == {"objective": objective, "retrieval_weight": 0.0}
    cand = read_lists(spark, f"{out}/recommendations/run_date={RUN_DATE}").query("source == 'candidate'")
    lists = [g.sort_values("rank") for _, g in cand.groupby(S.USER_ID)]
    assert len(lists) > 0
    for g in lists:
        assert (np.diff(g[column].to_numpy(np.float64)) <= 1e-5 * np.abs(g[column].to_numpy()[:-1]) + 1e-6).all()
    other = "score" if column == "retrieval_score" else "retrieval_score"
    assert not all((np.diff(g[other].to_numpy()) <= 0).all() for g in lists)  # the two orders differ


def test_ranker_features_match_the_users_history(spark, world):
    """Channel/category counts and days since, as the ranking rows of prepare define them."""
    from ytspark.score.features import as_of_ts
    from ytspark.score.rank import TorchRanker, VideoMeta

    as_of = as_of_ts(RUN_DATE)
    r = serving_rows(spark, world, as_of, affinity=True)["u05"]
    vocab = world["vocab"]["video"]
    ev = world["events"]
    w = ev[(ev[S.USER_ID] == "u05") & (ev[S.EVENT_TYPE] == "watch")]
    vid_num = w[S.VIDEO_ID].str[1:].astype(int)
    ch_vocab = Vocab("c", json.loads(Path(world["prepared"], "vocab", "channel.json").read_text())["values"])
    block = serving_block(r)
    V = len(vocab)
    meta = VideoMeta(np.ones(V, np.int64), np.ones(V, np.int64), np.ones(V, np.int64), np.full(V, np.nan))
    for v in vocab.values:
        meta.channel[vocab.index(v)] = ch_vocab.index(f"ch{int(v[1:]) % 7}")
    cand = np.array([[vocab.index("v0"), vocab.index("v1"), vocab.index("v5")]])
    feats = TorchRanker(None, meta, as_of, 3).features(block, cand, np.zeros((1, 3), np.float32))
    for j, v in enumerate((0, 1, 5)):
        same = w[(vid_num % 7) == v % 7]
        assert feats["channel_watches"][j] == len(same)
        expect = np.float32((as_of - same[S.EVENT_TS].max()) / DAY) if len(same) else np.float32(-1.0)
        assert feats["since_channel_watch_days"][j] == expect
    assert (feats["video_age_days"] == -1.0).all() and (feats["n_prev_impressions"] == 0).all()
