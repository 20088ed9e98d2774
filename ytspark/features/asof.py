"""Features as of a moment, for a batch of whole users: what the models would see then.

One place for "the user's inputs before a cut", used by every stage: :class:`Events` parses a batch once
and :func:`inputs_before` gives the candidate inputs (last H watches with their ages, search tokens, watch
count, time since the last watch, demographics) of any (user, time, cut) queries. Prepare's candidate and
sequence rows call it with their label rollback (``prepare.ties``); the entry points below call it for the
other stages:

- :func:`candidate_inputs_at` (train-ranker, candidate negatives): the
  candidate-row inputs as of chosen events of the batch (e.g. every
  impression), with the same rollback as :func:`ytspark.prepare.batch_candidates.
  batch_candidate_rows` with ``prepare.ties = "excluded"``: only watches and
  searches *strictly before* the event (a tie run of equal timestamps is
  excluded as a whole, whatever ``prepare.ties``: an impression and the watch
  it led to often share a second);
- :func:`inputs_at_end` (nightly scoring): the same columns as of a cut-off
  later than every event of the batch (the run date's end), one row per user,
  plus what serving reads beside them: ``seen`` (the user's distinct
  in-vocabulary watched videos, excluded from the lists) and, per channel and
  per category, the watch count and days since the last such watch (the
  ranker's affinity features, defined as in
  :func:`ytspark.features.history.count_and_last_before`).

The example age is 0, as at serving. For a label watch the columns equal that
label's candidate row (example age aside); ``tests/test_rank_rows.py`` and
``tests/test_score.py`` check both entry points against the per-user reference
``user_candidate_rows`` (``tests/reference_rows.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytspark import schema as S
from ytspark.features.events import search_tokens
from ytspark.features.params import CandidateParams
from ytspark.features.segments import Users, columns, exclusive_cumsum, take, user_events, window, window_mask
from ytspark.schema import DAY, KIND_WATCH, NEVER_DAYS


def _values_at(column: pa.Array, idx: np.ndarray, dtype, fill) -> np.ndarray:
    return pc.fill_null(take(column, idx), fill).to_numpy(zero_copy_only=False).astype(dtype)


@dataclass
class Events:
    """The parsed columns of a batch of whole users' events: users, watches (in event order) and search tokens.
    Every builder of candidate inputs starts here (prepare's rows and sequences, train-ranker's rows, serving)."""

    c: dict
    ts: np.ndarray
    users: Users
    wi: np.ndarray  # event index of every watch
    cw: np.ndarray  # watches before each event (exclusive cumsum, len n + 1)
    w_ts: np.ndarray
    w_vid: np.ndarray  # int32, OOV where null
    s_tok: np.ndarray
    ct: np.ndarray  # search tokens before each event (exclusive cumsum)

    @classmethod
    def of(cls, batch: pa.Table | pa.RecordBatch, vocab_tokens: pa.Array) -> "Events":
        c, ts, kind, users = user_events(batch)
        is_w = kind == KIND_WATCH
        wi = np.flatnonzero(is_w)
        w_vid = pc.fill_null(c[S.VIDEO_IDX], S.OOV).to_numpy(zero_copy_only=False)[wi].astype(np.int32)
        s_tok, ct = search_tokens(c, kind, vocab_tokens)
        return cls(c, ts, users, wi, exclusive_cumsum(is_w), ts[wi], w_vid, s_tok, ct)

    @property
    def u_w0(self) -> np.ndarray:
        """Global watch index of each user's first watch."""
        return self.cw[self.users.starts]

    @property
    def n_w(self) -> np.ndarray:
        """Watches per user."""
        return self.cw[self.users.ends] - self.u_w0


def inputs_before(e: Events, g: np.ndarray, t: np.ndarray, cut: np.ndarray, H: int) -> dict[str, np.ndarray]:
    """Candidate inputs of queries (user number ``g``, time ``t``) that see the events before index ``cut``:
    the last ``H`` watches (ids, ages in days at ``t``) and search tokens, the watch count, the days since the
    last watch (``NEVER_DAYS`` without one), example age 0, user age and demographics; ``seen_lo``/``seen_hi``
    bound the query's watches in ``e.w_vid``."""
    w_end = e.cw[cut]
    lo = e.cw[e.users.starts][g]
    k = w_end - lo
    ages = np.where(window_mask(w_end, lo, H), (t[:, None] - window(e.w_ts, w_end, lo, H)) / DAY, 0.0)
    since = np.where(k > 0, (t - e.w_ts[np.maximum(w_end - 1, 0)]) / DAY, NEVER_DAYS) if len(e.w_ts) \
        else np.full(len(g), NEVER_DAYS)
    first = e.users.starts[g]
    return {
        S.CAND_WATCH_HIST: window(e.w_vid, w_end, lo, H).astype(np.int32),
        S.CAND_WATCH_AGE: ages.astype(np.float32),
        S.CAND_SEARCH_HIST: window(e.s_tok, e.ct[cut], e.ct[e.users.starts][g], H).astype(np.int32),
        S.CAND_N_WATCHES: k.astype(np.int32),
        S.CAND_SINCE_LAST: since.astype(np.float32),
        S.CAND_EXAMPLE_AGE: np.zeros(len(g), np.float32),
        S.USER_AGE: _values_at(e.c[S.USER_AGE], first, np.float32, -1.0),
        **{col: _values_at(e.c[col], first, np.int32, S.OOV) for col in S.DEMOGRAPHIC_COLUMNS},
        "seen_lo": lo.astype(np.int64),
        "seen_hi": w_end.astype(np.int64),
    }


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
    return inputs_at(Events.of(batch, vocab_tokens), idx, p)


