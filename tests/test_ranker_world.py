"""The ranker's training rows on the scoring world (tests/score_world.py): the features serving builds,
candidate negatives, and train-ranker on scored rows feeding serving the same inputs."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from score_world import FEATURES, serving_block, serving_rows

from ytspark import schema as S


# ------------------------------------------------------------------ the ranker's training rows = what serving builds

RANK_FEATURES = (S.CAND_WATCH_HIST, S.RANK_USER_LANGUAGE, S.RANK_VIDEO_LANGUAGE, S.RANK_CHANNEL, S.RANK_CATEGORY,
                 S.RANK_SOURCE, "since_last_watch_days", "channel_watches", "since_channel_watch_days",
                 "category_watches", "since_category_watch_days", "video_age_days", "retrieval_score")


def test_ranker_training_rows_have_the_features_serving_builds(spark, world):
    """No train/serve skew: an impression's training row (train-ranker's scored rows) holds what scoring feeds
    the ranker for that user and video as of the impression, the candidate logit u·v+b included."""
    from ytspark.models.export import load_candidate
    from ytspark.models.features import batch_from_numpy
    from ytspark.score.features import load_vocabs
    from ytspark.score.job import _video_meta
    from ytspark.score.rank import TorchRanker
    from ytspark.train.rank_rows import build_rank_rows

    prepared, out = world["prepared"], str(world["tmp"] / "rank_rows")
    m = build_rank_rows(spark, world["cfg"], prepared, world["model"], out)
    assert m["mode"] == "impressions"
    assert build_rank_rows(spark, world["cfg"], prepared, world["model"], out) == m  # reused, not rebuilt
    rows = pd.concat([pd.read_parquet(Path(out, s)) for s in (*S.SPLITS, S.CALIBRATION)], ignore_index=True)
    base = pd.concat([pd.read_parquet(Path(prepared, "ranking", s)) for s in S.SPLITS], ignore_index=True)
    key = [S.USER_ID, S.RANK_IMPRESSION_TS, S.RANK_VIDEO]
    both = rows.merge(base, on=key, suffixes=("", "_prepared"))
    assert len(rows) == len(base) == len(both) > 60
    # ranker.calibration_share of the users: their training impressions are held out of train, whole users
    assert m["rows"][S.CALIBRATION] == (rows[S.SPLIT] == S.CALIBRATION).sum() > 0
    moved = both[both[S.SPLIT] != both[S.SPLIT + "_prepared"]]
    assert set(moved[S.SPLIT]) == {S.CALIBRATION} and set(moved[S.SPLIT + "_prepared"]) == {"train"}
    held = set(moved[S.USER_ID])
    assert held.isdisjoint(rows.loc[rows[S.SPLIT] == "train", S.USER_ID])
    assert (both.loc[both[S.USER_ID].isin(held) & (both[S.SPLIT + "_prepared"] == "train"), S.SPLIT]
            == S.CALIBRATION).all()
    assert 1 <= len(held) <= 0.3 * base[S.USER_ID].nunique()
    for c in ("since_last_watch_days", "channel_watches", "category_watches", S.RANK_CLICKED, S.RANK_WEIGHT):
        np.testing.assert_array_equal(both[c], both[c + "_prepared"], err_msg=c)
    assert (base["retrieval_score"] == 0).all() and rows["retrieval_score"].std() > 0.1  # the skew that was
    q = json.loads(Path(out, "quantiles.json").read_text())["ranking"]
    assert len(q["retrieval_score"]) > 5  # boundaries fitted on the logits, not on the placeholder 0

    vocabs = load_vocabs(spark, prepared)
    meta = _video_meta(spark, prepared, vocabs)
    source = vocabs["source"].index("candidate")
    model, _ = load_candidate(world["model"])
    picks = rows[(rows[S.RANK_VIDEO] >= 2) & (rows["n_prev_impressions"] == 0)].sort_values(key).iloc[::41].head(2)
    assert len(picks) == 2
    for _, r in picks.iterrows():
        t = float(r[S.RANK_IMPRESSION_TS])
        s = serving_rows(spark, world, t, affinity=True)[r[S.USER_ID]]
        cols = {c: np.asarray([s[c]]) for c in FEATURES}
        with torch.no_grad():
            logit = float(model.logits_full(model.query_vector(batch_from_numpy(cols, serving=True)))[0, r[S.RANK_VIDEO]])
        block = serving_block(s, np.array([t]))
        feats = TorchRanker(None, meta, t, source).features(block, np.array([[r[S.RANK_VIDEO]]]),
                                                           np.array([[logit]], np.float32))
        for c in RANK_FEATURES:
            got, want = np.asarray(r[c]), np.asarray(feats[c][0])
            if c == "retrieval_score":
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=c)
            else:
                np.testing.assert_array_equal(got, want.astype(got.dtype), err_msg=f"{r[S.USER_ID]} {t} {c}")


def test_candidate_negative_rows_on_the_world(spark, world):
    """Forced on data with impressions: one clicked row per label watch, retrieved-but-unseen negatives."""
    from ytspark.train.rank_rows import build_rank_rows

    prepared, out = world["prepared"], str(world["tmp"] / "rank_rows_neg")
    cfg = replace(world["cfg"], ranker=replace(world["cfg"].ranker, negatives=4))
    m = build_rank_rows(spark, cfg, prepared, world["model"], out, mode="candidate_negatives")
    assert m["mode"] == "candidate_negatives"
    rows = pd.concat([pd.read_parquet(Path(out, s)) for s in S.SPLITS], ignore_index=True)
    labels = pd.concat([pd.read_parquet(Path(prepared, "candidates", s)) for s in S.SPLITS], ignore_index=True)
    labels = labels[labels[S.CAND_LABEL] >= 2]
    pos = rows[rows[S.RANK_CLICKED] == 1]
    # one clicked row per label the model retrieved in its top score.k (K=12 of 58 videos here)
    keys = list(zip(pos[S.USER_ID], pos[S.RANK_IMPRESSION_TS], pos[S.RANK_VIDEO]))
    assert set(keys) <= set(zip(labels[S.USER_ID], labels[S.CAND_LABEL_TS],
                                                                labels[S.CAND_LABEL]))
    assert len(pos) > 20
    labels = labels[[k in set(keys) for k in zip(labels[S.USER_ID], labels[S.CAND_LABEL_TS], labels[S.CAND_LABEL])]]
    # the ranking split is by time: a training label in the same second as the validation watch is "val"
    split_of = {(u, t, v): sp for u, t, v, sp in zip(labels[S.USER_ID], labels[S.CAND_LABEL_TS], labels[S.CAND_LABEL],
                                                    labels[S.SPLIT])}
    moved = [(split_of[(u, t, v)], sp) for u, t, v, sp in zip(pos[S.USER_ID], pos[S.RANK_IMPRESSION_TS],
                                                              pos[S.RANK_VIDEO], pos[S.SPLIT]) if split_of[(u, t, v)] != sp]
    assert set(moved) <= {("train", "val")} and len(moved) <= 3
    negs = rows[rows[S.RANK_CLICKED] == 0]
    # training labels: 4 negatives (3 when the label sits in the same second as a held-out one);
    # validation and test targets: the full slate, the other K - 1 = 11 retrieved videos
    per_slate = negs.groupby([S.USER_ID, S.RANK_IMPRESSION_TS]).size()
    held = {(u, t) for u, t, v in keys if split_of[(u, t, v)] != "train"}  # by the label's own split
    assert held and all(n == cfg.score.k - 1 for key, n in per_slate.items() if key in held)
    assert all(3 <= n <= 4 for key, n in per_slate.items() if key not in held)
    assert set(negs.groupby([S.USER_ID, S.RANK_IMPRESSION_TS]).groups) <= \
        set(pos.groupby([S.USER_ID, S.RANK_IMPRESSION_TS]).groups)  # no slate without its watched video
    ev = world["events"]
    vocab = world["vocab"]["video"]
    w = ev[ev[S.EVENT_TYPE] == "watch"].assign(v=lambda d: vocab.lookup(d[S.VIDEO_ID]))
    for (uid, t), g in negs.groupby([S.USER_ID, S.RANK_IMPRESSION_TS]):
        seen = set(w[(w[S.USER_ID] == uid) & (w[S.EVENT_TS] < t)]["v"])
        assert not seen & set(g[S.RANK_VIDEO]), uid
    assert (rows["n_prev_impressions"] == 0).all() and np.isfinite(rows["retrieval_score"]).all()


def test_train_ranker_on_scored_rows_feeds_serving_the_same_inputs(spark, world, tmp_path):
    """train-ranker's path: scored rows -> training -> a model that takes the source group, with the rows'
    quantile boundaries (retrieval score included), whose order the evaluation's rerank path uses."""
    from ytspark.evaluate.protocol import load_eval_sets
    from ytspark.evaluate.systems import ranked_topk
    from ytspark.models.export import read_model_dir
    from ytspark.train.launcher import train
    from ytspark.train.rank_rows import build_rank_rows

    c = world["cfg"]
    cfg = replace(c, ranker=replace(c.ranker, hidden=(16,), embed_dim=8, epochs=1, batch_size=32),
                  train=replace(c.train, progress=False, reader_workers=1, shuffle_buffer=64))
    rows = str(world["tmp"] / "rank_rows")  # shared with the skew test above: reused when it already ran
    build_rank_rows(spark, cfg, world["prepared"], world["model"], rows)
    res = train(cfg, "ranker", world["prepared"], str(tmp_path / "models"), candidate_model=world["model"],
                rank_rows=rows)
    md = read_model_dir(res["model_dir"], "ranker")
    assert md.meta["model_config"]["use_source"] and md.meta["rank_rows"] == rows
    # the export chose its serving blend on the validation impressions by weighted per-user loss
    blend = md.meta["blend"]
    assert blend["criterion"] == "weighted_per_user_loss" and blend["rows"] > 0
    assert set(blend["by_weight"]) == {str(w) for w in cfg.ranker.blend_weights}
    best = min(blend["by_weight"].values())
    assert blend["by_weight"][str(blend["retrieval_weight"])] == best
    assert md.json("quantiles.json")["retrieval_score"] == \
        json.loads(Path(rows, "quantiles.json").read_text())["ranking"]["retrieval_score"]
    es = load_eval_sets(spark, world["prepared"])["test"]
    ranked = ranked_topk(spark, world["model"], res["model_dir"], world["prepared"], es, 5, 12)
    assert ranked.shape == (len(es), 5)
