"""Ranking metrics of top-K lists against an :class:`~ytspark.evaluate.protocol.EvalSet`.

HR@K, NDCG@K and MRR are those of :mod:`ytspark.metrics` (the one place for
them), so numbers agree with ``ytspark.models.metrics.hit_rate_ndcg`` on the
same top-K lists (tested): the rank of the target is its position among the
list's real entries (index >= 2; pad 0 marks an empty slot), HR@K = rank < K,
NDCG@K = 1/log2(rank + 2) with rank 0-based (1/log2(r + 1) for a 1-based r),
MRR = 1/(rank + 1) within the list, else 0. Unlike the torch helper, a list
that contains a seen video or a duplicate raises: a system must exclude them.
Beside them, what the lists are made of: coverage of the catalogue, the Gini
of exposure over videos and the share of the top channel in a list.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ytspark.evaluate.protocol import EvalSet
from ytspark.metrics import hit_rates, list_metrics, target_ranks
from ytspark.schema import N_SPECIAL

__all__ = ["check_lists", "target_ranks", "popularity_percentiles", "top_channel_share", "exposure_gini",
           "ranking_metrics", "hr_curve"]


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


def popularity_percentiles(item_counts: np.ndarray) -> np.ndarray:
    """Mid-rank percentile in [0, 1] of each catalogue video's count (1 = most watched); pad/OOV get NaN."""
    c = item_counts[N_SPECIAL:]
    srt = np.sort(c)
    less = np.searchsorted(srt, c, side="left")
    equal = np.searchsorted(srt, c, side="right") - less
    out = np.full(len(item_counts), np.nan)
    out[N_SPECIAL:] = (less + 0.5 * equal) / max(len(c), 1)
    return out


def top_channel_share(topk: np.ndarray, channel_of: np.ndarray, k: int = 10) -> float:
    """Concentration of lists by channel: the mean over lists of the share of the list's most frequent channel
    among its top ``k`` videos of known channel (``channel_of`` [n_items] int, < 0 unknown). 1/k when every
    video of a list is from another channel, 1 when all are from one. Lists without a video of known channel
    are left out; NaN when none has one (a catalogue without channels, e.g. MovieLens)."""
    head = np.asarray(topk)[:, :k]
    ch = np.where(head >= N_SPECIAL, np.asarray(channel_of)[head], -1)
    known = (ch >= 0).sum(axis=1)
    srt = np.sort(ch, axis=1)
    # the longest run of one channel in each sorted row (unknowns, -1, never count)
    best = np.zeros(len(ch), np.int64)
    run = np.zeros(len(ch), np.int64)
    for j in range(ch.shape[1]):
        same = srt[:, j] == srt[:, j - 1] if j else np.zeros(len(ch), bool)
        run = np.where(srt[:, j] < 0, 0, np.where(same, run + 1, 1))
        best = np.maximum(best, run)
    ok = known > 0
    return float((best[ok] / known[ok]).mean()) if ok.any() else float("nan")


def exposure_gini(topk: np.ndarray, n_items: int, k: int = 10) -> float:
    """Gini coefficient of how often each catalogue video (index >= 2) appears in the top ``k`` lists:
    0 when every video appears equally often, (n - 1) / n when one video takes every slot. NaN without slots."""
    head = np.asarray(topk)[:, :k]
    x = np.sort(np.bincount(head[head >= N_SPECIAL], minlength=n_items)[N_SPECIAL:].astype(np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return float("nan")
    return float(2.0 * (np.arange(1, n + 1) * x).sum() / (n * total) - (n + 1.0) / n)


def ranking_metrics(topk: np.ndarray, evalset: EvalSet, ks: Sequence[int] = (10, 50, 100),
                    coverage_k: int = 10, system: str = "system",
                    channel_of: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of per-user lists ``topk`` (int [B, K], row b for ``evalset.user_ids[b]``, best first).

    Returns ``hr@K`` and ``ndcg@K`` for K in ``ks``, ``mrr`` (over the K
    returned), ``coverage@c`` (distinct videos in the top ``coverage_k`` over
    the catalogue size), ``pop_pct@c`` (mean popularity percentile of the top
    ``coverage_k`` videos under ``evalset.item_counts``), ``gini@c``
    (:func:`exposure_gini`), ``top_channel@c`` (:func:`top_channel_share`, with
    ``channel_of`` [n_items], the channel of each video index, < 0 unknown), ``n`` (targets) and
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
    out = list_metrics(ranks, ks)
    head = topk[:, :coverage_k]
    real = head[head >= N_SPECIAL]
    out[f"coverage@{coverage_k}"] = len(np.unique(real)) / max(evalset.n_catalogue, 1)
    pct = popularity_percentiles(evalset.item_counts)
    out[f"pop_pct@{coverage_k}"] = float(pct[real].mean()) if real.size else float("nan")
    out[f"gini@{coverage_k}"] = exposure_gini(topk, evalset.n_items, coverage_k)
    if channel_of is not None:
        out[f"top_channel@{coverage_k}"] = top_channel_share(topk, channel_of, coverage_k)
    rows = np.repeat(np.arange(len(evalset)), np.diff(evalset.seen_indptr))
    label_seen = np.isin(_row_keys(np.arange(len(labels)), labels, evalset.n_items),
                         _row_keys(rows, evalset.seen_indices, evalset.n_items))
    out["unreachable"] = float(((labels < N_SPECIAL) | label_seen).sum()) / n
    out["n"] = len(labels)
    return out


def hr_curve(topk: np.ndarray, evalset: EvalSet, ks: Sequence[int] | None = None) -> list[tuple[int, float]]:
    """[(K, HR@K)] for K = 1..len(list) (or ``ks``): the HR@K-vs-K curve of one system."""
    ranks = target_ranks(np.asarray(topk), evalset.labels)
    return hit_rates(ranks, list(ks) if ks is not None else range(1, topk.shape[1] + 1))
