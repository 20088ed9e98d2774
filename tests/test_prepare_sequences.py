"""Sequence rows (prepare/batch_sequences.py): windows, per-position targets and the per-position rollback.

A hand-built log with a known answer (a tie, an incomplete watch, a search
between watches), and a property over seeded random timelines: every position
with a target sees exactly the user's most recent watches and search tokens
strictly before its target's time, and nothing at or after it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from test_prepare_vectorised import EVENT_SCHEMA, ORDER, VOCAB_TOKENS, random_events

from ytspark import schema as S
from ytspark.features.events import TOKENS
from ytspark.features.params import CandidateParams
from ytspark.prepare.batch_sequences import SEQUENCE_ARROW_SCHEMA, batch_sequence_rows
from ytspark.schema import DAY, KIND_SEARCH, KIND_WATCH

T0 = 1.7e9


def _event(user, day, kind, vid=S.OOV, tokens=(), done=True):
    return {S.USER_ID: user, S.TS: T0 + day * DAY, "kind": kind, S.VIDEO_IDX: vid, TOKENS: list(tokens),
            "completed": done, S.CLICKED: None, S.WATCH_SECONDS: None, S.UPLOAD_TS: None, S.RANK_CHANNEL: 1,
            S.RANK_CATEGORY: 1, S.RANK_VIDEO_LANGUAGE: 1, S.USER_AGE: 30.0,
            **{c: 2 for c in S.DEMOGRAPHIC_COLUMNS}}


def _table(rows) -> pa.Table:
    return pa.Table.from_pandas(pd.DataFrame(rows, columns=EVENT_SCHEMA.names), schema=EVENT_SCHEMA,
                                preserve_index=False)


def test_hand_built_windows_targets_and_searches():
    # watches a..g = 2..8; c is incomplete, c and d tie at day 3; f is validation, g test
    a, b, c, d, e, f, g = range(2, 9)
    rows = [_event("u", 1, KIND_WATCH, a), _event("u", 2, KIND_WATCH, b), _event("u", 3, KIND_WATCH, c, done=False),
            _event("u", 3, KIND_WATCH, d), _event("u", 3.5, KIND_SEARCH, tokens=["cats"]),
            _event("u", 4, KIND_WATCH, e), _event("u", 5, KIND_WATCH, f), _event("u", 6, KIND_WATCH, g)]
    p = CandidateParams(history_length=3, window_end=T0 + 6 * DAY, ties="excluded")
    out = batch_sequence_rows(_table(rows), p, pa.array(VOCAB_TOKENS, pa.string()), windows=5).to_pandas()
    assert list(out[S.CAND_LABEL]) == [e, b]  # newest window first; the second ends at the first's oldest slot
    assert set(out[S.SPLIT]) == {"train"}
    w1, w2 = out.iloc[0], out.iloc[1]
    assert list(w1[S.CAND_WATCH_HIST]) == [d, c, b]
    assert list(w1[S.SEQ_NEXT]) == [e, 0, 0]  # d -> e; c -> d is a tie; b -> c is incomplete
    assert list(w1[S.CAND_SEARCH_HIST]) == [2, 0, 0]  # "cats" is token 2
    assert list(w1[S.SEQ_SEARCH_FROM]) == [0, 1, 1]  # the day-3.5 search is after the day-3 targets
    np.testing.assert_allclose(w1[S.CAND_WATCH_AGE], [1.0, 1.0, 2.0])
    assert w1[S.CAND_SINCE_LAST] == pytest.approx(1.0) and w1[S.CAND_EXAMPLE_AGE] == pytest.approx(2.0)
    assert list(w2[S.CAND_WATCH_HIST]) == [a, 0, 0]
    assert list(w2[S.SEQ_NEXT]) == [b, 0, 0]
    assert list(w2[S.SEQ_SEARCH_FROM]) == [0, 3, 3]
    one = batch_sequence_rows(_table(rows), p, pa.array(VOCAB_TOKENS, pa.string()), windows=1).to_pandas()
    assert list(one[S.CAND_LABEL]) == [e]
    overlap = batch_sequence_rows(_table(rows), p, pa.array(VOCAB_TOKENS, pa.string()), windows=5,
                                  stride=2).to_pandas()
    assert list(overlap[S.CAND_LABEL]) == [e, c]  # ends 2 watches apart: e (history d c b), then c (history b a)
    assert list(overlap.iloc[1][S.CAND_WATCH_HIST]) == [b, a, 0]
    assert list(overlap.iloc[1][S.SEQ_NEXT]) == [0, b, 0]  # c is incomplete; a -> b


def test_hand_built_ordered_ties_make_a_same_second_pair_an_example():
    """ties = "ordered": c and d (same second, c first in the log's order) are a transition like any other, and
    the second window ends at c, whose inputs are the watches before it (not before its second)."""
    a, b, c, d, e, f, g = range(2, 9)
    rows = [_event("u", 1, KIND_WATCH, a), _event("u", 2, KIND_WATCH, b), _event("u", 3, KIND_WATCH, c),
            _event("u", 3, KIND_WATCH, d), _event("u", 4, KIND_WATCH, e), _event("u", 5, KIND_WATCH, f),
            _event("u", 6, KIND_WATCH, g)]
    vocab = pa.array(VOCAB_TOKENS, pa.string())
    p = CandidateParams(history_length=2, window_end=T0 + 6 * DAY, ties="ordered")
    out = batch_sequence_rows(_table(rows), p, vocab, windows=5).to_pandas()
    assert list(out[S.CAND_LABEL]) == [e, c]  # e (history d c), then c (history b a)
    assert list(out.iloc[0][S.SEQ_NEXT]) == [e, d]  # c -> d counts: d is after c in the order
    np.testing.assert_allclose(out.iloc[0][S.CAND_WATCH_AGE], [1.0, 1.0])
    assert list(out.iloc[1][S.CAND_WATCH_HIST]) == [b, a] and list(out.iloc[1][S.SEQ_NEXT]) == [c, b]
    excl = batch_sequence_rows(_table(rows), CandidateParams(history_length=2, window_end=T0 + 6 * DAY,
                                                             ties="excluded"), vocab, windows=5).to_pandas()
    assert list(excl.iloc[0][S.SEQ_NEXT]) == [e, 0]  # the same pair is no example when ties are excluded
    assert list(excl[S.CAND_LABEL]) == [e, c]


def test_users_without_training_transitions_give_no_rows():
    rows = [_event("u", 1, KIND_WATCH, 2), _event("u", 2, KIND_WATCH, 3), _event("v", 1, KIND_SEARCH, tokens=["cats"])]
    out = batch_sequence_rows(_table(rows), CandidateParams(history_length=4), pa.array(VOCAB_TOKENS), windows=3)
    assert out.num_rows == 0 and out.schema == SEQUENCE_ARROW_SCHEMA


@pytest.mark.parametrize("seed,stride", [(0, 0), (1, 0), (2, 2)])
def test_no_position_sees_its_target_or_anything_later(seed, stride):
    """ties = "excluded": strictly before the target's time."""
    events = random_events(seed)
    H = 6
    p = CandidateParams(history_length=H, window_end=T0 + 30 * DAY, ties="excluded")
    out = batch_sequence_rows(events, p, pa.array(VOCAB_TOKENS, pa.string()), windows=3, stride=stride)
    assert out.schema == SEQUENCE_ARROW_SCHEMA
    out = out.to_pandas()
    ev = events.to_pandas().sort_values(ORDER, kind="stable")
    tok_id = {v: i + 2 for i, v in enumerate(VOCAB_TOKENS)}
    checked = 0
    for user, rows in out.groupby(S.USER_ID, sort=False):
        u = ev[ev[S.USER_ID] == user]
        w = u[u["kind"] == KIND_WATCH]
        s = u[u["kind"] == KIND_SEARCH]
        s_ts = np.repeat(s[S.TS].to_numpy(), [len(x) for x in s[TOKENS]])
        s_tok = np.array([tok_id.get(x, S.OOV) for x in np.concatenate([list(x) for x in s[TOKENS]] or [[]])],
                         np.int64)
        n_w = len(w)
        train_ts = w[S.TS].to_numpy()[:n_w - 2 if n_w >= 3 else 1]
        for _, r in rows.iterrows():
            hist, age, nxt = np.asarray(r[S.CAND_WATCH_HIST]), np.asarray(r[S.CAND_WATCH_AGE]), r[S.SEQ_NEXT]
            times = np.round((r[S.CAND_LABEL_TS] - age.astype(np.float64) * DAY) * 4) / 4
            assert r[S.CAND_LABEL_TS] <= train_ts.max()  # only training watches
            for j in range(H):
                if nxt[j] == 0:
                    continue
                target_t = r[S.CAND_LABEL_TS] if j == 0 else times[j - 1]
                assert hist[j] != 0 and nxt[j] == (r[S.CAND_LABEL] if j == 0 else hist[j - 1])
                real = hist[j:] != 0
                assert (times[j:][real] < target_t).all()
                before = w[w[S.TS] < target_t][S.VIDEO_IDX].to_numpy()[::-1]  # most recent first
                assert list(hist[j:][real]) == list(before[:real.sum()])
                tw = w[(w[S.TS] == target_t) & (w[S.VIDEO_IDX] == nxt[j])]
                assert len(tw) and tw["completed"].any()
                vis = np.asarray(r[S.CAND_SEARCH_HIST])[r[S.SEQ_SEARCH_FROM][j]:]
                vis = vis[vis != 0]
                want = s_tok[s_ts < target_t][::-1]
                assert list(vis) == list(want[:len(vis)])
                checked += 1
    assert checked > 100


@pytest.mark.parametrize("seed,stride", [(0, 0), (3, 2)])
def test_ordered_ties_no_position_sees_its_target_or_anything_later_in_the_order(seed, stride):
    """ties = "ordered": every position's watches are exactly the watches before its target in prepare's order
    (same-second ones included), its target is the next one, and its searches are strictly before the target's
    second (a same-second search sorts after the watch)."""
    events = random_events(seed)
    H = 6
    p = CandidateParams(history_length=H, window_end=T0 + 30 * DAY, ties="ordered")
    out = batch_sequence_rows(events, p, pa.array(VOCAB_TOKENS, pa.string()), windows=3, stride=stride).to_pandas()
    ev = events.to_pandas().sort_values(ORDER, kind="stable")
    tok_id = {v: i + 2 for i, v in enumerate(VOCAB_TOKENS)}
    checked = same_second = 0
    for user, rows in out.groupby(S.USER_ID, sort=False):
        u = ev[ev[S.USER_ID] == user]
        w = u[u["kind"] == KIND_WATCH]
        w_vid, w_ts, w_done = w[S.VIDEO_IDX].to_numpy(), w[S.TS].to_numpy(), w["completed"].to_numpy()
        s = u[u["kind"] == KIND_SEARCH]
        s_ts = np.repeat(s[S.TS].to_numpy(), [len(x) for x in s[TOKENS]])
        s_tok = np.array([tok_id.get(x, S.OOV) for x in np.concatenate([list(x) for x in s[TOKENS]] or [[]])],
                         np.int64)
        for _, r in rows.iterrows():
            hist, nxt = np.asarray(r[S.CAND_WATCH_HIST]), np.asarray(r[S.SEQ_NEXT])
            k = int(r[S.CAND_N_WATCHES])  # the label is the user's watch number k in the order
            assert w_vid[k] == r[S.CAND_LABEL] and w_ts[k] == r[S.CAND_LABEL_TS]
            before = w_vid[:k][::-1]
            assert list(hist[:min(k, H)]) == list(before[:H]) and not hist[min(k, H):].any()
            for j in range(H):
                if nxt[j] == 0:
                    continue
                tgt = k - j  # the target's place in the order; slot j is the watch just before it
                assert nxt[j] == w_vid[tgt] and w_done[tgt] and hist[j] == w_vid[tgt - 1]
                same_second += bool(w_ts[tgt] == w_ts[tgt - 1])
                vis = np.asarray(r[S.CAND_SEARCH_HIST])[r[S.SEQ_SEARCH_FROM][j]:]
                vis = vis[vis != 0]
                want = s_tok[s_ts < w_ts[tgt]][::-1]
                assert list(vis) == list(want[:len(vis)])
                checked += 1
    assert checked > 100 and same_second > 5
