"""Ranking metrics of lists, in one place: HR@K, NDCG@K and MRR from the rank of each target.

Every next-watch metric here is a function of one number per target, its
0-based rank in the list it was ranked in (``inf`` when it is not there), and
:func:`list_metrics` turns those ranks into the numbers:

* HR@K = share of targets with rank < K;
* NDCG@K = mean of 1/log2(rank + 2) over targets with rank < K (one relevant
  item per target, so the ideal DCG is 1), 0 for the others;
* MRR = mean of 1/(rank + 1), 0 for a target not in its list.

What differs between callers is only how the rank is found, and each way
lives here too:

* :func:`target_ranks`: the position of the label among the real entries of a
  top-K list (index >= ``N_SPECIAL``; pad 0 marks an empty slot), used by
  ``ytspark.evaluate.metrics`` and the torch helper ``ytspark.models.metrics``;
* :func:`slate_ranks`: a clicked row among the unclicked rows of its user's
  slate by a key, ties counted half (``ytspark.models.blend.slate_metrics``).

Metrics of scores on impressions (AUC, weighted per-user loss, watch-time
NDCG, calibration) are in ``ytspark.models.rank_metrics``; metrics of what
lists are made of (coverage, Gini, channel share) in ``ytspark.evaluate.metrics``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ytspark.schema import N_SPECIAL

__all__ = ["list_metrics", "hit_rates", "target_ranks", "slate_ranks"]


def list_metrics(ranks, ks: Sequence[int], mrr: bool = True) -> dict[str, float]:
    """HR@K and NDCG@K for K in ``ks`` (and MRR) of 0-based ranks ``ranks`` [n] (``inf`` = not in the list).

    Returns {"hr@K": ..., "ndcg@K": ... for K in ks, "mrr": ...}; every mean is over all n targets
    (0 for n = 0).
    """
    r = np.asarray(ranks, np.float64).reshape(-1)
    n = max(len(r), 1)
    out: dict[str, float] = {}
    for k in ks:
        hit = r < k
        out[f"hr@{k}"] = float(hit.sum()) / n
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(np.where(hit, r, 0.0) + 2.0), 0.0).sum()) / n
    if mrr:
        out["mrr"] = float((1.0 / (r + 1.0)).sum()) / n
    return out


def hit_rates(ranks, ks: Sequence[int]) -> list[tuple[int, float]]:
    """[(K, HR@K)] for each K in ``ks``: the HR-vs-K curve of 0-based ranks ``ranks`` [n]."""
    r = np.asarray(ranks, np.float64).reshape(-1)
    n = max(len(r), 1)
    return [(int(k), float((r < k).sum()) / n) for k in ks]


def target_ranks(topk: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """0-based rank of each label among the list's real entries (index >= 2); inf when absent. float64 [B].

    ``topk`` is int [B, K], best first; ``labels`` int [B]. A pad or OOV label (< 2) is never found.
    """
    topk, labels = np.asarray(topk), np.asarray(labels)
    real = topk >= N_SPECIAL
    pos = np.cumsum(real, axis=1) - 1
    match = (topk == labels[:, None]) & real & (labels[:, None] >= N_SPECIAL)
    found = match.any(axis=1)
    ranks = np.full(len(labels), np.inf)
    ranks[found] = pos[found, match[found].argmax(axis=1)]
    return ranks


def slate_ranks(user_ids, key, clicked) -> np.ndarray:
    """0-based rank of every clicked row among the unclicked rows of its user's slate, by ``key`` (higher first).

    One slate per user (all of that user's rows). The rank is the number of the
    user's unclicked rows with a key above the row's, plus half of those tied
    with it (rounded down): ties are neither a free win nor a loss. Returns
    float64 [number of clicked rows], in row order of the clicked rows.
    Vectorised: (user, key rank) pairs are packed into one sorted int64 key per row.
    """
    users = np.asarray(user_ids, dtype=object)
    key = np.asarray(key, np.float64)
    clicked = np.asarray(clicked) > 0
    if not (len(users) == len(key) == len(clicked)):
        raise ValueError(f"slate_ranks: {len(users)} users, {len(key)} keys, {len(clicked)} labels")
    code, _ = pd.factorize(users)
    _, rank = np.unique(key, return_inverse=True)  # dense ranks: same order and ties as the keys
    R = np.int64(rank.max() + 1) if len(rank) else np.int64(1)
    packed = code.astype(np.int64) * R + rank.astype(np.int64)
    neg = np.sort(packed[~clicked])
    pos, cp = packed[clicked], code[clicked].astype(np.int64)
    user_end = np.searchsorted(neg, (cp + 1) * R, side="left")
    hi = np.searchsorted(neg, pos, side="right")
    tied = hi - np.searchsorted(neg, pos, side="left")
    return ((user_end - hi) + tied // 2).astype(np.float64)
