"""The serving objective and blend (ytspark.models.blend): slate metrics by hand, the weight choice, the order."""
import numpy as np
import pytest

from ytspark.models.blend import (ServingOrder, blend_key, check_objective, choose_weight, retrieval_weight,
                                  serving_order, slate_metrics)
from ytspark.score.rank import TorchRanker


def test_slate_metrics_by_hand():
    # user a: clicked key 0.5, negatives 0.9, 0.7, 0.1 -> rank 2 (two above): hit@10, ndcg 1/log2(4) = 0.5
    # user b: clicked key 3.0, negatives 1.0 -> rank 0: ndcg 1
    # user c: clicked key 0.2 tied with one negative, below one -> rank 1 + 1 // 2 = 1: ndcg 1/log2(3)
    # user d: no clicked row -> skipped
    users = ["a"] * 4 + ["b"] * 2 + ["c"] * 3 + ["d"] * 2
    key = np.array([0.5, 0.9, 0.7, 0.1, 3.0, 1.0, 0.2, 0.2, 0.4, 5.0, 6.0])
    clicked = np.array([1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0])
    m = slate_metrics(users, key, clicked, k=10)
    assert m["n"] == 3
    assert m["hr@10"] == pytest.approx(1.0)
    assert m["ndcg@10"] == pytest.approx((0.5 + 1.0 + 1.0 / np.log2(3)) / 3)
    m1 = slate_metrics(users, key, clicked, k=1)  # only b's target is first
    assert m1["hr@1"] == pytest.approx(1 / 3) and m1["ndcg@1"] == pytest.approx(1 / 3)


def test_slate_metrics_do_not_depend_on_row_order():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 20, 400).astype(str)
    key = rng.normal(size=400)
    clicked = (rng.random(400) < 0.1).astype(int)
    perm = rng.permutation(400)
    a = slate_metrics(users, key, clicked, 5)
    b = slate_metrics(users[perm], key[perm], clicked[perm], 5)
    assert a == pytest.approx(b, rel=1e-12) and a["n"] == clicked.sum()  # sums in another order: last bits


