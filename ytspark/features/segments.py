"""Index arithmetic over one batch of many users' events, sorted by (user, ts, ...): no per-user loop.

A batch is a flat array of events; each user is a contiguous segment and,
inside it, equal timestamps form contiguous *tie runs*. "Strictly before t"
is then "before the start of t's tie run", and a count of anything (watches,
search tokens) strictly before an event is a difference of exclusive prefix
sums. :func:`window` gathers the last ``length`` items before a position as a
fixed-length, most-recent-first, zero-padded matrix by index arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ytspark import schema as S


def change_mask(*keys: np.ndarray) -> np.ndarray:
    """True at 0 and wherever any of ``keys`` differs from the element before."""
    n = len(keys[0])
    m = np.zeros(n, bool)
    if n:
        m[0] = True
        for k in keys:
            m[1:] |= k[1:] != k[:-1]
    return m


def run_start(mask: np.ndarray) -> np.ndarray:
    """For every element, the index of the first element of its run (runs start where ``mask``)."""
    if not len(mask):
        return np.zeros(0, np.int64)
    return np.maximum.accumulate(np.where(mask, np.arange(len(mask)), 0))


def exclusive_cumsum(x: np.ndarray) -> np.ndarray:
    """``out[i]`` = sum of ``x[:i]``, length ``len(x) + 1``."""
    out = np.zeros(len(x) + 1, np.int64)
    np.cumsum(x, out=out[1:])
    return out


def window_mask(end: np.ndarray, lo: np.ndarray, length: int) -> np.ndarray:
    """``out[r, h]``: whether ``end[r] - 1 - h >= lo[r]``, i.e. row ``r``'s ``h``-th most recent item exists."""
    return np.arange(length)[None, :] < (end - lo)[:, None]


def gather(values: np.ndarray, idx: np.ndarray, pad=np.nan) -> np.ndarray:
    """``values[idx]`` where ``idx >= 0``, ``pad`` where ``idx == -1`` (dtype of ``values``)."""
    if not len(values):
        return np.full(idx.shape, pad, values.dtype)
    return np.where(idx >= 0, values[np.maximum(idx, 0)], pad).astype(values.dtype, copy=False)


def window(values: np.ndarray, end: np.ndarray, lo: np.ndarray, length: int, pad=0) -> np.ndarray:
    """``out[r, h] = values[end[r] - 1 - h]`` where that index is ``>= lo[r]``, else ``pad``.

    Row ``r`` holds the last ``length`` items of ``values[lo[r]:end[r]]``, most
    recent first: shape ``(len(end), length)``, dtype of ``values``. One gather
    from a sliding-window view (no index matrix).
    """
    padded = np.concatenate([np.full(length, pad, values.dtype), values])
    win = np.lib.stride_tricks.sliding_window_view(padded, length)[end][:, ::-1]  # values[end-1-h]
    return np.where(window_mask(end, lo, length), win, np.asarray(pad, values.dtype))


def string_change_mask(arr: pa.Array) -> np.ndarray:
    """:func:`change_mask` for an Arrow string column (compared in C++, no Python strings)."""
    n = len(arr)
    m = np.zeros(n, bool)
    if n:
        m[0] = True
        if n > 1:
            m[1:] = pc.not_equal(arr.slice(1), arr.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    return m


@dataclass(frozen=True)
class Users:
    """Segments of a batch sorted by (user, ts): per-event user/tie-run starts and per-user bounds."""

    event_user: np.ndarray  # user number (0..n_users-1) of every event
    tie_start: np.ndarray  # index of the first event of the same user with the same ts
    starts: np.ndarray  # first event index of every user
    ends: np.ndarray  # one past the last event index of every user

    @classmethod
    def of(cls, user_id: pa.Array, ts: np.ndarray) -> "Users":
        new_user = string_change_mask(user_id)
        starts = np.flatnonzero(new_user)
        ends = np.append(starts[1:], len(ts)).astype(np.int64)
        tie = new_user | change_mask(ts)
        return cls(np.cumsum(new_user) - 1, run_start(tie), starts, ends)


def columns(batch: pa.Table | pa.RecordBatch) -> dict[str, pa.Array]:
    """The columns of a table or record batch as single Arrow arrays, by name."""
    if isinstance(batch, pa.Table):
        return {n: c.combine_chunks() for n, c in zip(batch.column_names, batch.columns)}
    return dict(zip(batch.schema.names, batch.columns))


def user_events(batch: pa.Table | pa.RecordBatch) -> tuple[dict[str, pa.Array], np.ndarray, np.ndarray, Users]:
    """(columns by name, ``ts`` float64, ``kind``, :class:`Users`) of a batch of whole users' events sorted by
    (user_id, ts, kind, ...): what every row builder starts from."""
    c = columns(batch)
    ts = c[S.TS].to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    kind = c["kind"].to_numpy(zero_copy_only=False)
    return c, ts, kind, Users.of(c[S.USER_ID], ts)


def take(arr: pa.Array, idx: np.ndarray) -> pa.Array:
    """``arr[idx]`` for a numpy index array."""
    return arr.take(pa.array(idx, pa.int64()))


def list_column(flat: np.ndarray, rows: int, length: int, dtype: pa.DataType) -> pa.ListArray:
    """Arrow ``list<dtype>`` of ``rows`` fixed-length lists from a flat row-major array."""
    offsets = pa.array(np.arange(0, rows * length + 1, length, dtype=np.int32), pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(flat).reshape(-1), dtype))
