"""Evaluation: metrics with hand-computed answers, the protocol on a prepared hand-built log, baselines, report."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from helpers import make_config, watch, write_jsonl

from ytspark.evaluate.baselines import popularity_scores, popularity_topk
from ytspark.evaluate.metrics import hr_curve, popularity_percentiles, ranking_metrics
from ytspark.evaluate.protocol import EvalSet
from ytspark.evaluate.report import write_report
from ytspark.evaluate.retrieval import topk_excluding


def _evalset(labels, seen, counts, split="test") -> EvalSet:
    indptr = np.zeros(len(seen) + 1, np.int64)
    np.cumsum([len(s) for s in seen], out=indptr[1:])
    flat = np.concatenate([np.asarray(sorted(s), np.int64) for s in seen]) if indptr[-1] else np.zeros(0, np.int64)
    return EvalSet(split, np.array([f"u{i}" for i in range(len(labels))], object), np.asarray(labels, np.int64),
                   indptr, flat, np.array([len(s) for s in seen], np.int64), np.asarray(counts, np.int64),
                   len(counts))


# ------------------------------------------------------------------ metrics (no Spark)

def test_metrics_known_ranks():
    # catalogue = indices 2..9; counts give percentiles; user 2's label is seen (unreachable)
    es = _evalset(labels=[5, 7, 3], seen=[[2], [], [3]], counts=[0, 0, 8, 1, 1, 5, 0, 0, 0, 0])
    topk = np.array([[5, 6, 7],     # rank 0
                     [4, 5, 7],     # rank 2
                     [6, 0, 0]])    # label 3 is seen: miss; pads are empty slots
    m = ranking_metrics(topk, es, ks=(1, 3), coverage_k=2)
    assert m["hr@1"] == pytest.approx(1 / 3)
    assert m["hr@3"] == pytest.approx(2 / 3)
    assert m["ndcg@1"] == pytest.approx(1 / 3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3) / 3)
    assert m["coverage@2"] == pytest.approx(3 / 8)  # {4, 5, 6} in the top 2 over 8 videos
    pct = popularity_percentiles(es.item_counts)
    # counts over the catalogue [8,1,1,5,0,0,0,0]: 5 -> (6 less + 0.5) / 8, 1 -> (4 + 1) / 8, 0 -> 2 / 8
    assert pct[5] == pytest.approx(6.5 / 8) and pct[4] == pytest.approx(5 / 8) and pct[6] == pytest.approx(2 / 8)
    assert m["pop_pct@2"] == pytest.approx((pct[5] + pct[6] + pct[4] + pct[5] + pct[6]) / 5)
    assert m["unreachable"] == pytest.approx(1 / 3) and m["n"] == 3
    assert hr_curve(topk, es) == [(1, pytest.approx(1 / 3)), (2, pytest.approx(1 / 3)), (3, pytest.approx(2 / 3))]


def test_metrics_agree_with_the_torch_helper():
    from ytspark.models.metrics import hit_rate_ndcg

    rng = np.random.default_rng(3)
    B, V, K = 200, 60, 20
    seen = [rng.choice(np.arange(2, V), size=rng.integers(0, 10), replace=False) for _ in range(B)]
    labels = rng.integers(1, V, size=B)
    es = _evalset(labels, seen, rng.integers(0, 50, V))
    scores = rng.normal(size=(B, V))
    scores[np.arange(B), labels] += 2.0  # some hits
    topk = topk_excluding(lambda a, b: scores[a:b], es, K, chunk_users=7)
    ours = ranking_metrics(topk, es, ks=(5, 10, 20))
    ref = hit_rate_ndcg(topk, labels, (5, 10, 20), exclude=[es.seen(b) for b in range(B)])
    assert ours["hr@10"] > 0.1
    for key in ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key


@pytest.mark.parametrize("topk, message", [
    (np.array([[4, 2, 5]]), "already watched"),
    (np.array([[4, 5, 4]]), "same video twice"),
    (np.array([[4, 1, 5]]), "OOV"),
    (np.array([[4, 5, 12]]), "outside"),
    (np.array([[4, 5]]), "K=2 < max"),
])
def test_bad_lists_raise(topk, message):
    es = _evalset(labels=[5], seen=[[2, 3]], counts=[0, 0, 1, 1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match=message):
        ranking_metrics(topk, es, ks=(1, 3))


def test_topk_excluding_is_exact_and_pads():
    es = _evalset(labels=[2, 3], seen=[[4], [2, 3, 4]], counts=[0] * 6)
    scores = np.array([[9.0, 9.0, 1.0, 3.0, 5.0, 3.0],   # pad/OOV never returned; 4 seen
                       [0.0, 0.0, 4.0, 3.0, 2.0, 1.0]])  # only video 5 left: the rest is pad
    got = topk_excluding(lambda a, b: scores[a:b], es, k=3, chunk_users=1)
    assert got.tolist() == [[3, 5, 2], [5, 0, 0]]  # tie 3.0: lower index first


def test_popularity_order_and_seen_exclusion():
    es = _evalset(labels=[3, 2], seen=[[2], []], counts=[0, 0, 5, 2, 2, 9])
    assert popularity_topk(es, 4).tolist() == [[5, 3, 4, 0], [5, 2, 3, 4]]
    assert np.argsort(-popularity_scores(es.item_counts))[:4].tolist() == [5, 2, 3, 4]


# ------------------------------------------------------------------ report

def test_report_files_and_atomic_replace(tmp_path):
    out = tmp_path / "report"
    metrics = {"popularity": {"hr@10": 0.04, "n": 3}, "als": {"hr@10": 0.08, "n": 3}}
    hr = {"popularity": [(1, 0.01), (10, 0.04)], "als": [(1, 0.02), (10, 0.08)]}
    curves = {"candidate": [{"epoch": 1, "loss": 3.0, "val_hr@10": 0.05}, {"epoch": 2, "loss": 2.5, "val_hr@10": 0.07}]}
    cal = {"ranker": {"rows": [(0, 2.0, 1.5, 10), (1, 9.0, 11.0, 10)], "x": "predicted s", "y": "observed s"}}
    md = write_report(str(out), metrics, curves, hr, {"ALS grid": [{"rank": 32, "hr@10": 0.07}]}, calibration=cal)
    text = open(md).read()
    assert "![calibration](calibration.png)" in text and "| 1 | 9 | 11 | 10 |" in text
    assert (out / "calibration.png").stat().st_size > 1000
    assert "| system | hr@10 | n |" in text and "| als | 0.0800 | 3 |" in text and "## ALS grid" in text
    assert (out / "hr_at_k.png").stat().st_size > 1000 and (out / "curves.png").stat().st_size > 1000
    assert json.loads((out / "metrics.json").read_text())["metrics"]["als"]["hr@10"] == 0.08
    assert (out / "metrics.csv").read_text().splitlines()[0] == "system,hr@10,n"
    with pytest.raises(ValueError):
        write_report(str(out), {"x": {"hr@10": 1.0}}, None, {"x": [(1,)]})  # bad curve points
    assert "| als | 0.0800 | 3 |" in (out / "report.md").read_text()  # the old report is intact
    assert sorted(os.listdir(tmp_path)) == ["report"]  # no temporary folder left behind


# ------------------------------------------------------------------ protocol and baselines on prepared logs

# u1: A B C A D (re-watch A is the val target: seen, unreachable; test D). u2: B C E. u3: two watches (test
# only). u4: one watch (no target). u6: D E D A B. Training-vocab counts A 2, B 2, C 2, D 2, E 1 -> indices
# A2 B3 C4 D5 E6.
PROTOCOL_LOG = (
    [watch("u1", d, v) for d, v in enumerate("ABCAD", start=1)]
    + [watch("u2", 1, "B"), watch("u2", 2, "C"), watch("u2", 3, "E")]
    + [watch("u3", 1, "A"), watch("u3", 2, "B"), watch("u4", 1, "C")]
    + [watch("u6", d, v) for d, v in enumerate("DEDAB", start=1)]
)


def _prepare(spark, tmp_path, rows, *extra):
    from ytspark.prepare import read_inputs, run_prepare

    events = write_jsonl(tmp_path / "raw" / "events.jsonl", rows)
    cfg = make_config(f'data.events="{events}"', "prepare.history_length=4", *extra)
    out = str(tmp_path / "prepared")
    run_prepare(spark, cfg, read_inputs(spark, cfg), out)
    return cfg, out


@pytest.mark.spark
def test_protocol_targets_seen_sets_and_popularity(spark, tmp_path):
    from ytspark.evaluate.protocol import fit_watches, load_eval_sets

    _, prepared = _prepare(spark, tmp_path, PROTOCOL_LOG)
    sets = load_eval_sets(spark, prepared)
    val, test = sets["val"], sets["test"]
    assert test.user_ids.tolist() == ["u1", "u2", "u3", "u6"] and val.user_ids.tolist() == ["u1", "u2", "u6"]
    assert test.labels.tolist() == [5, 6, 3, 3] and val.labels.tolist() == [2, 4, 2]
    assert [test.seen(b).tolist() for b in range(4)] == [[2, 3, 4], [3, 4], [2], [2, 5, 6]]
    assert [val.seen(b).tolist() for b in range(3)] == [[2, 3, 4], [3], [5, 6]]
    assert test.n_train_watches.tolist() == [4, 2, 1, 4] and val.n_train_watches.tolist() == [3, 1, 3]
    assert val.item_counts.tolist() == [0, 0, 2, 2, 2, 2, 1] and test.item_counts.tolist() == [0, 0, 4, 2, 3, 2, 1]
    fit = {(r["user_id"], r["video_idx"]): r["count"] for r in fit_watches(spark, prepared, "test").collect()}
    assert fit[("u1", 2)] == 2 and ("u1", 5) not in fit and fit[("u4", 4)] == 1 and sum(fit.values()) == 12

    # popularity on test: order A(4) C(3) B(2) D(2) E(1), each user's seen removed
    top = popularity_topk(test, 5)
    assert top.tolist() == [[5, 6, 0, 0, 0], [2, 5, 6, 0, 0], [4, 3, 5, 6, 0], [4, 3, 0, 0, 0]]
    m = ranking_metrics(top, test, ks=(1, 2, 3))  # label ranks 0, 2, 1, 1
    assert (m["hr@1"], m["hr@2"], m["hr@3"]) == pytest.approx((1 / 4, 3 / 4, 1.0))
    assert m["ndcg@2"] == pytest.approx((1 + 2 / math.log2(3)) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1 / 2) / 4)
    assert ranking_metrics(popularity_topk(val, 3), val, ks=(1, 3))["unreachable"] == pytest.approx(1 / 3)


@pytest.mark.spark
def test_same_second_targets_follow_prepare(spark, tmp_path):
    """Whichever of two same-second last watches prepare made the test target, the other is seen, not held out."""
    from ytspark.evaluate.protocol import load_eval_sets, load_video_vocab

    log = [watch("u1", d, v) for d, v in ((1, "A"), (2, "B"), (3, "C"), (3, "D"))]
    log += [watch("u2", d, v) for d, v in ((1, "C"), (1, "D"), (2, "A"), (3, "B"), (4, "A"))]
    _, prepared = _prepare(spark, tmp_path, log)
    sets, vocab = load_eval_sets(spark, prepared), load_video_vocab(spark, prepared)
    idx = {v: vocab.index(v) for v in "ABCD"}
    test, val = sets["test"], sets["val"]
    t, v = int(test.labels[0]), int(val.labels[0])
    assert {t, v} == {idx["C"], idx["D"]}
    assert test.seen(0).tolist() == sorted([idx["A"], idx["B"], v]) and test.n_train_watches[0] == 3
    assert val.seen(0).tolist() == sorted([idx["A"], idx["B"]]) and val.n_train_watches[0] == 2
    assert test.labels[1] == idx["A"] and test.seen(1).tolist() == sorted(idx.values())  # re-watch: unreachable


def _block_log(n_users=12, n_videos=15, per_user=10, seed=5):
    """Two groups: users gX_* watch only videos gX_v*, in a seeded random order, one a day."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in (0, 1):
        for u in range(n_users):
            for d, v in enumerate(rng.choice(n_videos, size=per_user, replace=False), start=1):
                rows.append(watch(f"g{g}_u{u:02d}", d, f"g{g}_v{v:02d}"))
    return rows


