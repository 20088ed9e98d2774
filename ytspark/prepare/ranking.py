"""Ranking rows: one per impression, with the paper's section 4 features, computed with rollback.

Every feature of an impression at time t uses only the user's events strictly
before t. The label is ``clicked``; the weight is the watch time for clicked
impressions and 1 for unclicked ones (weighted logistic regression, so that
exp(logit) estimates expected watch time). Impressions before the user's
validation watch are ``train``, before the test watch ``val``, later ``test``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ytspark import schema as S
from ytspark.prepare.candidates import split_positions
from ytspark.schema import DAY, KIND_IMPRESSION, KIND_WATCH, NEVER_DAYS

@dataclass(frozen=True)
class RankingParams:
    history_length: int = 50
    source_idx: int = S.OOV  # vocab index of the "impression" candidate source


def _count_and_last_before(w_group: np.ndarray, w_ts: np.ndarray, q_group: np.ndarray, q_ts: np.ndarray):
    """For each query (group, t): number of watches of that group strictly before t and days since the last.

    Brute force over (query, watch) pairs, exact in time: the per-user reference for
    :func:`ytspark.prepare.batch_ranking.count_and_last_before`.
    """
    hit = (w_group[None, :] == q_group[:, None]) & (w_ts[None, :] < q_ts[:, None])
    count = hit.sum(axis=1).astype(np.float32)
    last = np.where(hit, w_ts[None, :], -np.inf).max(axis=1, initial=-np.inf)
    since = np.where(count > 0, (q_ts - last) / DAY, NEVER_DAYS).astype(np.float32)
    return count, since


def user_ranking_rows(user: pd.DataFrame, p: RankingParams) -> pd.DataFrame | None:
    """All ranking rows of one user from the user's sorted event frame (watches and impressions).

    Frame columns: ``kind``, ``ts``, ``video_idx``, ``channel_idx``,
    ``category_idx``, ``video_language_idx``, ``upload_ts``, ``clicked``,
    ``watch_seconds``, ``language_idx``. Returns RANKING_SCHEMA columns or None.
    """
    kind = user["kind"].to_numpy()
    imp = user[kind == KIND_IMPRESSION]
    if imp.empty:
        return None
    w = user[kind == KIND_WATCH]
    H = p.history_length
    w_ts = w[S.TS].to_numpy(np.float64)
    w_vid = w[S.VIDEO_IDX].to_numpy(np.int32)
    t = imp[S.TS].to_numpy(np.float64)
    n = len(t)

    val_pos, test_pos, _ = split_positions(len(w_ts))
    split = np.full(n, "train", dtype=object)
    if test_pos is not None:
        split[t >= w_ts[test_pos]] = "test"
        if val_pos is not None:
            split[(t >= w_ts[val_pos]) & (t < w_ts[test_pos])] = "val"

    k = np.searchsorted(w_ts, t, side="left")  # watches strictly before each impression
    offs = k[:, None] - 1 - np.arange(H)[None, :]
    hist = np.where(offs >= 0, w_vid[np.clip(offs, 0, None)] if len(w_vid) else 0, 0).astype(np.int32)
    since_last = np.where(k > 0, (t - w_ts[np.maximum(k - 1, 0)]) / DAY if len(w_ts) else 0, NEVER_DAYS)

    vid = imp[S.VIDEO_IDX].to_numpy(np.int64)
    # earlier impressions of the same video strictly before t; clicked ones among them
    imp_clicked = imp[S.CLICKED].fillna(0).to_numpy(np.int32) > 0
    n_prev, imp_since = _count_and_last_before(vid, t, vid, t)
    clicked_prev = (_count_and_last_before(vid[imp_clicked], t[imp_clicked], vid, t)[0] > 0).astype(np.float32)
    ch_cnt, ch_since = _count_and_last_before(
        w[S.RANK_CHANNEL].to_numpy(np.int64), w_ts, imp[S.RANK_CHANNEL].to_numpy(np.int64), t)
    cat_cnt, cat_since = _count_and_last_before(
        w[S.RANK_CATEGORY].to_numpy(np.int64), w_ts, imp[S.RANK_CATEGORY].to_numpy(np.int64), t)
    upload = imp[S.UPLOAD_TS].to_numpy(np.float64)
    video_age = np.where(np.isnan(upload), NEVER_DAYS, np.maximum(0.0, (t - upload) / DAY))

    clicked = imp[S.CLICKED].fillna(0).to_numpy(np.int32)
    watch = imp[S.WATCH_SECONDS].fillna(0.0).to_numpy(np.float32) * (clicked > 0)
    weight = np.where(clicked > 0, np.maximum(watch, 1.0), 1.0).astype(np.float32)
    out = pd.DataFrame({
        S.USER_ID: imp[S.USER_ID].to_numpy(),
        S.SPLIT: split,
        S.RANK_IMPRESSION_TS: t,
        S.RANK_VIDEO: vid.astype(np.int32),
        S.CAND_WATCH_HIST: list(hist),
        S.RANK_USER_LANGUAGE: imp[S.RANK_USER_LANGUAGE].to_numpy(np.int32),
        S.RANK_VIDEO_LANGUAGE: imp[S.RANK_VIDEO_LANGUAGE].to_numpy(np.int32),
        S.RANK_CHANNEL: imp[S.RANK_CHANNEL].to_numpy(np.int32),
        S.RANK_CATEGORY: imp[S.RANK_CATEGORY].to_numpy(np.int32),
        S.RANK_SOURCE: np.full(n, p.source_idx, np.int32),
        "since_last_watch_days": since_last.astype(np.float32),
        "n_prev_impressions": n_prev,
        "since_impression_days": imp_since,
        "prev_impression_clicked": clicked_prev,
        "channel_watches": ch_cnt,
        "since_channel_watch_days": ch_since,
        "category_watches": cat_cnt,
        "since_category_watch_days": cat_since,
        "video_age_days": video_age.astype(np.float32),
        "retrieval_score": np.zeros(n, np.float32),
        S.RANK_CLICKED: clicked,
        S.RANK_WATCH_SECONDS: watch,
        S.RANK_WEIGHT: weight,
    })
    return out
