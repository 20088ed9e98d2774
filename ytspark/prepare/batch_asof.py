"""Candidate-model inputs as of any event of a user batch: what the user tower would see at that moment.

:func:`candidate_inputs_at` gives, for chosen events of a batch (e.g. every
impression), the columns a candidate row holds for a label at that event's
timestamp, with the same rollback as :func:`ytspark.prepare.batch_candidates.
batch_candidate_rows`: only watches and searches *strictly before* the event
(a tie run of equal timestamps is excluded as a whole). The example age is 0,
as at serving: the retrieval score of an impression is the score the candidate
model would have served then. For a label watch the columns equal that label's
candidate row (example age aside); ``tests/test_rank_rows.py`` checks it.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytspark import schema as S
from ytspark.prepare.batch_candidates import search_tokens
from ytspark.prepare.candidates import DAY, KIND_WATCH, NEVER_DAYS, CandidateParams
from ytspark.prepare.segments import Users, columns, exclusive_cumsum, take, window, window_mask


def _values_at(column: pa.Array, idx: np.ndarray, dtype, fill) -> np.ndarray:
    return pc.fill_null(take(column, idx), fill).to_numpy(zero_copy_only=False).astype(dtype)


def candidate_inputs_at(batch: pa.Table | pa.RecordBatch, idx: np.ndarray, p: CandidateParams,
                        vocab_tokens: pa.Array) -> dict[str, np.ndarray]:
    """Candidate-row input columns as of the events ``idx`` of ``batch``.

    Args:
        batch: events of whole users sorted by (user_id, ts, kind, event_seq), with the
            columns :func:`~ytspark.prepare.batch_candidates.batch_candidate_rows` reads.
        idx: [n] int indices of the query events (any kind) into ``batch``.
        vocab_tokens: the token vocabulary's values (value ``i`` has id ``i + 2``).
    Returns:
        numpy columns over the n queries: ``watch_hist`` [n, H] int32, ``watch_hist_age`` [n, H]
        float32 days, ``search_hist`` [n, H] int32, ``n_prior_watches`` int32,
        ``since_last_watch_days`` float32 (-1 without a watch), ``example_age_days`` 0,
        ``user_age`` float32 and the ``DEMOGRAPHIC_COLUMNS`` int32; plus ``seen_lo`` and
        ``seen_hi``: the query's watches are ``watch_video[seen_lo:seen_hi]`` of :func:`batch_watches`.
    """
    H = p.history_length
    idx = np.asarray(idx, np.int64)
    c = columns(batch)
    ts = c[S.TS].to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    kind = c["kind"].to_numpy(zero_copy_only=False)
    users = Users.of(c[S.USER_ID], ts)
    is_w = kind == KIND_WATCH
    wi = np.flatnonzero(is_w)
    cw = exclusive_cumsum(is_w)
    w_ts = ts[wi]
    w_vid = pc.fill_null(c[S.VIDEO_IDX], S.OOV).to_numpy(zero_copy_only=False)[wi].astype(np.int32)
    s_tok, ct = search_tokens(c, kind, vocab_tokens)

    g = users.event_user[idx]
    t = ts[idx]
    tie = users.tie_start[idx]
    w_end = cw[tie]
    lo = cw[users.starts][g]
    k = w_end - lo
    ages = np.where(window_mask(w_end, lo, H), (t[:, None] - window(w_ts, w_end, lo, H)) / DAY, 0.0)
    since = np.where(k > 0, (t - w_ts[np.maximum(w_end - 1, 0)]) / DAY, NEVER_DAYS) if len(w_ts) \
        else np.full(len(idx), NEVER_DAYS)
    first = users.starts[g]
    out = {
        S.CAND_WATCH_HIST: window(w_vid, w_end, lo, H).astype(np.int32),
        S.CAND_WATCH_AGE: ages.astype(np.float32),
        S.CAND_SEARCH_HIST: window(s_tok, ct[tie], ct[users.starts][g], H).astype(np.int32),
        S.CAND_N_WATCHES: k.astype(np.int32),
        S.CAND_SINCE_LAST: since.astype(np.float32),
        S.CAND_EXAMPLE_AGE: np.zeros(len(idx), np.float32),
        S.USER_AGE: _values_at(c[S.USER_AGE], first, np.float32, -1.0),
        **{col: _values_at(c[col], first, np.int32, S.OOV) for col in S.DEMOGRAPHIC_COLUMNS},
        "seen_lo": lo.astype(np.int64),
        "seen_hi": w_end.astype(np.int64),
    }
    return out


def batch_watches(batch: pa.Table | pa.RecordBatch) -> dict[str, np.ndarray]:
    """The batch's watches in order: ``index`` into the batch, ``video`` idx (int32), ``ts``, ``user`` number."""
    c = columns(batch)
    ts = c[S.TS].to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    users = Users.of(c[S.USER_ID], ts)
    wi = np.flatnonzero(c["kind"].to_numpy(zero_copy_only=False) == KIND_WATCH)
    vid = pc.fill_null(c[S.VIDEO_IDX], S.OOV).to_numpy(zero_copy_only=False)[wi].astype(np.int32)
    return {"index": wi, "video": vid, "ts": ts[wi], "user": users.event_user[wi]}