@pytest.mark.spark
@pytest.mark.slow
def test_baselines_job_on_planted_blocks(spark, tmp_path):
    """Rank-2 ALS recommends only videos of the user's own block (two planted blocks).

    The job also tunes on the validation target, accepts another system's lists and writes the report.
    """
    from ytspark.evaluate.job import add_system, run_baselines
    from ytspark.evaluate.protocol import load_video_vocab

    cfg, prepared = _prepare(spark, tmp_path, _block_log(), "evaluate.topk=5", "evaluate.ks=[1, 5]",
                             "evaluate.coverage_k=5", "evaluate.als_ranks=[2]", "evaluate.als_reg_params=[0.1]",
                             "evaluate.als_alphas=[1.0, 10.0]", "evaluate.als_max_iter=6")
    ev = run_baselines(spark, cfg, prepared, str(tmp_path / "report"))
    vocab = load_video_vocab(spark, prepared)
    test = ev.sets["test"]
    als = ev.topk["als"]["test"]
    assert als.shape == (24, 5) and (als >= 2).all()
    for b, user in enumerate(test.user_ids):
        assert {vocab.value(int(i))[:2] for i in als[b]} == {user[:2]}, user  # own block only
    pop = ev.topk["popularity"]["test"]
    assert any({vocab.value(int(i))[:2] for i in pop[b]} != {u[:2]} for b, u in enumerate(test.user_ids))
    grid = ev.details["ALS grid (fitted on train watches, scored on the validation target)"]
    assert [r["alpha"] for r in grid] == [1.0, 10.0]
    assert ev.metrics["als"]["test"]["hr@5"] >= ev.metrics["popularity"]["test"]["hr@5"]
    oracle = np.array([[lab] + [x for x in pop[b] if x != lab][:4] for b, lab in enumerate(test.labels)])
    add_system(ev, "oracle", {"test": oracle}, cfg.evaluate)  # another system joins the same run
    assert ev.metrics["oracle"]["test"]["hr@1"] == pytest.approx(1 - ev.metrics["oracle"]["test"]["unreachable"])
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| als |" in report and "| popularity |" in report and (tmp_path / "report" / "hr_at_k.png").exists()


