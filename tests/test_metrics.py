"""ytspark.metrics, the one place for HR@K / NDCG@K / MRR of lists: hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ytspark.metrics import hit_rates, list_metrics, slate_ranks, target_ranks


def test_list_metrics_by_hand():
    ranks = [0, 2, math.inf, 5]  # first, third, missing, sixth
    m = list_metrics(ranks, (1, 3, 10))
    assert m["hr@1"] == pytest.approx(1 / 4) and m["hr@3"] == pytest.approx(2 / 4) and m["hr@10"] == pytest.approx(3 / 4)
    assert m["ndcg@1"] == pytest.approx(1 / 4)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(7)) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 0 + 1 / 6) / 4)
    assert "mrr" not in list_metrics(ranks, (1,), mrr=False)
    assert list_metrics([], (5,)) == {"hr@5": 0.0, "ndcg@5": 0.0, "mrr": 0.0}
    assert hit_rates(ranks, (1, 3, 6)) == [(1, 0.25), (3, 0.5), (6, 0.75)]


def test_target_ranks_skip_pad_and_oov():
    topk = np.array([[0, 5, 7, 9], [4, 5, 6, 7], [3, 3, 8, 0]])
    labels = np.array([7, 9, 1])  # 7 is second among real entries; 9 absent; OOV never found
    assert target_ranks(topk, labels).tolist() == [1.0, math.inf, math.inf]


def test_slate_ranks_count_ties_half():
    users = ["a", "a", "a", "a", "b", "b"]
    key = [3.0, 2.0, 2.0, 1.0, 0.5, 0.7]
    clicked = [0, 1, 0, 0, 1, 0]
    # a: one unclicked above (3.0) + half of one tie rounded down (0) -> 1; b: one unclicked above (0.7) -> 1
    assert slate_ranks(users, key, clicked).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="slate_ranks"):
        slate_ranks(users[:2], key, clicked)
