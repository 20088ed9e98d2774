"""Ranking metrics of top-K lists against an :class:`~ytspark.evaluate.protocol.EvalSet`.

Numbers agree with ``ytspark.models.metrics.hit_rate_ndcg`` on the same top-K
lists (tested): the rank of the target is its position among the list's real
entries (index >= 2; pad 0 marks an empty slot), HR@K = rank < K,
NDCG@K = 1/log2(rank + 2) with rank 0-based (1/log2(r + 1) for a 1-based r),
MRR = 1/(rank + 1) within the list, else 0. Unlike the torch helper, a list
that contains a seen video or a duplicate raises: a system must exclude them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ytspark.evaluate.protocol import N_SPECIAL, EvalSet


def _row_keys(rows: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    return rows.astype(np.int64) * np.int64(n_items) + items.astype(np.int64)


def check_lists(topk: np.ndarray, evalset: EvalSet, system: str = "system") -> None:
    """Raise ValueError if ``topk`` [B, K] has the wrong shape, out-of-vocabulary ids, duplicates or seen videos."""
    if topk.ndim != 2 or topk.shape[0] != len(evalset):
        raise ValueError(f"{system}: top-K must be [B, K] with B = {len(evalset)} {evalset.split} users, "
                         f"got shape {topk.shape}")
    if not np.issubdtype(topk.dtype, np.integer):
        raise ValueError(f"{system}: top-K must hold integer video indices, got {topk.dtype}")
    if topk.size and (topk.min() < 0 or topk.max() >= evalset.n_items):
        raise ValueError(f"{system}: top-K holds video indices outside [0, {evalset.n_items}); "
                         "use the prepared video vocabulary's indices")
    if np.any(topk == 1):
        raise ValueError(f"{system}: top-K recommends OOV (index 1); recommend catalogue videos (>= 2) or pad 0")
    real = topk >= N_SPECIAL
    srt = np.sort(np.where(real, topk, -np.arange(1, topk.shape[1] + 1)), axis=1)
    if np.any(srt[:, 1:] == srt[:, :-1]):
        b = int(np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))[0])
        raise ValueError(f"{system}: user '{evalset.user_ids[b]}' gets the same video twice in one list")
    rows = np.repeat(np.arange(len(evalset)), np.diff(evalset.seen_indptr))
    seen_keys = _row_keys(rows, evalset.seen_indices, evalset.n_items)
    b_idx, k_idx = np.nonzero(real)
    hit = np.isin(_row_keys(b_idx, topk[b_idx, k_idx], evalset.n_items), seen_keys)
    if hit.any():
        j = int(np.flatnonzero(hit)[0])
        raise ValueError(
            f"{system}: {int(hit.sum())} recommended videos were already watched before the {evalset.split} target "
            f"(e.g. user '{evalset.user_ids[b_idx[j]]}', video index {topk[b_idx[j], k_idx[j]]}); "
            "exclude each user's seen videos (EvalSet.seen) before taking the top K")


def target_ranks(topk: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """0-based rank of each label among the list's real entries (index >= 2); inf when absent. float64 [B]."""
    real = topk >= N_SPECIAL
    pos = np.cumsum(real, axis=1) - 1
    match = (topk == labels[:, None]) & real & (labels[:, None] >= N_SPECIAL)
    found = match.any(axis=1)
    ranks = np.full(len(labels), np.inf)
    ranks[found] = pos[found, match[found].argmax(axis=1)]
    return ranks


def popularity_percentiles(item_counts: np.ndarray) -> np.ndarray:
    """Mid-rank percentile in [0, 1] of each catalogue video's count (1 = most watched); pad/OOV get NaN."""
    c = item_counts[N_SPECIAL:]
    srt = np.sort(c)
    less = np.searchsorted(srt, c, side="left")
    equal = np.searchsorted(srt, c, side="right") - less
    out = np.full(len(item_counts), np.nan)
    out[N_SPECIAL:] = (less + 0.5 * equal) / max(len(c), 1)
    return out


def ranking_metrics(topk: np.ndarray, evalset: EvalSet, ks: Sequence[int] = (10, 50, 100),
                    coverage_k: int = 10, system: str = "system") -> dict[str, float]:
    """Metrics of per-user lists ``topk`` (int [B, K], row b for ``evalset.user_ids[b]``, best first).

    Returns ``hr@K`` and ``ndcg@K`` for K in ``ks``, ``mrr`` (over the K
    returned), ``coverage@c`` (distinct videos in the top ``coverage_k`` over
    the catalogue size), ``pop_pct@c`` (mean popularity percentile of the top
    ``coverage_k`` videos under ``evalset.item_counts``), ``n`` (targets) and
    ``unreachable`` (share of targets that are OOV or already seen).
    Raises ValueError on seen or duplicate videos, or K < max(ks).
    """
    topk = np.asarray(topk)
    if topk.ndim == 2 and topk.shape[1] < max(ks):
        raise ValueError(f"{system}: lists have K={topk.shape[1]} < max(ks)={max(ks)}; retrieve more")
    check_lists(topk, evalset, system)
    labels = evalset.labels
    ranks = target_ranks(topk, labels)
    n = max(len(labels), 1)
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = float(hit.sum()) / n
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 0) + 2), 0.0).sum()) / n
    out["mrr"] = float((1.0 / (ranks + 1)).sum()) / n
    head = topk[:, :coverage_k]
    real = head[head >= N_SPECIAL]
    out[f"coverage@{coverage_k}"] = len(np.unique(real)) / max(evalset.n_catalogue, 1)
    pct = popularity_percentiles(evalset.item_counts)
    out[f"pop_pct@{coverage_k}"] = float(pct[real].mean()) if real.size else float("nan")
    rows = np.repeat(np.arange(len(evalset)), np.diff(evalset.seen_indptr))
    label_seen = np.isin(_row_keys(np.arange(len(labels)), labels, evalset.n_items),
                         _row_keys(rows, evalset.seen_indices, evalset.n_items))
    out["unreachable"] = float(((labels < N_SPECIAL) | label_seen).sum()) / n
    out["n"] = len(labels)
    return out


def hr_curve(topk: np.ndarray, evalset: EvalSet, ks: Sequence[int] | None = None) -> list[tuple[int, float]]:
    """[(K, HR@K)] for K = 1..len(list) (or ``ks``): the HR@K-vs-K curve of one system."""
    ranks = target_ranks(np.asarray(topk), evalset.labels)
    ks = list(ks) if ks is not None else list(range(1, topk.shape[1] + 1))
    n = max(len(ranks), 1)
    return [(int(k), float((ranks < k).sum()) / n) for k in ks]
