"""Nightly scoring: FAISS against brute force, serving rows against training rows, the job end to end.

The world: seeded hand-written logs (40 users, 60 videos, watches with
timestamp ties, searches, impressions, cold users) run through the real
``prepare``, and seeded random models published with ``write_model_dir``.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import DAY, T0, write_jsonl
from score_world import (
    FEATURES, H, K, N, RUN_DATE, assert_same_rows, read_lists, reference_rows, serving_rows, world_logs,
)

from ytspark import schema as S
from ytspark.score import index as ix


# ------------------------------------------------------------------ FAISS: known answers, no Spark

def _table(seed: int, V: int = 3000, D: int = 17) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((V, D)).astype(np.float32)
    x[:2] = 0.0
    return x


def _topk(q: np.ndarray, x: np.ndarray, k: int, exclude: list[np.ndarray] | None = None):
    logits = torch.from_numpy(q) @ torch.from_numpy(x).T
    logits[:, :2] = float("-inf")
    if exclude is not None:
        for i, e in enumerate(exclude):
            logits[i, torch.from_numpy(e)] = float("-inf")
    s, i = torch.topk(logits, k)
    return s.numpy(), i.numpy()


def test_flat_search_equals_torch_topk():
    x = _table(0)
    q = np.random.default_rng(1).standard_normal((50, x.shape[1])).astype(np.float32)
    s, i = ix.search(ix.build_index(x, "flat"), q, 20)
    ts, ti = _topk(q, x, 20)
    np.testing.assert_array_equal(i, ti)
    np.testing.assert_allclose(s, ts, rtol=1e-5, atol=1e-5)
    assert i.min() >= 2  # pad and OOV rows are not in the index


def test_search_excludes_watched_and_still_returns_k():
    x = _table(2)
    rng = np.random.default_rng(3)
    q = rng.standard_normal((40, x.shape[1])).astype(np.float32)
    _, best = _topk(q, x, 60)
    # user i excludes i of its own top 60 (so exclusions really bite) plus random ids; user 7 excludes 300
    exclude = [np.unique(np.concatenate([best[j, :j], rng.integers(2, len(x), 5)])) for j in range(40)]
    exclude[7] = np.unique(np.concatenate([best[7], rng.choice(np.arange(2, len(x)), 300, replace=False)]))
    indptr = np.concatenate([[0], np.cumsum([len(e) for e in exclude])])
    s, i = ix.search(ix.build_index(x, "flat"), q, 25, (indptr, np.concatenate(exclude)))
    ts, ti = _topk(q, x, 25, exclude)
    np.testing.assert_array_equal(i, ti)
    np.testing.assert_allclose(s, ts, rtol=1e-5, atol=1e-5)
    for row, e in zip(i, exclude):
        assert not set(row.tolist()) & set(e.tolist())


def test_search_pads_when_the_corpus_runs_out():
    x = _table(4, V=12)
    q = np.ones((2, x.shape[1]), np.float32)
    s, i = ix.search(ix.build_index(x), q, 8, (np.array([0, 3, 3]), np.array([2, 3, 4])))
    assert (i[0] >= 0).sum() == 7 and i[0, 7] == -1 and s[0, 7] == -np.inf  # 10 videos, 3 excluded
    assert (i[1] >= 0).sum() == 8


@pytest.mark.parametrize("kind,params,bound", [("ivf", {"nlist": 64, "nprobe": 4}, 0.95),
                                               ("hnsw", {"hnsw_m": 32, "ef_construction": 80, "ef_search": 256}, 0.95)])
def test_approximate_index_recall_above_bound(kind, params, bound):
    # Clustered vectors (what trained embeddings look like): 40 topics, videos and users near them.
    # Measured on this seed: ivf 0.99, hnsw 0.97 (and ivf with nprobe=2: 0.94, hnsw with m=16: 0.93).
    rng = np.random.default_rng(5)
    centers = rng.standard_normal((40, 16)).astype(np.float32) * 3
    x = (centers[rng.integers(0, 40, 10000)] + rng.standard_normal((10000, 16))).astype(np.float32)
    x[:2] = 0
    q = (centers[rng.integers(0, 40, 300)] + rng.standard_normal((300, 16))).astype(np.float32)
    index = ix.build_index(x, kind, **params)
    assert ix.index_kind(index) == kind
    recall = ix.measure_recall(index, ix.build_index(x, "flat"), q, 50)
    assert recall >= bound, f"{kind} recall@50 {recall:.3f} below {bound}"
    copy = ix.deserialize(ix.serialize(index))  # what executors receive
    np.testing.assert_array_equal(ix.search(copy, q[:20], 10)[1], ix.search(index, q[:20], 10)[1])


def test_build_index_rejects_unknown_kind():
    with pytest.raises(ValueError, match="score.index"):
        ix.build_index(_table(0), "lsh")


# ------------------------------------------------------------------ serving rows = training rows

def test_serving_rows_equal_prepared_training_rows(spark, world):
    """The prepared val/test rows are what serving sees at the label's timestamp (example age aside)."""
    cand = pd.concat([pd.read_parquet(Path(world["prepared"], "candidates", s)) for s in ("val", "test")])
    picks = cand.sort_values([S.USER_ID, S.CAND_LABEL_TS]).groupby(S.SPLIT).nth([3, 11, 25])
    assert len(picks) == 6
    for _, row in picks.iterrows():
        got = serving_rows(spark, world, float(row[S.CAND_LABEL_TS]))
        assert_same_rows(got[row[S.USER_ID]], row, row[S.USER_ID])