def inputs_at(e: Events, idx: np.ndarray, p: CandidateParams) -> dict[str, np.ndarray]:
    """:func:`candidate_inputs_at` of parsed events."""
    idx = np.asarray(idx, np.int64)
    return inputs_before(e, e.users.event_user[idx], e.ts[idx], e.users.tie_start[idx], p.history_length)


def distinct_queries(e: Events, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Queries at the events ``idx`` (ascending) grouped by what they see: the same user and the same watches
    and searches before them (impressions between two of a user's actions). Returns (``rep``: the first query
    event of each group, ``group`` [n]: each query's group; ``rep[group[i]]`` stands for ``idx[i]``). The
    inputs of a group's queries differ only in the ages of what they see (:func:`inputs_before`), which a
    model whose ``query_reads_time`` is False does not read."""
    idx = np.asarray(idx, np.int64)
    if not len(idx):
        return idx, np.zeros(0, np.int64)
    g, cut = e.users.event_user[idx], e.users.tie_start[idx]
    w, s = e.cw[cut], e.ct[cut]
    new = np.r_[True, (g[1:] != g[:-1]) | (w[1:] != w[:-1]) | (s[1:] != s[:-1])]
    return idx[new], np.cumsum(new) - 1


def per_user_groups(user: np.ndarray, key: np.ndarray, ts: np.ndarray, n_users: int, as_of: float | np.ndarray,
                    weight: np.ndarray | None = None):
    """Per user, sorted distinct ``key`` values with their count and days from the last one to ``as_of`` (one
    cut-off, or [n_users] each user's own): the ranker's channel/category affinity, defined as
    :func:`ytspark.features.history.count_and_last_before` (the events given must be the ones before the cut).
    ``weight``: rows that stand for that many events each (pre-aggregated (user, key) counts; ``ts`` their last).

    Returns (offsets [n_users + 1] int64, ids int64, counts float32, days float32).
    """
    if not len(key):
        return np.zeros(n_users + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), \
            np.zeros(0, np.float32)
    width = np.int64(int(key.max()) + 1)
    k = user.astype(np.int64) * width + key.astype(np.int64)
    order = np.argsort(k, kind="stable")
    ks = k[order]
    start = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    counts = (np.diff(np.r_[start, len(ks)]) if weight is None
              else np.add.reduceat(np.asarray(weight, np.float64)[order], start)).astype(np.float32)
    last = np.maximum.reduceat(ts[order], start)
    u = ks[start] // width
    offsets = np.zeros(n_users + 1, np.int64)
    np.cumsum(np.bincount(u, minlength=n_users), out=offsets[1:])
    cut = as_of[u] if isinstance(as_of, np.ndarray) else as_of
    return offsets, ks[start] % width, counts, ((cut - last) / DAY).astype(np.float32)


def inputs_at_end(batch: pa.Table | pa.RecordBatch, as_of: float, p: CandidateParams, vocab_tokens: pa.Array,
                  affinity_columns: tuple[str, ...] = ()) -> dict:
    """Every user's inputs as of ``as_of`` (later than every event of ``batch``): one row per user.

    Args:
        batch: as for :func:`candidate_inputs_at`; rows of kinds other than watch and search
            (impressions, a per-user marker row) only make the user present.
        affinity_columns: event columns (e.g. ``channel_idx``, ``category_idx``) to group each
            user's watches by.
    Returns:
        ``user_id`` (object [U]) and the :func:`candidate_inputs_at` columns over the U users, plus
        ``seen``: (offsets [U + 1], sorted distinct watched video idx >= 2) and, per affinity column,
        (offsets, ids, watch counts float32, days since the last such watch float32), ids sorted.
    """
    e = Events.of(batch, vocab_tokens)
    starts, ends = e.users.starts, e.users.ends
    U = len(starts)
    g = np.arange(U)
    out = inputs_before(e, g, np.full(U, float(as_of)), ends, p.history_length)
    out[S.USER_ID] = take(e.c[S.USER_ID], starts).to_numpy(zero_copy_only=False)
    w_user = e.users.event_user[e.wi]
    ok = e.w_vid >= 2
    off, ids, _, _ = per_user_groups(w_user[ok], e.w_vid[ok], e.w_ts[ok], U, as_of)
    out["seen"] = (off, ids)
    for col in affinity_columns:
        v = pc.fill_null(e.c[col], S.OOV).to_numpy(zero_copy_only=False)[e.wi].astype(np.int64)
        out[col] = per_user_groups(w_user, v, e.w_ts, U, as_of)
    return out


def batch_watches(batch: pa.Table | pa.RecordBatch) -> dict[str, np.ndarray]:
    """The batch's watches in order: ``index`` into the batch, ``video`` idx (int32), ``ts``, ``user`` number."""
    c = columns(batch)
    ts = c[S.TS].to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    users = Users.of(c[S.USER_ID], ts)
    wi = np.flatnonzero(c["kind"].to_numpy(zero_copy_only=False) == KIND_WATCH)
    vid = pc.fill_null(c[S.VIDEO_IDX], S.OOV).to_numpy(zero_copy_only=False)[wi].astype(np.int32)
    return {"index": wi, "video": vid, "ts": ts[wi], "user": users.event_user[wi]}
