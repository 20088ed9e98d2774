"""Candidate rows of a whole Arrow batch of users at once (what ``prepare`` runs; settings: ``features/params.py``).

:func:`batch_candidate_rows` gives, user after user, exactly the rows of
``frame_candidate_rows`` (``tests/reference_rows.py``) (same values, same
order: users in batch order, labels in time order) with no Python loop per
user or per row, except for ``example_sampling="uniform"``, where the
reference's seeded draw runs once for each user whose labels exceed the cap.
"""
from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytspark import schema as S
from ytspark.features.asof import Events, inputs_before
from ytspark.features.params import CandidateParams, check_sampling
from ytspark.features.segments import exclusive_cumsum, list_column, take
from ytspark.schema import CANDIDATE_ARROW_SCHEMA, DAY

SPLIT_NAMES = pa.array(list(S.SPLITS), pa.string())  # split code = position in S.SPLITS


def _capped(eligible: np.ndarray, w_user: np.ndarray, w_pos: np.ndarray, u_w0: np.ndarray,
            user_ids: pa.Array, user_start: np.ndarray, p: CandidateParams) -> np.ndarray:
    """The eligible training labels that survive the per-user cap (``tests/reference_rows.py`` ``_choose``)."""
    cap = p.max_examples_per_user
    per_user = np.bincount(w_user[eligible], minlength=len(u_w0))
    if not (per_user > cap).any():
        return eligible
    before = exclusive_cumsum(eligible)
    rank = before[:-1] - before[u_w0][w_user]  # rank of each eligible watch within its user
    if p.example_sampling == "recent":
        return eligible & (rank >= per_user[w_user] - cap)
    keep = eligible & (per_user[w_user] <= cap)
    for u in np.flatnonzero(per_user > cap):
        idx = np.flatnonzero(eligible & (w_user == u))
        user_id = user_ids[int(user_start[u])].as_py()
        rng = np.random.default_rng([p.seed, zlib.crc32(user_id.encode("utf-8"))])
        chosen = rng.choice(w_pos[idx], size=cap, replace=False)
        keep[idx[np.isin(w_pos[idx], chosen)]] = True
    return keep


def batch_candidate_rows(batch: pa.Table | pa.RecordBatch, p: CandidateParams, vocab_tokens: pa.Array) -> pa.RecordBatch:
    """All candidate rows of every user in ``batch``.

    Args:
        batch: events of whole users sorted by (user_id, ts, kind, video_idx)
            with columns ``user_id``, ``ts``, ``kind``, ``video_idx``,
            ``tokens`` (list<string>), ``completed``, ``user_age`` and the
            ``DEMOGRAPHIC_COLUMNS``; kinds other than watch and search are ignored.
        vocab_tokens: the token vocabulary's values (value ``i`` has id ``i + 2``).
    Returns:
        A record batch with :data:`CANDIDATE_ARROW_SCHEMA` (``CANDIDATE_SCHEMA``);
        ``watch_hist``, ``watch_hist_age``, ``search_hist`` hold ``history_length`` items.
    """
    check_sampling(p.example_sampling)
    ev = Events.of(batch, vocab_tokens)
    c, users = ev.c, ev.users
    uid = c[S.USER_ID]

    # Watches: global arrays in event order, and where each user's watches begin.
    wi, w_ts, w_vid, u_w0 = ev.wi, ev.w_ts, ev.w_vid, ev.u_w0
    w_done = watch_completed(c, wi)
    w_user = users.event_user[wi]
    w_pos = np.arange(len(wi)) - u_w0[w_user]

    # Split (``params.split_positions``) and the label watches, in time order per user.
    nu = ev.n_w[w_user]
    train_end = np.where(nu >= 3, nu - 2, np.where(nu == 2, 1, nu))
    is_val = (nu >= 3) & (w_pos == nu - 2)
    is_test = (nu >= 2) & (w_pos == nu - 1)
    eligible = (w_pos < train_end) & w_done & (w_vid >= 2)
    train = _capped(eligible, w_user, w_pos, u_w0, uid, users.starts, p)
    lab = np.flatnonzero(train | is_val | is_test)

    # Rollback: inputs end at the label event (ordered ties: its earlier same-second watches count) or at the
    # first event of its tie run (strictly before t). Same-second searches sort after watches either way.
    g = w_user[lab]
    t = w_ts[lab]
    tie = wi[lab] if p.ties == "ordered" else users.tie_start[wi[lab]]
    x = inputs_before(ev, g, t, tie, p.history_length)
    split = np.where(is_test[lab], 2, np.where(is_val[lab], 1, 0)).astype(np.int32)
    # Example age (paper 3.3): 0 for validation/test rows, which stand for serving time.
    ex_age = np.where(split == 0, np.maximum(0.0, (p.window_end - t) / DAY), 0.0)

    arrays = candidate_arrays(c, users.starts[g], SPLIT_NAMES.take(pa.array(split)), w_vid[lab], t, x, ex_age)
    return pa.RecordBatch.from_arrays(arrays, schema=CANDIDATE_ARROW_SCHEMA)


def watch_completed(c: dict, wi: np.ndarray) -> np.ndarray:
    """bool per watch (event indices ``wi``): watched past ``prepare.completed_fraction`` (an eligible label)."""
    return c["completed"].to_numpy(zero_copy_only=False)[wi].astype(bool)


def candidate_arrays(c: dict, first: np.ndarray, split: pa.Array, label: np.ndarray, t: np.ndarray,
                     x: dict[str, np.ndarray], ex_age: np.ndarray) -> list[pa.Array]:
    """The :data:`CANDIDATE_ARROW_SCHEMA` columns of n rows: ``first`` [n] an event of each row's user (for its
    id and demographics), ``split`` its split names, the label and its time, the inputs as of the label
    (:func:`~ytspark.features.asof.inputs_before`: [n, H] histories and the scalar features) and the example
    age."""
    hist, ages, search = x[S.CAND_WATCH_HIST], x[S.CAND_WATCH_AGE], x[S.CAND_SEARCH_HIST]
    k, since = x[S.CAND_N_WATCHES], x[S.CAND_SINCE_LAST]
    n, H = hist.shape
    return [
        take(c[S.USER_ID], first),
        split,
        pa.array(label, pa.int32()),
        pa.array(t, pa.float64()),
        list_column(hist, n, H, pa.int32()),
        list_column(ages.astype(np.float32), n, H, pa.float32()),
        list_column(search, n, H, pa.int32()),
        pa.array(k.astype(np.int32), pa.int32()),
        pa.array(since.astype(np.float32), pa.float32()),
        pa.array(ex_age.astype(np.float32), pa.float32()),
        _values_at(c[S.USER_AGE], first, pa.float32(), -1.0),
    ] + [_values_at(c[col], first, pa.int32(), S.OOV) for col in S.DEMOGRAPHIC_COLUMNS]


def _values_at(column: pa.Array, idx: np.ndarray, dtype: pa.DataType, fill) -> pa.Array:
    """``column[idx]`` cast to ``dtype``, nulls replaced by ``fill``."""
    return pc.fill_null(take(column, idx).cast(dtype), pa.scalar(fill, dtype))