def test_slate_metrics_match_a_brute_force_over_each_slate():
    rng = np.random.default_rng(5)
    users = rng.integers(0, 40, 2000).astype(str)
    key = np.round(rng.normal(size=2000), 1)  # rounding makes ties common
    clicked = (rng.random(2000) < 0.05).astype(int)
    hits = ndcg = n = 0
    for u in np.unique(users):
        k_u, c_u = key[users == u], clicked[users == u] > 0
        for s in k_u[c_u]:
            r = int((k_u[~c_u] > s).sum() + (k_u[~c_u] == s).sum() // 2)
            n += 1
            hits += r < 10
            ndcg += 1 / np.log2(r + 2) if r < 10 else 0.0
    m = slate_metrics(users, key, clicked, 10)
    assert m["n"] == n and m["hr@10"] == pytest.approx(hits / n) and m["ndcg@10"] == pytest.approx(ndcg / n)


def _slates(rng, n_users=200, size=30, ranker_noise=1.0, retrieval_noise=1.0):
    """One clicked row per user; the truth t is seen by retrieval and ranker through their own noise."""
    users = np.repeat(np.arange(n_users), size).astype(str)
    truth = rng.normal(size=n_users * size)
    clicked = np.zeros(n_users * size, int)
    clicked[np.arange(n_users) * size + np.argmax(truth.reshape(n_users, size), axis=1)] = 1
    ret = truth + retrieval_noise * rng.normal(size=truth.shape)
    rank = truth + ranker_noise * rng.normal(size=truth.shape)
    return users, rank, ret, clicked


def test_choose_weight_follows_the_better_signal():
    rng = np.random.default_rng(1)
    weights = [0.0, 0.25, 1.0, 4.0, 16.0]
    users, rank, ret, clicked = _slates(rng, ranker_noise=0.05, retrieval_noise=3.0)
    good_ranker = choose_weight("candidate_negatives", weights, users, rank, ret, clicked, clicked * 1.0)
    assert good_ranker["retrieval_weight"] == 0.0 and good_ranker["criterion"] == "ndcg@10"
    users, rank, ret, clicked = _slates(rng, ranker_noise=3.0, retrieval_noise=0.05)
    bad_ranker = choose_weight("candidate_negatives", weights, users, rank, ret, clicked, clicked * 1.0)
    assert bad_ranker["retrieval_weight"] == 16.0
    best = max(bad_ranker["by_weight"].values())
    assert bad_ranker["by_weight"]["16.0"] == best > bad_ranker["by_weight"]["0.0"]


def test_choose_weight_on_impressions_minimises_weighted_per_user_loss():
    rng = np.random.default_rng(2)
    users, rank, ret, clicked = _slates(rng, ranker_noise=3.0, retrieval_noise=0.05)
    watch = clicked * rng.uniform(10, 100, len(clicked))
    out = choose_weight("impressions", [0.0, 1.0, 8.0], users, rank, ret, clicked, watch)
    assert out["criterion"] == "weighted_per_user_loss"
    assert out["retrieval_weight"] == 8.0 and out["by_weight"]["8.0"] < out["by_weight"]["0.0"]


def test_ties_and_no_weights_keep_the_papers_order():
    users = ["a"] * 3
    same = np.array([1.0, 2.0, 3.0])
    out = choose_weight("candidate_negatives", [0.0, 2.0], users, same, np.zeros(3), [0, 0, 1], [0, 0, 1.0])
    assert out["retrieval_weight"] == 0.0  # retrieval adds nothing: equal metric, smaller weight wins
    off = choose_weight("candidate_negatives", [], users, -same, same, [0, 0, 1], [0, 0, 1.0])
    assert off["retrieval_weight"] == 0.0 and off["criterion"] is None
    assert retrieval_weight({}) == 0.0 and retrieval_weight({"blend": {"retrieval_weight": 2.5}}) == 2.5


@pytest.mark.parametrize("objective,weight,weights,key", [
    ("best", -1.0, [1.0], "ranker.objective"), ("blend", -1.0, [], "ranker.blend_weights"),
    ("blend", -1.0, [-1.0], "ranker.blend_weights"), ("watch_time", -1.0, [-1.0], "ranker.blend_weights"),
    ("blend", -0.5, [1.0], "ranker.blend_weight"), ("blend", float("inf"), [1.0], "ranker.blend_weight")])
def test_bad_objective_settings_name_the_key(objective, weight, weights, key):
    with pytest.raises(ValueError, match=key):
        check_objective(objective, weight, weights)


def test_no_weights_are_needed_unless_the_blend_chooses_one():
    check_objective("watch_time", -1.0, [])
    check_objective("next_watch", -1.0, [])
    check_objective("blend", 0.5, [])


def test_each_objective_resolves_to_its_order():
    meta = {"blend": {"retrieval_weight": 2.5}}  # the export's choice on validation
    assert serving_order("watch_time", 4.0, meta) == ServingOrder("watch_time", 0.0)
    assert serving_order("next_watch", -1.0, meta) == ServingOrder("next_watch", 0.0)
    assert serving_order("blend", -1.0, meta) == ServingOrder("blend", 2.5)  # auto: the validation choice
    assert serving_order("blend", 0.5, meta) == ServingOrder("blend", 0.5)  # a fixed weight wins over it
    assert serving_order("blend", -1.0, {}) == ServingOrder("blend", 0.0)  # exported before blends: the paper's
    with pytest.raises(ValueError, match="ranker.objective"):
        serving_order("clicks", -1.0, meta)


def test_the_three_orders_by_hand():
    # three candidates: ranker logits favour c0, retrieval favours c2; the blend at w = 1 favours c1
    logit = np.array([[3.0, 2.0, 0.0]])
    ret = np.array([[0.0, 1.5, 2.0]])
    order = {o.objective: np.argsort(-o.key(logit, ret)[0]).tolist()
             for o in (ServingOrder("watch_time", 9.0), ServingOrder("next_watch"), ServingOrder("blend", 1.0))}
    assert order == {"watch_time": [0, 1, 2], "next_watch": [2, 1, 0], "blend": [1, 0, 2]}


def test_next_watch_orders_by_retrieval_and_keeps_pads_last():
    r = TorchRanker(None, None, 0.0, 3, order=ServingOrder("next_watch"))
    score = np.array([[np.e, 1.0, -np.inf]], np.float32)
    ret = np.array([[0.0, 1.0, 9.0]], np.float32)
    assert np.argsort(-r.order_key(score, ret)[0]).tolist() == [1, 0, 2]


def test_serving_order_key_blends_and_keeps_pads_last():
    r = TorchRanker(None, None, 0.0, 3, order=ServingOrder("blend", 2.0))
    score = np.array([[np.e, 1.0, -np.inf]], np.float32)  # exp(logit): logits 1, 0; a pad slot
    ret = np.array([[0.0, 1.0, 9.0]], np.float32)
    key = r.order_key(score, ret)
    np.testing.assert_allclose(key[0, :2], [1.0, 2.0], rtol=1e-6)
    assert key[0, 2] == -np.inf
    assert np.argsort(-key[0]).tolist() == [1, 0, 2]
    paper = TorchRanker(None, None, 0.0, 3).order_key(score, ret)
    assert np.argsort(-paper[0]).tolist() == [0, 1, 2]
    np.testing.assert_allclose(blend_key([1.0], [2.0], 0.5), [2.0])
