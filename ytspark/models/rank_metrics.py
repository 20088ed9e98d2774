"""Ranking metrics over impressions: the paper's weighted per-user loss, AUC, watch-weighted NDCG, calibration.

Weighted per-user loss (paper 4.2, generalised from one page to all of a
user's held-out impressions): every (positive, negative) pair of one user's
impressions, positive = clicked, is a trial worth the positive's watch time
T_p. The pair is mispredicted when the negative scores above the positive;
ties count half by default (``ties="half"``: a random tie-break, so a constant
scorer gets 0.5, like AUC), fully with ``ties="pessimistic"`` (constant scorer
1.0), not at all with ``ties="optimistic"`` (the paper's literal "higher").
Per user: loss_u = Σ_pairs T_p·[mispredicted] / Σ_pairs T_p, in [0, 1], i.e.
the watch-time-weighted share of mis-ordered pairs. Aggregate: Σ_u of the
numerators / Σ_u of the denominators, over users with at least one positive
(of watch time > 0) and one negative; other users are left out and counted.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

TIES = {"half": 0.5, "pessimistic": 1.0, "optimistic": 0.0}


def _array(x, name: str, dtype=None) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    if a.ndim != 1:
        raise ValueError(f"ranking metrics: '{name}' must be 1-D [N], got shape {a.shape}")
    return a


def _check_scores(scores: np.ndarray, n: int, name: str = "scores") -> None:
    if len(scores) != n:
        raise ValueError(f"ranking metrics: '{name}' has {len(scores)} rows, expected {n}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"ranking metrics: '{name}' contains NaN or inf; check the model output")


def weighted_per_user_loss(user_ids, scores, clicked, watch_seconds, ties: str = "half") -> dict[str, float]:
    """The paper's weighted per-user loss (module docstring) of ``scores`` over N impressions.

    Args:
        user_ids: [N] any hashable ids (strings or ints).
        scores: [N] float, higher = ranked first (logits or exp(logits): same result).
        clicked: [N] 0/1; watch_seconds: [N] float, the positives' watch time.
        ties: "half" (default), "pessimistic" or "optimistic".
    Returns:
        {"weighted_per_user_loss": aggregate, "mean_user_loss": unweighted mean
        of loss_u, "mispredicted_seconds", "pair_seconds": aggregate numerator
        and denominator, "n_users": users scored, "n_users_skipped": users
        without both a positive and a negative}. The loss is NaN when no user
        qualifies.
    """
    if ties not in TIES:
        raise ValueError(f"weighted_per_user_loss: ties must be one of {sorted(TIES)}, got '{ties}'")
    users = _array(user_ids, "user_ids")
    s = _array(scores, "scores", np.float64)
    y = _array(clicked, "clicked", np.float64)
    t = _array(watch_seconds, "watch_seconds", np.float64)
    n = len(users)
    _check_scores(s, n)
    if len(y) != n or len(t) != n:
        raise ValueError(f"weighted_per_user_loss: clicked ({len(y)}) and watch_seconds ({len(t)}) "
                         f"must have {n} rows like user_ids")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("weighted_per_user_loss: 'clicked' must be 0 or 1")
    code, uniq = pd.factorize(users, sort=False)
    n_users = len(uniq)
    _, rank = np.unique(s, return_inverse=True)  # scores -> dense integer ranks, same order and ties
    R = int(rank.max()) + 1 if n else 1
    key = code.astype(np.int64) * R + rank.astype(np.int64)
    pos, neg = y == 1, y == 0
    neg_keys = np.sort(key[neg])
    kp, cp = key[pos], code[pos].astype(np.int64)
    user_end = np.searchsorted(neg_keys, (cp + 1) * R, side="left")
    n_neg = user_end - np.searchsorted(neg_keys, cp * R, side="left")
    above = user_end - np.searchsorted(neg_keys, kp, side="right")
    equal = np.searchsorted(neg_keys, kp, side="right") - np.searchsorted(neg_keys, kp, side="left")
    tp = t[pos]
    mis = tp * (above + TIES[ties] * equal)
    tot = tp * n_neg
    mis_u = np.bincount(cp, weights=mis, minlength=n_users)
    tot_u = np.bincount(cp, weights=tot, minlength=n_users)
    ok = tot_u > 0
    per_user = mis_u[ok] / tot_u[ok]
    num, den = float(mis_u[ok].sum()), float(tot_u[ok].sum())
    return {
        "weighted_per_user_loss": num / den if den > 0 else float("nan"),
        "mean_user_loss": float(per_user.mean()) if ok.any() else float("nan"),
        "mispredicted_seconds": num,
        "pair_seconds": den,
        "n_users": int(ok.sum()),
        "n_users_skipped": int(n_users - ok.sum()),
    }


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x with ties given their average rank."""
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # rank of the last member of each tie group
    return (upper - (counts - 1) / 2.0)[inv]