def test_indexed_interactions_number_users_densely_in_id_order(spark):
    """ALS's integer user index: 0..n-1 over the sorted user ids, every row keeping its own user and counts."""
    from ytspark import schema as S
    from ytspark.evaluate.baselines import indexed_interactions
    from ytspark.evaluate.protocol import COUNT

    rows = [("u3", 5, 2.0), ("u10", 7, 1.0), ("u1", 5, 1.0), ("u3", 9, 4.0), ("u2", 2, 1.0), ("u10", 2, 3.0)]
    fit = spark.createDataFrame(rows, [S.USER_ID, S.VIDEO_IDX, COUNT]).repartition(3)
    got = indexed_interactions(fit).toPandas()
    order = sorted({u for u, _, _ in rows})  # string order: u1 < u10 < u2 < u3
    assert dict(zip(got[S.USER_ID], got[S.USER_IDX])) == {u: i for i, u in enumerate(order)}
    assert sorted(zip(got[S.USER_ID], got[S.VIDEO_IDX], got[COUNT])) == sorted(rows)
    assert str(got[S.USER_IDX].dtype) == "int32"


@pytest.mark.spark
@pytest.mark.slow
def test_als_grid_fitted_in_parallel_gives_the_figures_and_choice_of_one_at_a_time(spark, tmp_path):
    """Grid points fitted from several driver threads at once: the same rows, in grid order, the same choice
    and the same validation lists as fitting them one by one. On this log the first two points tie on HR@1,
    the selection metric here, and the earlier one must win whichever thread finishes first."""
    from ytspark.evaluate.baselines import als_grid, tune_als
    from ytspark.evaluate.protocol import load_eval_sets

    _, prepared = _prepare(spark, tmp_path, _block_log(n_users=10, seed=9))
    val = load_eval_sets(spark, prepared)["val"]
    grid = als_grid([2, 4], [0.1], [1.0, 10.0], max_iter=4, seed=3)

    def run(parallelism):
        best, rows, topk = tune_als(spark, prepared, val, grid, 5, (1, 5), "hr@1", parallelism=parallelism)
        return best, [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows], topk

    one, many = run(1), run(4)
    assert [(r["rank"], r["alpha"]) for r in many[1]] == [(2, 1.0), (2, 10.0), (4, 1.0), (4, 10.0)]
    hr = [r["hr@1"] for r in one[1]]
    assert hr[0] == hr[1] == max(hr) > hr[2]  # the tie this test is about
    assert one[0] == grid[0]  # ties keep the earlier grid point
    assert many[0] == one[0] and many[1] == one[1]
    np.testing.assert_array_equal(many[2], one[2])
    with pytest.raises(ValueError, match="evaluate.als_parallelism"):
        tune_als(spark, prepared, val, grid, 5, (1, 5), "hr@1", parallelism=0)


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.movielens
def test_baselines_on_movielens(spark, ml_small, tmp_path):
    from ytspark.evaluate.job import run_baselines
    from ytspark.movielens import read_movielens
    from ytspark.prepare import run_prepare

    cfg = make_config("evaluate.als_ranks=[32]", "evaluate.als_reg_params=[0.1]", "evaluate.als_alphas=[10.0]")
    prepared = str(tmp_path / "ml")
    run_prepare(spark, cfg, read_movielens(spark, str(ml_small)), prepared)
    ev = run_baselines(spark, cfg, prepared)
    pop, als = ev.metrics["popularity"]["test"], ev.metrics["als"]["test"]
    assert pop["n"] == als["n"] == 610
    assert 0.02 < pop["hr@10"] < 0.07 and als["hr@10"] > pop["hr@10"] and als["hr@50"] > pop["hr@50"]