@pytest.mark.parametrize("day", [12.0, 40.0])
def test_serving_rows_equal_user_candidate_rows_for_every_user(spark, world, day):
    as_of = T0 + day * DAY
    got = serving_rows(spark, world, as_of)
    cand = pd.concat([pd.read_parquet(Path(world["prepared"], "candidates", s)) for s in S.SPLITS])
    demo = cand.groupby(S.USER_ID)[[S.USER_AGE, *S.DEMOGRAPHIC_COLUMNS]].first()
    ref = reference_rows(world, as_of, demo)
    assert set(ref) <= set(got)
    for uid, row in ref.items():
        assert_same_rows(got[uid], row, uid)
    # users with no event before as_of still get a row: empty history, their demographics
    cold = got["c1"]
    assert list(cold[S.CAND_WATCH_HIST]) == [0] * H and cold[S.CAND_N_WATCHES] == 0
    assert cold[S.CAND_SINCE_LAST] == -1.0 and cold["country_idx"] >= 2 and cold[S.USER_AGE] == 20.0
    seen = sorted({int(v) for v in world["vocab"]["video"].lookup(
        world["events"].query(f"user_id == 'u00' and event_type == 'watch' and event_ts < {as_of}")[S.VIDEO_ID])
        if v >= 2})
    assert list(got["u00"]["seen"]) == seen


def test_serving_rows_reject_a_bad_run_date():
    from ytspark.score.features import as_of_ts

    assert as_of_ts("2023-11-14") == 1_700_006_400.0  # 2023-11-15 00:00 UTC
    with pytest.raises(ValueError, match="score.run_date"):
        as_of_ts("20231114")


# ------------------------------------------------------------------ the job end to end

def test_every_user_gets_ranks_1_to_n_exactly_once(world, scored):
    df = scored["df"]
    from ytspark.schema import RECOMMENDATIONS_SCHEMA

    assert list(df.columns) == RECOMMENDATIONS_SCHEMA.names
    assert set(df[S.USER_ID]) == world["users"]
    for uid, g in df.groupby(S.USER_ID):
        assert list(g["rank"]) == list(range(1, N + 1)), uid
        assert g[S.VIDEO_ID].is_unique, uid
    m = scored["manifest"]
    assert m["users"] == m["users_with_list"] == len(world["users"]) and m["rows"] == len(df)
    assert m["short_lists"] == 0 and (df["model_version"] == "cand-1").all() and (df["run_date"] == RUN_DATE).all()
    assert 0 < m["coverage"]["share"] <= 1 and m["coverage"]["catalogue"] == len(world["vocab"]["video"]) - 2
    assert m["model_builds"] <= 2  # once per Python worker (local[2]), not per partition (4) or batch


