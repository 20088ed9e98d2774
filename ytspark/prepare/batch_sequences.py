"""Sequence rows (``candidate.encoder = sequence | auto``): a fixed number of windows per user, every position a target.

A window is a candidate row (:mod:`.batch_candidates`) whose label is the
window's last training watch and whose ``history_length`` history slots are the
watches before it (most recent first: strictly before the label's time, or, with
``prepare.ties = "ordered"``, before the label in prepare's order), plus
two per-slot columns (:data:`~ytspark.schema.SEQUENCE_SCHEMA`):

- ``seq_next[j]``: the target of position j, i.e. the next watch after slot j
  (slot j - 1; the label for j = 0), or 0 (no example there) when that watch is
  incomplete, out of the vocabulary, not strictly later than slot j (with
  ``ties = "excluded"`` only: a same-second pair is then no example) or slot j
  is padding;
- ``seq_search_from[j]``: position j sees ``search_hist[seq_search_from[j]:]``,
  the tokens strictly before its target's time (``history_length`` for pad).

Window ends, per user, from the last training watch backwards: the next
window ends ``stride`` watches before the start of the one after it plus
``history_length`` (``stride = 0`` or ``history_length``: at the oldest slot
of the one after it, which has no target there, so consecutive windows cover
every transition once; a smaller stride overlaps them, so a target seen with
a short context at the start of one window is seen again with a longer one).
At most ``windows`` per user; only training watches (before the validation target)
are inputs or targets. Validation and test stay the candidate rows.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ytspark import schema as S
from ytspark.features.asof import Events, inputs_before
from ytspark.features.params import CandidateParams
from ytspark.features.segments import list_column, window, window_mask
from ytspark.prepare.batch_candidates import candidate_arrays, watch_completed
from ytspark.schema import DAY, SEQUENCE_ARROW_SCHEMA

def batch_sequence_rows(batch: pa.Table | pa.RecordBatch, p: CandidateParams, vocab_tokens: pa.Array,
                        windows: int, stride: int = 0) -> pa.RecordBatch:
    """All sequence rows of every user in ``batch`` (the input of ``batch_candidate_rows``).

    Returns a record batch with :data:`SEQUENCE_ARROW_SCHEMA`; rows per user
    newest window first; every row has split ``train``.
    """
    if windows < 1:
        raise ValueError(f"prepare.sequence_windows must be >= 1, got {windows}")
    H = p.history_length
    step = H if stride <= 0 else min(stride, H)
    ev = Events.of(batch, vocab_tokens)
    c, users = ev.c, ev.users
    wi, cw, w_ts, w_vid, u_w0, n_w, ct = ev.wi, ev.cw, ev.w_ts, ev.w_vid, ev.u_w0, ev.n_w, ev.ct
    w_done = watch_completed(c, wi)
    ordered = p.ties == "ordered"
    # per watch: the global index of the first watch its inputs exclude (itself, ordered; else the first
    # watch of its tie run) and the first event they exclude
    ev_tie = wi if ordered else users.tie_start[wi]
    w_tie = cw[ev_tie]

    # Window ends (global watch indices), newest first: the last training watch, then ``step`` watches
    # before the end of the window after it (its oldest slot when step = H), while one earlier watch is left.
    train_end = np.where(n_w >= 3, n_w - 2, np.where(n_w == 2, 1, n_w))
    end = u_w0 + train_end - 1
    ends_k, user_k = [], []
    alive = train_end >= 2
    for _ in range(windows):
        idx = np.flatnonzero(alive)
        if not len(idx):
            break
        ends_k.append(end[idx])
        user_k.append(idx)
        end = np.where(alive, w_tie[np.clip(end, 0, max(len(wi) - 1, 0))] - step, end)
        alive &= end >= u_w0 + 1
    if not ends_k:
        return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in SEQUENCE_ARROW_SCHEMA],
                                          schema=SEQUENCE_ARROW_SCHEMA)
    e = np.concatenate(ends_k)
    g = np.concatenate(user_k)
    order = np.lexsort((np.concatenate([np.full(len(x), k) for k, x in enumerate(ends_k)]), g))
    e, g = e[order], g[order]

    t = w_ts[e]
    tie = ev_tie[e]
    x = inputs_before(ev, g, t, tie, H)
    w_end = w_tie[e]
    present = window_mask(w_end, u_w0[g], H)
    hidx = window(np.arange(len(wi), dtype=np.int64), w_end, u_w0[g], H, pad=-1)  # global watch index per slot
    nidx = np.concatenate([e[:, None], hidx[:, :-1]], axis=1)  # the watch after each slot
    nsafe = np.maximum(nidx, 0)
    ok = present & (nidx >= 0) & w_done[nsafe] & (w_vid[nsafe] >= S.N_SPECIAL) \
        & (ordered | (w_ts[nsafe] > w_ts[np.maximum(hidx, 0)]))
    seq_next = np.where(ok, w_vid[nsafe], 0).astype(np.int32)
    hidden = ct[tie][:, None] - ct[ev_tie[nsafe]]  # tokens at or after the target's time, before the label's
    search_from = np.where(present, np.clip(hidden, 0, H), H).astype(np.int32)
    ex_age = np.maximum(0.0, (p.window_end - t) / DAY)

    n = len(e)
    arrays = candidate_arrays(c, users.starts[g], pa.array(["train"] * n, pa.string()), w_vid[e], t, x, ex_age) + [
        list_column(seq_next, n, H, pa.int32()),
        list_column(search_from, n, H, pa.int32()),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=SEQUENCE_ARROW_SCHEMA)
