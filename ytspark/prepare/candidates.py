"""Candidate-generation rows: a fixed number of next-watch examples per user, with rollback.

:func:`user_candidate_rows` is the pure per-user function (numpy, testable
without Spark): each example is labelled by one completed watch and sees only
events *strictly before* the label's timestamp (last-N watched ids, last-N
search tokens, time since the last watch, example age). Per user the last
watch is the test target, the one before the validation target (DESIGN.md
"Evaluation"); training labels come from earlier watches, capped at
``max_examples_per_user``.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ytspark import schema as S
from ytspark.schema import DAY, KIND_SEARCH, KIND_WATCH, NEVER_DAYS


@dataclass(frozen=True)
class CandidateParams:
    history_length: int = 50
    max_examples_per_user: int = 100
    example_sampling: str = "recent"  # recent | uniform
    seed: int = 7
    window_end: float = 0.0  # epoch seconds of the training window's end (for example age)


def split_positions(n_watches: int) -> tuple[int | None, int | None, int]:
    """(val position, test position, end of train labels) for a user with ``n_watches`` watches."""
    if n_watches >= 3:
        return n_watches - 2, n_watches - 1, n_watches - 2
    if n_watches == 2:
        return None, 1, 1
    return None, None, n_watches


def _pad(values: np.ndarray, length: int, dtype) -> np.ndarray:
    out = np.zeros(length, dtype=dtype)
    out[: len(values)] = values[:length]
    return out


SAMPLINGS = ("recent", "uniform")


def check_sampling(how: str) -> None:
    """Refuse an unknown ``prepare.example_sampling`` with the key and the allowed values."""
    if how not in SAMPLINGS:
        raise ValueError(f"prepare.example_sampling must be 'recent' or 'uniform', got '{how}'")


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
        k = int(np.searchsorted(w_ts, t, side="left"))  # watches strictly before t
        hist = w_vid[max(0, k - H):k][::-1]
        ages = (t - w_ts[max(0, k - H):k][::-1]) / DAY
        j = int(np.searchsorted(s_ts, t, side="left"))  # search tokens strictly before t
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
