"""Ranking rows of a whole Arrow batch of users at once (what ``prepare`` runs; settings: :mod:`.params`).

:func:`batch_ranking_rows` gives, user after user, exactly the rows of
``user_ranking_rows`` (``tests/reference_rows.py``) (one per impression, in
batch order) with no Python loop over users or rows. Per-(user, channel) and
per-(user, category) "watches strictly before t" come from one joint sort of
watches and impressions (impressions first among equal timestamps).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytspark import schema as S
from ytspark.features.params import RankingParams
from ytspark.features.segments import change_mask, columns, exclusive_cumsum, gather, list_column, run_start, take, user_events, window
from ytspark.schema import DAY, KIND_IMPRESSION, KIND_WATCH, NEVER_DAYS, RANKING_ARROW_SCHEMA

SPLIT_NAMES = pa.array(list(S.SPLITS), pa.string())


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


def batch_ranking_rows(batch: pa.Table | pa.RecordBatch, p: RankingParams) -> pa.RecordBatch:
    """All ranking rows of every user in ``batch``.

    Args:
        batch: events of whole users sorted by (user_id, ts, kind, video_idx), with the
            columns of ``user_ranking_rows`` (``tests/reference_rows.py``)' frame;
            kinds other than watch and impression are ignored.
    Returns:
        A record batch with :data:`RANKING_ARROW_SCHEMA` (``RANKING_SCHEMA``).
    """
    H = p.history_length
    c, ts, kind, users = user_events(batch)
    uid = c[S.USER_ID]
    num = lambda name, dtype, fill=0: pc.fill_null(c[name], fill).to_numpy(zero_copy_only=False).astype(dtype)  # noqa: E731

    is_w = kind == KIND_WATCH
    wi = np.flatnonzero(is_w)
    cw = exclusive_cumsum(is_w)
    w_ts = ts[wi]
    u_w0 = cw[users.starts]
    n_w = cw[users.ends] - u_w0

    ii = np.flatnonzero(kind == KIND_IMPRESSION)
    g = users.event_user[ii]
    t = ts[ii]
    n = len(ii)

    # Split by the user's validation and test watches (``params.split_positions``).
    nu, w_last = n_w[g], u_w0[g] + n_w[g]
    test_ts = gather(w_ts, np.where(nu >= 2, w_last - 1, -1), np.nan)
    val_ts = gather(w_ts, np.where(nu >= 3, w_last - 2, -1), np.nan)
    split = np.where(t >= test_ts, 2, np.where(t >= val_ts, 1, 0)).astype(np.int32)

    # Rollback: watches strictly before each impression end at the start of its tie run.
    w_end = cw[users.tie_start[ii]]
    k = w_end - u_w0[g]
    vid_all = num(S.VIDEO_IDX, np.int64, S.OOV)
    hist = window(vid_all[wi].astype(np.int32), w_end, u_w0[g], H)
    since_last = np.where(k > 0, (t - gather(w_ts, np.where(k > 0, w_end - 1, -1), np.nan)) / DAY, NEVER_DAYS)

    vid = vid_all[ii]
    clicked = num(S.CLICKED, np.int32)[ii]
    imp_key = g.astype(np.int64) * (int(vid.max(initial=0)) + 1) + vid
    n_prev, imp_since, clicked_prev = impression_history(imp_key, t, clicked, imp_key, t)
    feats = {}
    for col in (S.RANK_CHANNEL, S.RANK_CATEGORY):
        v = num(col, np.int64, S.OOV)
        width = int(v.max(initial=0)) + 1
        w_key = users.event_user[wi].astype(np.int64) * width + v[wi]
        feats[col] = count_and_last_before(w_key, w_ts, g.astype(np.int64) * width + v[ii], t)
    upload = num(S.UPLOAD_TS, np.float64, np.nan)[ii]
    with np.errstate(invalid="ignore"):
        video_age = np.where(np.isnan(upload), NEVER_DAYS, np.maximum(0.0, (t - upload) / DAY))
    watch = num(S.WATCH_SECONDS, np.float32, 0.0)[ii] * (clicked > 0)
    weight = np.where(clicked > 0, np.maximum(watch, 1.0), 1.0).astype(np.float32)

    f32 = lambda x: pa.array(np.asarray(x, np.float32), pa.float32())  # noqa: E731
    i32 = lambda x: pa.array(np.asarray(x, np.int32), pa.int32())  # noqa: E731
    cols = {
        S.USER_ID: take(uid, ii),
        S.SPLIT: SPLIT_NAMES.take(pa.array(split)),
        S.RANK_IMPRESSION_TS: pa.array(t, pa.float64()),
        S.RANK_VIDEO: i32(vid),
        S.CAND_WATCH_HIST: list_column(hist, n, H, pa.int32()),
        S.RANK_USER_LANGUAGE: i32(num(S.RANK_USER_LANGUAGE, np.int32, S.OOV)[ii]),
        S.RANK_VIDEO_LANGUAGE: i32(num(S.RANK_VIDEO_LANGUAGE, np.int32, S.OOV)[ii]),
        S.RANK_CHANNEL: i32(num(S.RANK_CHANNEL, np.int32, S.OOV)[ii]),
        S.RANK_CATEGORY: i32(num(S.RANK_CATEGORY, np.int32, S.OOV)[ii]),
        S.RANK_SOURCE: i32(np.full(n, p.source_idx)),
        "since_last_watch_days": f32(since_last),
        "n_prev_impressions": f32(n_prev),
        "since_impression_days": f32(imp_since),
        "prev_impression_clicked": f32(clicked_prev),
        "channel_watches": f32(feats[S.RANK_CHANNEL][0]),
        "since_channel_watch_days": f32(feats[S.RANK_CHANNEL][1]),
        "category_watches": f32(feats[S.RANK_CATEGORY][0]),
        "since_category_watch_days": f32(feats[S.RANK_CATEGORY][1]),
        "video_age_days": f32(video_age),
        "retrieval_score": f32(np.zeros(n)),
        S.RANK_CLICKED: i32(clicked),
        S.RANK_WATCH_SECONDS: f32(watch),
        S.RANK_WEIGHT: f32(weight),
    }
    return pa.RecordBatch.from_arrays([cols[f.name] for f in RANKING_ARROW_SCHEMA], schema=RANKING_ARROW_SCHEMA)