# ------------------------------------------------------------------ both objectives: impressions and list shape

def test_user_auc_and_watch_ndcg_by_hand():
    from ytspark.models.rank_metrics import impression_metrics, user_auc, watch_ndcg, weighted_per_user_loss

    # user a: scores 3, 2, 1 with the 10 s watch in the middle: DCG 10/log2(3), ideal 10 -> 1/log2(3);
    #   pairs (clicked 2 vs 3: wrong, vs 1: right) -> 1 of 2
    # user b: two rows tied at 1.0, the watched one first or second at random: mean discount (1 + 1/log2 3) / 2;
    #   one pair, tied -> half
    # user c: nothing watched: left out of both
    users = ["a", "a", "a", "b", "b", "c"]
    scores = [3.0, 2.0, 1.0, 1.0, 1.0, 0.5]
    clicked = [0, 1, 0, 1, 0, 0]
    watch = [0.0, 10.0, 0.0, 5.0, 0.0, 0.0]
    n = watch_ndcg(users, scores, watch)
    assert n["n_users"] == 2
    assert n["watch_ndcg"] == pytest.approx((1 / math.log2(3) + (1 + 1 / math.log2(3)) / 2) / 2)
    assert user_auc(users, scores, clicked) == pytest.approx((1 + 0.5) / 3)
    assert user_auc(users, scores, clicked) == pytest.approx(
        1 - weighted_per_user_loss(users, scores, clicked, np.ones(6))["weighted_per_user_loss"])
    m = impression_metrics(users, scores, clicked, watch)
    # wpul: a's pairs weigh 10 each (1 wrong of 2), b's one pair 5 (tied: half) -> (10 + 2.5) / 25
    assert m["wpul"] == pytest.approx(12.5 / 25) and m["impressions"] == 6 and m["impression_users"] == 2
    perfect = impression_metrics(users, [0, 9, 0, 2, 1, 0], clicked, watch)
    assert perfect["watch_ndcg"] == pytest.approx(1.0) and perfect["auc"] == 1.0 and perfect["wpul"] == 0.0