def auc(scores, clicked) -> float:
    """ROC AUC of ``scores`` [N] for ``clicked`` [N] 0/1 (Mann-Whitney, tied scores averaged).

    P(score of a random positive > that of a random negative) + ½ P(tie).
    NaN when there are no positives or no negatives.
    """
    s = _array(scores, "scores", np.float64)
    y = _array(clicked, "clicked", np.float64)
    _check_scores(s, len(y))
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("auc: 'clicked' must be 0 or 1")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _average_ranks(s)
    return float((r[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def calibration(pred_watch, watch_seconds, n_bins: int = 10) -> list[tuple[int, float, float, int]]:
    """Mean predicted vs observed watch time per predicted-quantile bin (deciles by default).

    Rows are sorted by ``pred_watch`` [N] (e.g. exp(logit)) and cut into
    ``n_bins`` bins of equal size (sizes differ by at most one; ties may fall
    on both sides of a cut). ``watch_seconds`` [N] is the observed watch time
    per impression, 0 when not clicked. Returns [(bin, mean predicted, mean
    observed, count)] for non-empty bins, bin 0 = lowest predictions.
    """
    p = _array(pred_watch, "pred_watch", np.float64)
    w = _array(watch_seconds, "watch_seconds", np.float64)
    _check_scores(p, len(w), "pred_watch")
    if n_bins < 1:
        raise ValueError(f"calibration: n_bins must be >= 1, got {n_bins}")
    order = np.argsort(p, kind="stable")
    out = []
    for b, idx in enumerate(np.array_split(order, n_bins)):
        if len(idx):
            out.append((b, float(p[idx].mean()), float(w[idx].mean()), int(len(idx))))
    return out


def user_auc(user_ids, scores, clicked) -> float:
    """AUC within users: the share of (clicked, unclicked) pairs of one user's impressions that ``scores`` [N]
    order right, ties half, pooled over users (users without both are left out; NaN when none has both).

    It is 1 - :func:`weighted_per_user_loss` with every watch time 1: the same pairs, unweighted. Unlike the
    pooled :func:`auc` it never compares two users' scores, so a system whose scores carry a per-user offset
    (a softmax logit) is judged on the order it gives each user.
    """
    y = _array(clicked, "clicked", np.float64)
    return 1.0 - weighted_per_user_loss(user_ids, scores, clicked, np.ones(len(y)))["weighted_per_user_loss"]


def watch_ndcg(user_ids, scores, watch_seconds) -> dict[str, float]:
    """Watch-time-weighted NDCG of each user's impressions ordered by ``scores`` [N] (higher first).

    Per user: DCG = Σ_i T_i / log2(i + 2) over the user's rows in score order (i 0-based; T = watch seconds,
    0 for an unclicked row), divided by the DCG of the rows in T order (the best possible). Tied scores
    share the mean discount of the positions they span (the expected DCG over random tie-breaks: a constant
    scorer gets the average order). Returns {"watch_ndcg": mean over users with some watch time, "n_users":
    those users}; NaN when there are none.
    """
    users = _array(user_ids, "user_ids")
    s = _array(scores, "scores", np.float64)
    t = _array(watch_seconds, "watch_seconds", np.float64)
    _check_scores(s, len(users))
    if len(t) != len(users):
        raise ValueError(f"watch_ndcg: watch_seconds has {len(t)} rows, expected {len(users)}")
    if not len(users):
        return {"watch_ndcg": float("nan"), "n_users": 0}
    code, uniq = pd.factorize(users, sort=False)
    code = code.astype(np.int64)
    first = np.zeros(len(uniq) + 1, np.int64)
    np.cumsum(np.bincount(code, minlength=len(uniq)), out=first[1:])

    def discounts(order: np.ndarray) -> np.ndarray:
        pos = np.arange(len(order)) - first[code[order]]
        return 1.0 / np.log2(pos + 2.0)

    order = np.lexsort((-s, code))  # by user, then score descending
    disc = discounts(order)
    c_o, s_o = code[order], s[order]
    new = np.r_[True, (c_o[1:] != c_o[:-1]) | (s_o[1:] != s_o[:-1])]
    group = np.cumsum(new) - 1  # one id per (user, tied score) run
    mean_disc = np.bincount(group, weights=disc) / np.bincount(group)
    dcg = np.bincount(c_o, weights=t[order] * mean_disc[group], minlength=len(uniq))
    ideal = np.lexsort((-t, code))
    idcg = np.bincount(code[ideal], weights=t[ideal] * discounts(ideal), minlength=len(uniq))
    ok = idcg > 0
    return {"watch_ndcg": float((dcg[ok] / idcg[ok]).mean()) if ok.any() else float("nan"), "n_users": int(ok.sum())}


def impression_metrics(user_ids, scores, clicked, watch_seconds) -> dict[str, float]:
    """The ranking stage's own metrics of ``scores`` [N] on held-out impressions: {"wpul": the paper's
    weighted per-user loss (lower is better), "auc": :func:`user_auc`, "watch_ndcg": :func:`watch_ndcg`,
    "impressions": N, "impression_users": users with a clicked and an unclicked row}."""
    w = weighted_per_user_loss(user_ids, scores, clicked, watch_seconds)
    return {"wpul": w["weighted_per_user_loss"], "auc": user_auc(user_ids, scores, clicked),
            "watch_ndcg": watch_ndcg(user_ids, scores, watch_seconds)["watch_ndcg"],
            "impressions": int(len(_array(scores, "scores"))), "impression_users": w["n_users"]}
