"""Next-watch ranking metrics with one relevant item per row: HR@K, NDCG@K, MRR.

The rank of the label (0 = top) is taken over the recommendable items: never
pad (0) or OOV (1), never the row's ``exclude`` items (already watched). An
excluded, pad or OOV label can never be recommended and counts as a miss.
From scores, ties are counted against the label (pessimistic), so a constant
scorer earns nothing. From top-K index lists, ranks are positions after the
same filtering, and MRR is truncated at the list's end (1/rank or 0).
The ranks become numbers in :func:`ytspark.metrics.list_metrics`, the one
place for HR@K / NDCG@K / MRR.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ytspark.metrics import list_metrics, target_ranks
from ytspark import schema as S
from ytspark.schema import N_SPECIAL


def _tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _ranks_from_scores(scores: torch.Tensor, labels: torch.Tensor, exclude, chunk_elems: int = 1 << 24) -> torch.Tensor:
    """Rank of each label: items scoring >= the label's score, other than itself (ties pessimistic)."""
    B, V = scores.shape
    ranks = torch.full((B,), math.inf, dtype=torch.float64)
    step = max(1, chunk_elems // max(V, 1))
    for start in range(0, B, step):
        s = scores[start:start + step].detach().clone()
        s[:, :N_SPECIAL] = float("-inf")
        if exclude is not None:
            for j, ex in enumerate(exclude[start:start + step]):
                ex = _tensor(ex).to(s.device, torch.int64).reshape(-1)
                if ex.numel():
                    s[j, ex] = float("-inf")
        lab = labels[start:start + step]
        own = s[torch.arange(len(lab), device=s.device), lab]
        rank = ((s >= own[:, None]).sum(dim=1) - 1).to(torch.float64).cpu()
        ranks[start:start + step] = torch.where(own.cpu() > float("-inf"), rank, torch.full_like(rank, math.inf))
    return ranks


def _ranks_from_topk(topk: torch.Tensor, labels: torch.Tensor, exclude) -> np.ndarray:
    """Rank of each label among its list's entries that are real and not excluded (an excluded label: inf)."""
    topk = topk.cpu().numpy().copy()
    if exclude is not None:
        for b, ex in enumerate(exclude):
            ex = _tensor(ex).reshape(-1).cpu().numpy()
            if ex.size:
                topk[b, np.isin(topk[b], ex)] = S.PAD  # a padded slot: not a real entry
    return target_ranks(topk, labels.cpu().numpy())


def hit_rate_ndcg(scores_or_topk, labels, k_list: Sequence[int] = (10, 50, 100),
                  exclude: Sequence | None = None) -> dict[str, float]:
    """Mean HR@K, NDCG@K (1/log2(rank+2) if rank < K, else 0) and MRR over rows.

    Args:
        scores_or_topk: float scores [B, V] (column = vocab index), or int top-K
            vocab indices [B, K] best first, K >= max(k_list).
        labels: [B] vocab index of the true next watch.
        exclude: None, or B arrays/tensors of vocab indices to mask per row.
    Returns:
        {"hr@K": ..., "ndcg@K": ... for K in k_list, "mrr": ..., "n": B}.
    """
    x, labels = _tensor(scores_or_topk), _tensor(labels).to(torch.int64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != labels.shape[0]:
        raise ValueError(f"hit_rate_ndcg: scores/top-K must be [B, *] with B = len(labels) = {len(labels)}, "
                         f"got shape {tuple(x.shape)}")
    if exclude is not None and len(exclude) != len(labels):
        raise ValueError(f"hit_rate_ndcg: exclude has {len(exclude)} rows, labels {len(labels)}")
    if x.is_floating_point():
        ranks = _ranks_from_scores(x, labels.to(x.device), exclude)
    else:
        if x.shape[1] < max(k_list):
            raise ValueError(f"hit_rate_ndcg: top-K lists have K={x.shape[1]} < max(k_list)={max(k_list)}; "
                             "retrieve more candidates or pass full scores")
        ranks = _ranks_from_topk(x, labels, exclude)
    out = list_metrics(ranks.numpy() if isinstance(ranks, torch.Tensor) else ranks, k_list)
    out["n"] = len(labels)
    return out
