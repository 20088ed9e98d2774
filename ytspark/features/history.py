"""The ranker's history features of (key, t) queries: what happened with the same key strictly before t.

A key combines a user with what is counted (user number * width + channel,
category or video idx). :func:`count_and_last_before` gives the number of
watches (or impressions) with the query's key strictly before its time and
the days since the latest: the channel and category affinity of the ranking
rows and, through :func:`impression_history`, the impression features
(``n_prev_impressions``, ``since_impression_days``, ``prev_impression_clicked``).
The one definition: prepare asks it for every logged impression
(:mod:`ytspark.prepare.batch_ranking`), serving and evaluation for every
(user, candidate) at their cut-off (:mod:`ytspark.score.features`,
:mod:`ytspark.evaluate.systems`).
"""
from __future__ import annotations

import numpy as np

from ytspark.features.segments import change_mask, exclusive_cumsum, gather, run_start
from ytspark.schema import DAY, NEVER_DAYS


def count_and_last_before(w_key: np.ndarray, w_ts: np.ndarray, q_key: np.ndarray, q_ts: np.ndarray):
    """Per query (key, t): the number of watches with the same key strictly before t, and days since the last.

    Keys are int64 (e.g. user number and channel combined). Returns (count float32,
    days float32 with -1 where the count is 0), in query order.
    """
    nw, nq = len(w_key), len(q_key)
    key = np.concatenate([w_key, q_key])
    ts = np.concatenate([w_ts, q_ts])
    is_w = np.concatenate([np.ones(nw, bool), np.zeros(nq, bool)])
    order = np.lexsort((is_w, ts, key))  # by key, then time; a query precedes a watch at the same time
    key, ts, is_w = key[order], ts[order], is_w[order]
    before = exclusive_cumsum(is_w)
    pos = np.arange(len(order))
    count = before[:-1] - before[run_start(change_mask(key))]
    last = np.maximum.accumulate(np.where(is_w, pos, -1))  # the latest watch at or before each position
    since = np.where(count > 0, (ts - gather(ts, np.where(count > 0, last, -1), np.nan)) / DAY, NEVER_DAYS)
    q = ~is_w
    out_count = np.empty(nq, np.float32)
    out_since = np.empty(nq, np.float32)
    out_count[order[q] - nw] = count[q]
    out_since[order[q] - nw] = since[q]
    return out_count, out_since


def impression_history(imp_key: np.ndarray, imp_ts: np.ndarray, imp_clicked: np.ndarray, q_key: np.ndarray,
                       q_ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ranker's impression features: per query (key, t), the impressions with the same key strictly
    before t -> (``n_prev_impressions``, ``since_impression_days``: days since the latest, NEVER_DAYS when
    none, ``prev_impression_clicked``: 1 when any of them was clicked), float32, in query order.

    Keys combine user and video (e.g. user number * n_videos + video idx). The one definition: prepare
    asks it for every logged impression (each impression a query at its own time), serving for every
    (user, candidate) at the run's cut-off (:mod:`ytspark.score.rank`). A clicked impression is one
    impression; an impression at exactly t is not before t.
    """
    imp_key, imp_ts = np.asarray(imp_key, np.int64), np.asarray(imp_ts, np.float64)
    q_key, q_ts = np.asarray(q_key, np.int64), np.asarray(q_ts, np.float64)
    hit = np.asarray(imp_clicked) > 0
    if len(q_ts) and len(imp_ts) and (q_ts == q_ts[0]).all() and imp_ts.max() < q_ts[0]:
        return _history_at_one_cut_off(imp_key, imp_ts, hit, q_key, float(q_ts[0]))
    count, since = count_and_last_before(imp_key, imp_ts, q_key, q_ts)
    clicked, _ = count_and_last_before(imp_key[hit], imp_ts[hit], q_key, q_ts)
    return count, since, (clicked > 0).astype(np.float32)


def _history_at_one_cut_off(imp_key: np.ndarray, imp_ts: np.ndarray, hit: np.ndarray, q_key: np.ndarray,
                            t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`impression_history` when every query is at ``t`` and every impression is before it (serving at
    its cut-off): a group-by of the impressions by key, the same three values with one sort."""
    order = np.argsort(imp_key, kind="stable")
    k = imp_key[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    keys = k[starts]
    n = np.diff(np.r_[starts, len(k)]).astype(np.float32)
    last = np.maximum.reduceat(imp_ts[order], starts)
    any_click = np.maximum.reduceat(hit[order].astype(np.int8), starts) > 0
    pos = np.minimum(np.searchsorted(keys, q_key), len(keys) - 1)
    found = keys[pos] == q_key
    count = np.where(found, n[pos], 0.0).astype(np.float32)
    # the same float64 difference, then float32, as count_and_last_before
    since = np.where(found, (t - last[pos]) / DAY, NEVER_DAYS).astype(np.float32)
    return count, since, (found & any_click[pos]).astype(np.float32)
