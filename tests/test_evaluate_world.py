"""Evaluation on the scoring world (tests/score_world.py): a fused candidate model, and the "candidate +
ranking" system with features as of each target."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import DAY
from score_world import ranker_dir

from ytspark import schema as S
from ytspark.vocab import Vocab


def test_evaluation_of_a_fused_model_ranks_by_logit_plus_covisitation(spark, world, fused):
    from ytspark.evaluate.protocol import load_eval_sets
    from ytspark.evaluate.retrieval import topk_excluding
    from ytspark.evaluate.systems import candidate_topk, candidate_user_vectors

    cv, mdir = fused
    test = load_eval_sets(spark, world["prepared"], ("test",))["test"]
    model, u, cols = candidate_user_vectors(mdir, world["prepared"], test, with_rows=True)
    with torch.no_grad():
        logits = model.logits_full(u).numpy()
    term = cv.dense(cols[S.CAND_WATCH_HIST])
    want = topk_excluding(lambda a, b: logits[a:b] + term[a:b], test, 8)
    alone = topk_excluding(lambda a, b: logits[a:b], test, 8)
    np.testing.assert_array_equal(candidate_topk(mdir, world["prepared"], test, 8), want)
    np.testing.assert_array_equal(candidate_topk(mdir, world["prepared"], test, 8, covisit=False), alone)
    assert (want != alone).any(axis=1).sum() >= 3


# ------------------------------------------------------------------ the evaluation's "candidate + ranking" system

def test_evaluation_reranks_candidates_with_features_as_of_each_target(spark, world):
    from ytspark.evaluate.protocol import load_eval_sets
    from ytspark.evaluate.systems import (
        _affinity_block, _impression_block, candidate_calibration, candidate_topk, ranked_topk,
    )

    prepared = world["prepared"]
    ranker = ranker_dir(world["tmp"] / "models_eval", prepared, seed=3)
    es = load_eval_sets(spark, prepared)["test"]
    cand = candidate_topk(world["model"], prepared, es, 12)
    ranked = ranked_topk(spark, world["model"], ranker, prepared, es, 5, 12)
    assert ranked.shape == (len(es), 5) and len(es) >= 30
    for b in range(len(es)):
        r, c = ranked[b][ranked[b] >= 2], cand[b][cand[b] >= 2]
        assert len(r) == min(5, len(c)) and len(set(r)) == len(r)
        assert set(r) <= set(c) and not set(r) & set(es.seen(b))  # a reordering of the retrieved, unseen top K
    assert (ranked != cand[:, :5]).any()  # the ranker did reorder

    # held-out impressions are scored with the key that orders the lists: shown each user's own ranked top 5,
    # the keys come back in the list's order
    from ytspark.evaluate.impressions import HeldOut

    rows, vids = np.repeat(np.arange(len(es)), 5), ranked.ravel()
    keep = vids >= 2
    held = HeldOut(rows[keep], vids[keep], np.zeros(keep.sum(), np.int64), np.zeros(keep.sum()))
    again, keys = ranked_topk(spark, world["model"], ranker, prepared, es, 5, 12, held=held)
    np.testing.assert_array_equal(again, ranked)
    assert keys.shape == (keep.sum(),) and np.isfinite(keys).all()
    for b in range(len(es)):
        k = keys[held.rows == b]
        assert (np.diff(k) <= 1e-5 * (1 + np.abs(k[:-1]))).all(), b

    # channel/category affinity as of each user's own target time, against a brute force over the events
    test_rows = pd.read_parquet(Path(prepared, "candidates", "test"))
    as_of = es.align(test_rows[S.USER_ID].to_numpy(), test_rows[S.CAND_LABEL_TS].to_numpy(np.float64))
    vocabs = {n: Vocab(n, json.loads(Path(prepared, "vocab", f"{n}.json").read_text())["values"])
              for n in ("video", "channel", "category", "language")}
    aff = _affinity_block(spark, prepared, vocabs, es.user_ids, as_of)["channel"]
    videos = pd.read_parquet(Path(prepared, "videos")).set_index(S.VIDEO_ID)[S.CHANNEL_ID]
    ev = world["events"]
    checked = 0
    for b, uid in enumerate(es.user_ids):
        w = ev[(ev[S.USER_ID] == uid) & (ev[S.EVENT_TYPE] == "watch") & (ev[S.EVENT_TS] < as_of[b])]
        ch = w[S.VIDEO_ID].map(lambda v: vocabs["channel"].index(videos.get(v)))
        want = {int(c): (len(g), np.float32((as_of[b] - g[S.EVENT_TS].max()) / DAY))
                for c, g in w.assign(ch=ch.to_numpy()).groupby("ch")}
        lo, hi = aff.offsets[b], aff.offsets[b + 1]
        got = {int(i): (int(n), np.float32(d)) for i, n, d in zip(aff.ids[lo:hi], aff.counts[lo:hi], aff.since[lo:hi])}
        assert got == want, uid
        checked += len(want)
    assert checked > 50

    # the impression features too: every impression of each video before the request time, the start of the
    # target's UTC day (the nightly table's cut-off: the target's own impression, in the visit that led to
    # it, is not seen)
    imp = _impression_block(spark, prepared, vocabs, es.user_ids, as_of)
    checked = 0
    for b, uid in enumerate(es.user_ids):
        mine = ev[ev[S.USER_ID] == uid]
        req = (as_of[b] // DAY) * DAY
        i = mine[(mine[S.EVENT_TYPE] == "impression") & (mine[S.EVENT_TS] < req)]
        want = {vocabs["video"].index(v): (len(g), np.float32((req - g[S.EVENT_TS].max()) / DAY),
                                           float((g[S.CLICKED].fillna(0).astype(int) > 0).any()))
                for v, g in i.groupby(S.VIDEO_ID) if vocabs["video"].index(v) >= 2}
        lo, hi = imp.offsets[b], imp.offsets[b + 1]
        got = {int(x): (int(n), np.float32(d), float(f))
               for x, n, d, f in zip(imp.ids[lo:hi], imp.counts[lo:hi], imp.since[lo:hi], imp.flag[lo:hi])}
        assert got == want, uid
        checked += len(want)
    assert checked > 20

    # the candidate network's reliability bins hold every top-10 slot, and their hits are HR@10's hits
    rows = candidate_calibration(world["model"], prepared, es, 10)
    assert sum(r[3] for r in rows) == 10 * len(es)
    top10 = candidate_topk(world["model"], prepared, es, 10)
    hits = sum(es.labels[b] in top10[b] for b in range(len(es)))
    assert sum(r[2] * r[3] for r in rows) == pytest.approx(hits)
    assert all(0 < r[1] < 1 for r in rows) and [r[1] for r in rows] == sorted(r[1] for r in rows)


def test_a_compared_fused_model_is_reported_fused_and_as_its_network_alone(spark, world, fused):
    """``ytspark evaluate --compare NAME=DIR``: a fused model also gets "(NAME) network alone" (the ablation's
    two rows); comparing the model with itself gives the main systems' lists exactly."""
    from types import SimpleNamespace

    from ytspark.evaluate.protocol import load_eval_sets
    from ytspark.pipeline import _add_model_systems

    _, mdir = fused
    root = str(Path(mdir).parent.parent)  # the models root (no ranker): the main system is its LATEST, mdir
    sets = load_eval_sets(spark, world["prepared"], ("test",))
    got = {}
    _add_model_systems(spark, world["cfg"], world["prepared"], root, SimpleNamespace(sets=sets),
                       lambda name, system: got.__setitem__(name, system(sets["test"], None)), [f"again={mdir}"], [])
    assert set(got) == {"ytspark candidate", "ytspark candidate network alone", "ytspark candidate (again)",
                        "ytspark candidate (again) network alone"}
    np.testing.assert_array_equal(got["ytspark candidate (again)"], got["ytspark candidate"])
    np.testing.assert_array_equal(got["ytspark candidate (again) network alone"], got["ytspark candidate network alone"])
    assert (got["ytspark candidate"] != got["ytspark candidate network alone"]).any()