def test_watch_ndcg_of_a_larger_slate_matches_a_brute_force():
    from ytspark.models.rank_metrics import watch_ndcg

    rng = np.random.default_rng(3)
    users = rng.integers(0, 30, 600).astype(str)
    scores = np.round(rng.normal(size=600), 1)  # ties are common
    watch = np.where(rng.random(600) < 0.2, rng.uniform(1, 100, 600), 0.0)
    vals = []
    for u in np.unique(users):
        s, t = scores[users == u], watch[users == u]
        if t.sum() == 0:
            continue
        # expected DCG over random tie-breaks, by averaging 200 shuffled tie orders would be noisy: exact instead
        order = np.argsort(-s, kind="stable")
        disc = 1 / np.log2(np.arange(len(s)) + 2)
        dcg = 0.0
        for v in np.unique(s[order]):
            pos = np.flatnonzero(s[order] == v)
            dcg += t[order][pos].sum() * disc[pos].mean()
        vals.append(dcg / (np.sort(t)[::-1] * disc).sum())
    assert watch_ndcg(users, scores, watch)["watch_ndcg"] == pytest.approx(np.mean(vals))


def test_list_concentration_by_channel_and_exposure_gini_by_hand():
    from ytspark.evaluate.metrics import exposure_gini, top_channel_share

    channel_of = np.array([-1, -1, 0, 0, 1, 2, -1])  # videos 2, 3 on channel 0; 4, 5 their own; 6 unknown
    topk = np.array([[2, 3, 4],    # channel 0 twice of 3 -> 2/3
                     [4, 5, 6],    # 1 and 2 of the 2 known -> 1/2
                     [6, 0, 0]])   # nothing known: left out
    assert top_channel_share(topk, channel_of, 3) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert top_channel_share(topk, channel_of, 1) == pytest.approx(1.0)
    assert math.isnan(top_channel_share(topk, np.full(7, -1), 3))  # no channels (MovieLens): n/a
    # exposure over the 5 catalogue videos: 2:1, 3:1, 4:2, 5:1, 6:2 -> sorted 1,1,1,2,2 (sum 7)
    # Gini = 2 * (1 + 2 + 3 + 8 + 10) / (5 * 7) - 6 / 5
    assert exposure_gini(topk, 7, 3) == pytest.approx(2 * 24 / 35 - 6 / 5)
    assert exposure_gini(np.array([[2], [3], [4], [5], [6]]), 7, 1) == pytest.approx(0.0)
    assert exposure_gini(np.array([[2], [2]]), 7, 1) == pytest.approx(4 / 5)  # one video takes every slot
    es = _evalset(labels=[2, 4, 6], seen=[[], [], []], counts=[0, 0, 1, 1, 1, 1, 1])
    m = ranking_metrics(topk, es, ks=(1, 3), coverage_k=3, channel_of=channel_of)
    assert m["top_channel@3"] == pytest.approx((2 / 3 + 1 / 2) / 2) and m["gini@3"] == pytest.approx(2 * 24 / 35 - 6 / 5)


