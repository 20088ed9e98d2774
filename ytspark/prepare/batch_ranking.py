"""Ranking rows of a whole Arrow batch of users at once (what ``prepare`` runs; settings: ``features/params.py``).

:func:`batch_ranking_rows` gives, user after user, exactly the rows of
``user_ranking_rows`` (``tests/reference_rows.py``) (one per impression, in
batch order) with no Python loop over users or rows. Per-(user, channel) and
per-(user, category) "watches strictly before t" come from one joint sort of
watches and impressions (impressions first among equal timestamps), and the
impression features from the same code
(:mod:`ytspark.features.history`, which serving calls too).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytspark import schema as S
from ytspark.features.history import count_and_last_before, impression_history
from ytspark.features.params import RankingParams
from ytspark.features.segments import exclusive_cumsum, gather, list_column, take, user_events, window
from ytspark.schema import DAY, KIND_IMPRESSION, KIND_WATCH, NEVER_DAYS, RANKING_ARROW_SCHEMA

SPLIT_NAMES = pa.array(list(S.SPLITS), pa.string())


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
