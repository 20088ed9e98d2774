"""Prepare on a generated platform: rollback and the per-user cap hold on every row, counts add up."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_config

from ytspark import schema as S
from ytspark.generate import generate
from ytspark.prepare import read_inputs, run_prepare
from ytspark.vocab import tokenize

pytestmark = [pytest.mark.spark, pytest.mark.slow]
CAP = 4
H = 20


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen")
    cfg = make_config("generate.users=150", "generate.videos=300", "generate.channels=30", "generate.categories=8",
                      "generate.days=20", "generate.partitions=2", "generate.seed=3",
                      f"prepare.max_examples_per_user={CAP}", f"prepare.history_length={H}")
    counts = generate(spark, cfg.generate, str(tmp / "raw"))
    raw = tmp / "raw"
    from dataclasses import replace

    cfg = replace(cfg, data=replace(cfg.data, events=f"{raw}/events", users=f"{raw}/users", videos=f"{raw}/videos"))
    m = run_prepare(spark, cfg, read_inputs(spark, cfg), str(tmp / "prepared"))
    events = spark.read.parquet(f"{raw}/events").toPandas()
    cand = spark.read.parquet(*[str(tmp / "prepared" / "candidates" / s) for s in S.SPLITS]).toPandas()
    rank = spark.read.parquet(*[str(tmp / "prepared" / "ranking" / s) for s in S.SPLITS]).toPandas()
    vocab = {n: json.loads((tmp / "prepared" / "vocab" / f"{n}.json").read_text())["values"] for n in ("video", "token")}
    return {"counts": counts, "manifest": m, "events": events, "cand": cand, "rank": rank, "vocab": vocab}


def test_counts_match_the_generator(world):
    m, c = world["manifest"], world["counts"]
    assert m["tables"]["events"]["input"] == c["events"] and m["tables"]["events"]["rejected"] == 0
    assert m["events_by_type"] == {k: c[k] for k in ("watch", "search", "impression")}
    assert sum(m["ranking"].values()) == c["impression"]  # one ranking row per impression
    assert m["candidates"]["test"] == c["users"]  # every generated user has >= 3 watches


def test_every_row_sees_exactly_the_events_strictly_before_its_label(world):
    ev = world["events"]
    vid = {v: i + 2 for i, v in enumerate(world["vocab"]["video"])}
    tok = {v: i + 2 for i, v in enumerate(world["vocab"]["token"])}
    by_user = {u: g.sort_values("event_ts") for u, g in ev.groupby(S.USER_ID)}
    checked = 0
    for r in world["cand"].itertuples(index=False):
        g = by_user[r.user_id]
        before = g[g[S.EVENT_TS] < r.label_ts]
        w = before[before[S.EVENT_TYPE] == "watch"]
        expect_w = [vid.get(v, S.OOV) for v in w[S.VIDEO_ID]][::-1][:H]
        assert [int(x) for x in r.watch_hist if x != 0] == expect_w
        toks = [tok.get(t, S.OOV) for q in before[before[S.EVENT_TYPE] == "search"][S.QUERY] for t in tokenize(q)]
        assert [int(x) for x in r.search_hist if x != 0] == toks[::-1][:H]
        checked += 1
    assert checked == len(world["cand"]) > 0


def test_cap_and_split_per_user(world):
    cand = world["cand"]
    per_user = cand[cand[S.SPLIT] == "train"].groupby(S.USER_ID).size()
    assert per_user.max() <= CAP
    assert (per_user == CAP).mean() > 0.3  # the cap binds for many users on this data
    last = world["events"][world["events"][S.EVENT_TYPE] == "watch"].groupby(S.USER_ID)[S.EVENT_TS].max()
    test = cand[cand[S.SPLIT] == "test"].set_index(S.USER_ID)[S.CAND_LABEL_TS]
    assert np.allclose(test.sort_index().to_numpy(), last.loc[test.sort_index().index].to_numpy())
    val_ts = cand[cand[S.SPLIT] == "val"].set_index(S.USER_ID)[S.CAND_LABEL_TS]
    train_max = cand[cand[S.SPLIT] == "train"].groupby(S.USER_ID)[S.CAND_LABEL_TS].max()
    common = train_max.index.intersection(val_ts.index)
    assert (train_max.loc[common] <= val_ts.loc[common]).all()
