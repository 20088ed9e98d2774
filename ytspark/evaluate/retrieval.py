"""Exact top-K over the whole catalogue with each user's seen videos excluded (numpy, in user chunks).

``topk_excluding(score_block, evalset, k)`` asks ``score_block(start, stop)``
for the scores [stop - start, n_items] of a block of users, masks pad, OOV
and the seen videos, and keeps the K best with ``argpartition`` then a sort
(equal scores inside the list ordered by video index; which of several
videos tied at the K-th place gets in is unspecified, so give exact ties a
tie-break in the scores when it matters, as ``popularity_scores`` does). Slots a user cannot fill (catalogue
smaller than K plus their seen set) hold pad (0).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ytspark.evaluate.protocol import EvalSet
from ytspark.schema import N_SPECIAL

ScoreBlock = Callable[[int, int], np.ndarray]
MAX_BLOCK_ELEMS = 1 << 24  # scores held at once (128 MiB of float64): caps the user chunk on big catalogues


def topk_excluding(score_block: ScoreBlock, evalset: EvalSet, k: int, chunk_users: int = 1024) -> np.ndarray:
    """int64 [B, k] video indices, best first, never pad/OOV/seen (pad 0 fills slots that cannot be filled).

    ``score_block(start, stop)`` returns float scores [stop - start, n_items]
    for users ``evalset.user_ids[start:stop]`` (column = video index);
    -inf marks a video the system cannot recommend. Users are scored
    ``chunk_users`` at a time, fewer when the catalogue is large.
    """
    B, V = len(evalset), evalset.n_items
    if k < 1:
        raise ValueError(f"top-K needs k >= 1, got {k}")
    out = np.zeros((B, k), np.int64)
    kk = min(k, V)
    chunk = max(1, min(chunk_users, MAX_BLOCK_ELEMS // max(V, 1)))
    for start in range(0, B, chunk):
        stop = min(B, start + chunk)
        s = np.array(score_block(start, stop), dtype=np.float64, copy=True)
        if s.shape != (stop - start, V):
            raise ValueError(f"score_block({start}, {stop}) returned shape {s.shape}, expected {(stop - start, V)}")
        s[:, :N_SPECIAL] = -np.inf
        lo, hi = evalset.seen_indptr[start], evalset.seen_indptr[stop]
        rows = np.repeat(np.arange(stop - start), np.diff(evalset.seen_indptr[start:stop + 1]))
        s[rows, evalset.seen_indices[lo:hi]] = -np.inf
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < V else np.tile(np.arange(V), (stop - start, 1))
        ps = np.take_along_axis(s, part, axis=1)
        order = np.lexsort((part, -ps), axis=1)  # score descending, then video index ascending
        best = np.take_along_axis(part, order, axis=1)
        best_s = np.take_along_axis(ps, order, axis=1)
        out[start:stop, :kk] = np.where(np.isfinite(best_s), best, 0)
    return out