def test_watched_videos_never_recommended(world, scored):
    ev = world["events"]
    watched = set(zip(ev[ev[S.EVENT_TYPE] == "watch"][S.USER_ID], ev[ev[S.EVENT_TYPE] == "watch"][S.VIDEO_ID]))
    got = set(zip(scored["df"][S.USER_ID], scored["df"][S.VIDEO_ID]))
    assert not watched & got
    assert len(watched) > 200  # the check has teeth


def test_cold_users_get_flagged_fallback_lists(world, scored):
    df = scored["df"].set_index(S.USER_ID)
    ev = world["events"]
    vocab = world["vocab"]["video"]
    watches = ev[ev[S.EVENT_TYPE] == "watch"].drop_duplicates([S.USER_ID, S.VIDEO_ID])

    def by_popularity(users=None):
        w = watches if users is None else watches[watches[S.USER_ID].isin(users)]
        counts = w.groupby(S.VIDEO_ID).size()
        vids = vocab.values if users is None else list(counts.index)
        return sorted((v for v in vids if vocab.index(v) >= 2), key=lambda v: (-counts.get(v, 0), vocab.index(v)))

    # c1 (NL, 20): the group's 4 most watched (score.demographic_list=4), then the global list
    group = by_popularity({"u03", "u06", "u09"})[:4]
    assert list(df.loc["c1", "source"]) == ["demographic"] * 4 + ["popular"]
    assert list(df.loc["c1", S.VIDEO_ID]) == group + [v for v in by_popularity() if v not in group][:1]
    assert list(df.loc["c1", "score"])[:4] == sorted(df.loc["c1", "score"][:4], reverse=True)
    # c2 (no country): most watched by distinct users, ties by vocabulary index
    assert set(df.loc["c2", "source"]) == {"popular"}
    assert list(df.loc["c2", S.VIDEO_ID]) == by_popularity()[:N]
    assert set(df.loc["s1", "source"]) == {"candidate"}  # searches alone are a usable history
    by_source = scored["manifest"]["users_by_source"]
    assert by_source == {"candidate": len(world["users"]) - 2, "demographic": 1, "popular": 1}