def test_held_out_matrix_and_scores_from_a_block():
    from ytspark.evaluate.impressions import HeldOut

    h = HeldOut(rows=np.array([0, 0, 2]), video=np.array([3, 5, 4]), clicked=np.array([1, 0, 0]),
                watch_seconds=np.array([7.0, 0.0, 0.0]))
    shown, at = h.matrix(3)
    assert shown.tolist() == [[3, 5], [0, 0], [4, 0]] and shown.ravel()[at].tolist() == [3, 5, 4]
    table = np.arange(3 * 6, dtype=np.float64).reshape(3, 6)  # score of (user b, video v) = 6b + v
    assert h.scores(lambda a, b: table[a:b], 3, chunk=2).tolist() == [3.0, 5.0, 16.0]


@pytest.mark.spark
def test_held_out_impressions_are_the_target_days_without_known_labels(spark, tmp_path):
    """u1's test target is D (day 5): the held-out rows are the target day's impressions, without the clicked
    one of B (watched before: its label is in every system's fit data); the day before and after are out."""
    from helpers import impression

    from ytspark.evaluate.impressions import load_held_out
    from ytspark.evaluate.protocol import load_eval_sets, load_video_vocab

    log = PROTOCOL_LOG + [impression("u1", 4.95, "D", 1, 80.0), impression("u1", 4.96, "E", 0),
                          impression("u1", 4.97, "B", 1, 50.0), impression("u1", 4.98, "C", 0),
                          impression("u1", 4.0, "E", 0), impression("u1", 5.1, "A", 0),
                          impression("u2", 2.0, "A", 0)]  # u2's target is day 3: the UTC day before
    _, prepared = _prepare(spark, tmp_path, log)
    test = load_eval_sets(spark, prepared)["test"]
    idx = load_video_vocab(spark, prepared).index
    h = load_held_out(spark, prepared, test)
    assert h.rows.tolist() == [0, 0, 0]  # u1 is row 0
    assert h.video.tolist() == [idx("D"), idx("E"), idx("C")]
    assert h.clicked.tolist() == [1, 0, 0] and h.watch_seconds.tolist() == [80.0, 0.0, 0.0]
    assert load_held_out(spark, str(_prepare(spark, tmp_path / "none", PROTOCOL_LOG)[1]),
                         test) is None  # no impressions
