"""Per-user reference builders of prepare's rows: the oracles the batch code (``ytspark/prepare/batch_*.py``) is
checked against, user by user (``test_prepare_vectorised.py``, ``test_candidates.py``, ``test_score.py``,
``test_rank_rows.py``). Not used by the product.

:func:`user_candidate_rows`: each example is labelled by one completed watch and sees only events before the
label (``CandidateParams.ties``: before it in prepare's order, or strictly before its second): last-N watched
ids, last-N search tokens, time since the last watch, example age. Per user the last watch is the test target,
the one before the validation target; training labels come from earlier watches, capped at
``max_examples_per_user``. :func:`user_ranking_rows`: one row per impression, the paper's section 4 features
from the user's events strictly before it; label ``clicked``, weight the watch time (1 unclicked).
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from ytspark import schema as S
from ytspark.features.params import CandidateParams, RankingParams, split_positions
from ytspark.schema import DAY, KIND_IMPRESSION, KIND_SEARCH, KIND_WATCH, NEVER_DAYS


def _pad(values: np.ndarray, length: int, dtype) -> np.ndarray:
    out = np.zeros(length, dtype=dtype)
    out[: len(values)] = values[:length]
    return out


def _choose(train_pos: np.ndarray, cap: int, how: str, seed: int, user_id: str) -> np.ndarray:
    if len(train_pos) <= cap:
        return train_pos
    if how == "recent":
        return train_pos[-cap:]
    if how == "uniform":
        rng = np.random.default_rng([seed, zlib.crc32(user_id.encode("utf-8"))])
        return np.sort(rng.choice(train_pos, size=cap, replace=False))
    raise ValueError(f"prepare.example_sampling must be 'recent' or 'uniform', got '{how}'")


def user_candidate_rows(
    user_id: str,
    w_ts: np.ndarray,
    w_vid: np.ndarray,
    w_completed: np.ndarray,
    s_ts: np.ndarray,
    s_tok: np.ndarray,
    demographics: dict,
    p: CandidateParams,
) -> pd.DataFrame:
    """All candidate rows of one user.

    Args:
        w_ts, w_vid, w_completed: the user's watches sorted by time: epoch
            seconds (float64), video vocab index (int32), completed flag (bool).
        s_ts, s_tok: the user's search tokens flattened in time order: the
            search's epoch seconds (float64) and token vocab index (int32).
        demographics: ``user_age`` (float, -1 unknown) and the
            ``DEMOGRAPHIC_COLUMNS`` vocab indices.
    Returns:
        A frame with :data:`ytspark.schema.CANDIDATE_SCHEMA` columns, one row per
        example; ``watch_hist``/``search_hist`` are length ``history_length``,
        most recent first, zero-padded.
    """
    H = p.history_length
    n = len(w_ts)
    val_pos, test_pos, train_end = split_positions(n)
    train_pos = np.flatnonzero(w_completed[:train_end] & (w_vid[:train_end] >= 2))
    train_pos = _choose(train_pos, p.max_examples_per_user, p.example_sampling, p.seed, user_id)
    labels = [(int(i), "train") for i in train_pos]
    if val_pos is not None:
        labels.append((val_pos, "val"))
    if test_pos is not None:
        labels.append((test_pos, "test"))
    if not labels:
        return pd.DataFrame(columns=[f.name for f in S.CANDIDATE_SCHEMA.fields])
    rows = {f.name: [] for f in S.CANDIDATE_SCHEMA.fields}
    for pos, split in labels:
        t = float(w_ts[pos])
        # watches strictly before t, or (ordered ties) before this watch in the user's order
        k = pos if p.ties == "ordered" else int(np.searchsorted(w_ts, t, side="left"))
        hist = w_vid[max(0, k - H):k][::-1]
        ages = (t - w_ts[max(0, k - H):k][::-1]) / DAY
        j = int(np.searchsorted(s_ts, t, side="left"))  # search tokens strictly before t (a same-second
        # search sorts after the watch: ROW_ORDER's kind)
        toks = s_tok[max(0, j - H):j][::-1]
        rows[S.USER_ID].append(user_id)
        rows[S.SPLIT].append(split)
        rows[S.CAND_LABEL].append(int(w_vid[pos]))
        rows[S.CAND_LABEL_TS].append(t)
        rows[S.CAND_WATCH_HIST].append(_pad(hist, H, np.int32))
        rows[S.CAND_WATCH_AGE].append(_pad(ages, H, np.float32))
        rows[S.CAND_SEARCH_HIST].append(_pad(toks, H, np.int32))
        rows[S.CAND_N_WATCHES].append(k)
        rows[S.CAND_SINCE_LAST].append(float((t - w_ts[k - 1]) / DAY) if k else NEVER_DAYS)
        # Example age (paper 3.3): how long before the end of the training window the
        # example happened; 0 for validation/test rows, which stand for serving time.
        rows[S.CAND_EXAMPLE_AGE].append(max(0.0, (p.window_end - t) / DAY) if split == "train" else 0.0)
        rows[S.USER_AGE].append(float(demographics.get(S.USER_AGE, -1.0)))
        for c in S.DEMOGRAPHIC_COLUMNS:
            rows[c].append(int(demographics.get(c, S.OOV)))
    out = pd.DataFrame(rows)
    for f in (S.CAND_LABEL, S.CAND_N_WATCHES, *S.DEMOGRAPHIC_COLUMNS):
        out[f] = out[f].astype(np.int32)
    for f in (S.CAND_SINCE_LAST, S.CAND_EXAMPLE_AGE, S.USER_AGE):
        out[f] = out[f].astype(np.float32)
    return out


def frame_candidate_rows(user: pd.DataFrame, p: CandidateParams) -> pd.DataFrame:
    """Adapter from one user's sorted event frame (see ``prepare.job``) to :func:`user_candidate_rows`."""
    kind = user["kind"].to_numpy()
    w = user[kind == KIND_WATCH]
    s = user[kind == KIND_SEARCH]
    if len(s):
        tok_lists = [np.asarray(t if t is not None else [], dtype=np.int32) for t in s[S.TOKEN_IDX]]
        s_tok = np.concatenate(tok_lists) if tok_lists else np.zeros(0, np.int32)
        s_ts = np.repeat(s[S.TS].to_numpy(np.float64), [len(t) for t in tok_lists])
    else:
        s_tok, s_ts = np.zeros(0, np.int32), np.zeros(0, np.float64)
    first = user.iloc[0]
    demo = {S.USER_AGE: float(first[S.USER_AGE])}
    demo.update({c: int(first[c]) for c in S.DEMOGRAPHIC_COLUMNS})
    return user_candidate_rows(
        str(first[S.USER_ID]),
        w[S.TS].to_numpy(np.float64),
        w[S.VIDEO_IDX].to_numpy(np.int32),
        w["completed"].to_numpy(bool),
        s_ts,
        s_tok,
        demo,
        p,
    )


def _count_and_last_before(w_group: np.ndarray, w_ts: np.ndarray, q_group: np.ndarray, q_ts: np.ndarray):
    """For each query (group, t): number of watches of that group strictly before t and days since the last.

    Brute force over (query, watch) pairs, exact in time: the per-user reference for
    :func:`ytspark.features.history.count_and_last_before`.
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