def test_candidate_lists_equal_brute_force_logits(spark, world, scored):
    from ytspark.models.export import load_candidate
    from ytspark.score.features import as_of_ts
    from ytspark.score.scorer import user_vectors

    model, _ = load_candidate(world["model"])
    rows = serving_rows(spark, world, as_of_ts(RUN_DATE))
    df = scored["df"].set_index(S.USER_ID)
    vocab = world["vocab"]["video"]
    checked = 0
    for uid in ("u00", "u07", "u13", "u21", "u39", "s1"):
        r = rows[uid]
        cols = {c: np.asarray([r[c]]) for c in FEATURES}
        with torch.no_grad():
            u = torch.from_numpy(user_vectors(model, cols))[:, :-1]
            logits = model.logits_full(u)[0]
        logits[list(r["seen"])] = float("-inf")
        s, i = torch.topk(logits, N)
        assert list(df.loc[uid, S.VIDEO_ID]) == [vocab.value(int(x)) for x in i], uid
        np.testing.assert_allclose(df.loc[uid, "retrieval_score"].to_numpy(), s.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(df.loc[uid, "score"].to_numpy(), df.loc[uid, "retrieval_score"].to_numpy())
        checked += 1
    assert checked == 6


def test_fused_covisitation_lists_equal_brute_force_fused_scores(spark, world, fused):
    from ytspark.models.export import load_candidate
    from ytspark.score import run_score
    from ytspark.score.features import as_of_ts
    from ytspark.score.scorer import user_vectors

    cv, mdir = fused
    model, _ = load_candidate(world["model"])
    out = str(world["tmp"] / "out_cv")
    m = run_score(spark, world["cfg"], world["prepared"], mdir, RUN_DATE, out)
    assert m["covisit_weight"] == 5.0
    df = read_lists(spark, f"{out}/recommendations/run_date={RUN_DATE}").set_index(S.USER_ID)
    rows = serving_rows(spark, world, as_of_ts(RUN_DATE))
    vocab = world["vocab"]["video"]
    moved = 0
    for uid, r in rows.items():
        if not (np.asarray(r[S.CAND_WATCH_HIST]) >= 2).any():
            continue
        cols = {c: np.asarray([r[c]]) for c in FEATURES}
        with torch.no_grad():
            u = torch.from_numpy(user_vectors(model, cols))[:, :-1]
            logits = model.logits_full(u)[0].double().numpy()
        term = cv.dense(cols[S.CAND_WATCH_HIST])[0]
        fused = logits + term
        fused[list(r["seen"])] = -np.inf
        want = np.argsort(-fused, kind="stable")[:N]
        want = want[np.isfinite(fused[want])]
        got = df.loc[[uid]]
        np.testing.assert_allclose(got["retrieval_score"].to_numpy(), fused[want], rtol=1e-4, atol=1e-4)
        assert set(got[S.VIDEO_ID]) == {vocab.value(int(x)) for x in want} or \
            np.allclose(np.sort(fused[want]), np.sort(fused[[vocab.index(v) for v in got[S.VIDEO_ID]]]))
        logits[list(r["seen"])] = -np.inf
        moved += set(np.argsort(-logits, kind="stable")[:N]) != set(want)
    assert moved >= 5, moved  # the fused term changes lists: the comparison is not the network's alone


def test_failed_run_leaves_previous_table_intact_and_rerun_is_identical(spark, world, scored):
    from ytspark.score import run_score

    path = Path(scored["path"])
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(Exception, match="injected failure"):
        run_score(spark, world["cfg"], world["prepared"], world["model"], RUN_DATE, scored["out"], fail_partition=2)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before  # untouched, byte for byte
    pd.testing.assert_frame_equal(read_lists(spark, str(path)), scored["df"])  # and readable
    assert sorted(os.listdir(path.parent)) == [f"run_date={RUN_DATE}"]  # no temporary left behind
    # a rerun with the same inputs and model replaces the table with the same rows
    m = run_score(spark, world["cfg"], world["prepared"], world["model"], RUN_DATE, scored["out"])
    again = read_lists(spark, str(path))
    pd.testing.assert_frame_equal(again, scored["df"])
    assert m["rows"] == scored["manifest"]["rows"]
    assert json.loads((path / "_manifest.json").read_text())["created_at"] == m["created_at"]
    assert (path / "_SUCCESS").exists()


# ------------------------------------------------------------------ serving rules and the catalog table

def test_serving_rules_filter_the_ranked_lists_and_the_manifest_counts_the_removals(spark, world, tmp_path):
    """The job with rules against the same job without them at N = K (each user's whole ranked list)
    filtered by a plain Python walk; exclusions by country, the video-age window and the channel cap."""
    from collections import Counter

    from ytspark.score import run_score
    from ytspark.score.features import as_of_ts
    from ytspark.score.rules import RULES

    full = run_score(spark, replace(world["cfg"], score=replace(world["cfg"].score, n=K)), world["prepared"],
                     world["model"], RUN_DATE, str(tmp_path / "full"))
    lists = read_lists(spark, full["path"])
    top = lists[lists["rank"] == 1][S.VIDEO_ID].value_counts().index.tolist()
    # the two videos most often ranked first: one out everywhere, one out in NL; plus rows that miss
    excl = [{"video_id": top[0]}, {"video_id": top[1], "country": "NL"}, {"video_id": "no-such-video"},
            {"country": "DE"}]
    excl_path = write_jsonl(tmp_path / "exclude" / "x.jsonl", excl)
    as_of = as_of_ts(RUN_DATE)
    max_days = (as_of - T0) / DAY + 6.5  # upload_ts = T0 - (i % 9) days: i % 9 in (7, 8) are too old
    cfg = replace(world["cfg"], score=replace(world["cfg"].score, exclude=excl_path, max_per_channel=1,
                                              max_video_age_days=max_days))
    m = run_score(spark, cfg, world["prepared"], world["model"], RUN_DATE, str(tmp_path / "ruled"))
    ruled = read_lists(spark, m["path"])
    country = {u["user_id"]: u.get("country") for u in world_logs()[1]}
    total, checked, short = Counter(), 0, 0
    for uid, g in lists.groupby(S.USER_ID):
        kept, removed = [], Counter()
        per_channel = Counter()
        for v in g[S.VIDEO_ID]:
            if len(kept) == N:
                break
            if v == top[0] or (v == top[1] and country.get(uid) == "NL"):
                removed["excluded"] += 1
            elif int(v[1:]) % 9 >= 7:
                removed["video_age"] += 1
            elif per_channel[int(v[1:]) % 7] >= 1:
                removed["channel_cap"] += 1
            else:
                per_channel[int(v[1:]) % 7] += 1
                kept.append(v)
        got = ruled[ruled[S.USER_ID] == uid]
        assert list(got["rank"]) == list(range(1, len(got) + 1)), uid
        if len(kept) == N or g["source"].iloc[0] == "candidate":  # cold users may fill past the first K
            assert list(got[S.VIDEO_ID]) == kept, uid
            total += removed
            checked += 1
            short += len(kept) < N
    assert checked == len(world["users"])
    assert m["rules"]["removed"] == {r: total.get(r, 0) for r in RULES}
    assert all(total[r] > 0 for r in RULES), total  # every rule struck something
    assert m["rules"]["exclude"] == {"source": excl_path, "rows": 4, "rows_without_video_id": 1,
                                     "not_in_catalogue": 1, "videos_everywhere": 1, "country_pairs": 1}
    assert top[0] not in set(ruled[S.VIDEO_ID])
    nl = ruled[ruled[S.USER_ID].map(country) == "NL"]
    assert top[1] not in set(nl[S.VIDEO_ID]) and top[1] in set(ruled[S.VIDEO_ID])
    assert m["short_lists"] == short  # too few allowed among the K: a short list, never a wrong one
    assert (ruled.groupby(S.USER_ID)["rank"].max() == N).sum() == len(world["users"]) - short


def test_catalog_table_partition_is_replaced_whole_and_survives_a_killed_write(spark, world, scored, tmp_path):
    from ytspark.score import run_score

    out = str(tmp_path / "out")
    table = "ytspark_test.recommendations"
    cfg = replace(world["cfg"], score=replace(world["cfg"].score, table=table))
    m = run_score(spark, cfg, world["prepared"], world["model"], RUN_DATE, out)
    assert m["table"] == table
    got = spark.table(table).where(f"run_date = '{RUN_DATE}'").toPandas().sort_values([S.USER_ID, "rank"])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), scored["df"])
    # a second date is a second partition of the same table
    run_score(spark, cfg, world["prepared"], world["model"], "2023-12-21", out)
    dates = {r[0] for r in spark.sql(f"SELECT DISTINCT run_date FROM {table}").collect()}
    assert dates == {RUN_DATE, "2023-12-21"}
    # a killed rerun of the date publishes nothing: the partition still serves the previous rows
    with pytest.raises(Exception, match="injected failure"):
        run_score(spark, replace(cfg, score=replace(cfg.score, n=2)), world["prepared"], world["model"], RUN_DATE,
                  out, fail_partition=1)
    spark.sql(f"REFRESH TABLE {table}")
    assert spark.table(table).where(f"run_date = '{RUN_DATE}'").count() == len(scored["df"])
    # a rerun with N = 2 replaces the partition whole: no row of the old N = 5 lists is left
    run_score(spark, replace(cfg, score=replace(cfg.score, n=2)), world["prepared"], world["model"], RUN_DATE, out)
    again = spark.table(table).where(f"run_date = '{RUN_DATE}'").toPandas()
    assert again["rank"].max() == 2 and len(again) == 2 * len(world["users"])
    assert spark.table(table).where("run_date = '2023-12-21'").count() == len(scored["df"])
    spark.sql(f"DROP TABLE {table}")
