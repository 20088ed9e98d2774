"""Rows the ranker trains on: candidate inputs as of any event, and candidate negatives (no Spark).

Known answers: a candidate input as of a label watch is that label's candidate
row; candidate-negative rows have the watched label as their only clicked row,
never a video watched before the label, and features from strictly earlier
events only (checked against a brute force over the events).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from test_prepare_vectorised import VOCAB_TOKENS, random_events

from ytspark import schema as S
from ytspark.features.asof import candidate_inputs_at
from ytspark.features.params import CandidateParams, RankingParams
from ytspark.prepare.batch_candidates import batch_candidate_rows
from ytspark.prepare.batch_negatives import candidate_negative_rows, pick_negatives
from ytspark.prepare.batch_ranking import RANKING_ARROW_SCHEMA
from ytspark.schema import DAY, KIND_WATCH
from ytspark.score.rank import VideoMeta

V = 10  # video ids 0..9 (random_events uses 1..8; 1 is OOV)
# candidate_inputs_at keeps the strict rule (an impression and the watch it led to share a second), which is
# the candidate rows' rule with ties = "excluded"
PARAMS = CandidateParams(history_length=6, max_examples_per_user=5, window_end=1.7e9 + 30 * DAY, ties="excluded")
INPUT_COLUMNS = (S.CAND_WATCH_HIST, S.CAND_WATCH_AGE, S.CAND_SEARCH_HIST, S.CAND_N_WATCHES, S.CAND_SINCE_LAST,
                 S.USER_AGE, *S.DEMOGRAPHIC_COLUMNS)


def _stack(col) -> np.ndarray:
    a = col.to_numpy(zero_copy_only=False)
    return np.stack(a) if a.dtype == object else a


@pytest.mark.parametrize("seed", [0, 1])
def test_candidate_inputs_at_a_label_watch_equal_its_candidate_row(seed):
    events = random_events(seed)
    vocab = pa.array(VOCAB_TOKENS, pa.string())
    rows = batch_candidate_rows(events, PARAMS, vocab).to_pandas()
    users = events.column(S.USER_ID).to_numpy(zero_copy_only=False)
    ts = events.column(S.TS).to_numpy()
    first = {}
    for i, key in enumerate(zip(users, ts)):
        first.setdefault(key, i)
    idx = np.array([first[(u, t)] for u, t in zip(rows[S.USER_ID], rows[S.CAND_LABEL_TS])])
    got = candidate_inputs_at(events, idx, PARAMS, vocab)
    assert len(rows) > 100
    for c in INPUT_COLUMNS:
        want = np.stack(rows[c].to_numpy()) if rows[c].dtype == object else rows[c].to_numpy()
        np.testing.assert_array_equal(got[c], want.astype(got[c].dtype), err_msg=c)
    assert (got[S.CAND_EXAMPLE_AGE] == 0).all()  # serving semantics, whatever the split


def test_candidate_inputs_at_an_impression_see_only_earlier_events():
    """Hand-built: watches at t=10, 20 and 30 (one at 30 ties the query), a search at 25, query at 30."""
    t0 = 1.7e9
    rows = [(t0 + 10, KIND_WATCH, 3, []), (t0 + 20, KIND_WATCH, 4, []), (t0 + 25, 1, S.OOV, ["cats"]),
            (t0 + 30, KIND_WATCH, 5, []), (t0 + 30, 2, 6, []), (t0 + 40, KIND_WATCH, 7, [])]
    table = _events(rows)
    got = candidate_inputs_at(table, np.array([4]), PARAMS, pa.array(VOCAB_TOKENS, pa.string()))
    assert got[S.CAND_WATCH_HIST][0].tolist() == [4, 3, 0, 0, 0, 0]  # not 5 (same second) nor 7 (later)
    np.testing.assert_allclose(got[S.CAND_WATCH_AGE][0][:2], [10 / DAY, 20 / DAY], rtol=1e-6)
    assert got[S.CAND_SEARCH_HIST][0][0] == 2 + VOCAB_TOKENS.index("cats")
    assert got[S.CAND_N_WATCHES][0] == 2 and got[S.CAND_SINCE_LAST][0] == np.float32(10 / DAY)
    assert (got["seen_lo"][0], got["seen_hi"][0]) == (0, 2)


def _events(rows, user="u1", watch_s=None) -> pa.Table:
    """One user's enriched events from (ts, kind, video, tokens) tuples, in prepare's layout."""
    from test_prepare_vectorised import EVENT_SCHEMA

    recs = [{S.USER_ID: user, S.TS: t, "kind": k, S.VIDEO_IDX: v, "tokens": tok, "completed": True,
             S.CLICKED: None, S.WATCH_SECONDS: (watch_s or {}).get(v), S.UPLOAD_TS: None, S.RANK_CHANNEL: 2,
             S.RANK_CATEGORY: 2, S.RANK_VIDEO_LANGUAGE: 2, S.USER_AGE: 30.0,
             **{c: 2 for c in S.DEMOGRAPHIC_COLUMNS}} for t, k, v, tok in rows]
    return pa.Table.from_pylist(recs, schema=EVENT_SCHEMA)


def _meta() -> VideoMeta:
    vid = np.arange(V)
    return VideoMeta(language=np.where(vid >= 2, 2 + vid % 2, 1), channel=np.where(vid >= 2, 2 + vid % 3, 1),
                     category=np.where(vid >= 2, 2 + vid % 2, 1), upload_ts=np.full(V, 1.7e9 - 5 * DAY))


def _fixed_logits(cols: dict) -> np.ndarray:
    """Every user scores video v as v (higher id = better), whatever the inputs."""
    n = len(cols[S.CAND_N_WATCHES])
    assert all(len(v) == n for v in cols.values())
    return np.tile(np.arange(V, dtype=np.float32), (n, 1))


def test_pick_negatives_known_answer():
    logits = np.tile(np.arange(8, dtype=np.float32), (2, 1))  # top-3 of ids 2..7 = 7, 6, 5
    got, retrieved = pick_negatives(logits, [np.array([7]), np.array([], np.int32)], np.array([6, 2]),
                                    np.array([1, 2], np.uint64), pool=3, negatives=5)
    assert sorted(got[0].tolist()) == [4, 5]  # 7 seen, 6 is the label: pool = {6, 5, 4} minus the label
    assert sorted(got[1].tolist()) == [5, 6, 7]
    assert retrieved.tolist() == [True, False]  # 2 is not in the second row's top 3
    again, retrieved = pick_negatives(logits, [np.array([7]), np.array([], np.int32)], np.array([6, 2]),
                                      np.array([1, 2], np.uint64), pool=6, negatives=2)
    assert len(again[1]) == 2 and set(again[1]) <= {3, 4, 5, 6, 7} and retrieved.tolist() == [True, True]


def test_candidate_negatives_on_a_hand_built_log():
    """u1 watches 3 (t=10), 4 (t=20), 9 (t=30), 8 (t=40), 5 (t=50); labels: train 3 4 9, val 8, test 5.

    Every user scores video v as v; the pool is the top 4 not watched before: 3 and 4 are never retrieved
    (no rows: serving could not have shown them), 9, 8 and 5 are."""
    t0 = 1.7e9
    rows = [(t0 + 10 * DAY, KIND_WATCH, 3, []), (t0 + 20 * DAY, KIND_WATCH, 4, []),
            (t0 + 30 * DAY, KIND_WATCH, 9, []), (t0 + 40 * DAY, KIND_WATCH, 8, []),
            (t0 + 50 * DAY, KIND_WATCH, 5, [])]
    table = _events(rows, watch_s={9: 120.0, 8: 60.0})
    rp = RankingParams(history_length=6, source_idx=3)
    out = candidate_negative_rows(table, PARAMS, rp, pa.array(VOCAB_TOKENS, pa.string()), _fixed_logits,
                                  pool=4, negatives=3, meta=_meta()).to_pandas()
    pos = out[out[S.RANK_CLICKED] == 1].sort_values(S.RANK_IMPRESSION_TS)
    assert pos[S.RANK_VIDEO].tolist() == [9, 8, 5]
    assert pos[S.SPLIT].tolist() == ["train", "val", "test"]
    assert pos[S.RANK_WEIGHT].tolist() == [120.0, 60.0, 1.0]  # watch seconds, 1 where unknown
    negs = out[out[S.RANK_CLICKED] == 0]
    by_t = {t: set(g[S.RANK_VIDEO]) for t, g in negs.groupby(S.RANK_IMPRESSION_TS)}
    assert set(by_t) == {t0 + 30 * DAY, t0 + 40 * DAY, t0 + 50 * DAY}
    assert by_t[t0 + 30 * DAY] == {8, 7, 6}  # 3, 4 watched: top 4 = 9 8 7 6, 9 is the label
    assert by_t[t0 + 40 * DAY] == {7, 6, 5}  # 3, 4, 9 watched: top 4 = 8 7 6 5, 8 is the label
    assert by_t[t0 + 50 * DAY] == {7, 6, 2}  # 3, 4, 9, 8 watched: top 4 = 7 6 5 2, 5 is the label
    assert (negs[S.RANK_WEIGHT] == 1).all() and (out["n_prev_impressions"] == 0).all()
    # no impressions in the log: "never shown", as serving computes from the same log
    assert (out["since_impression_days"] == -1).all() and (out["prev_impression_clicked"] == 0).all()
    assert (out[S.RANK_SOURCE] == 3).all()
    np.testing.assert_array_equal(out["retrieval_score"], out[S.RANK_VIDEO].astype(np.float32))
    at40 = out[out[S.RANK_IMPRESSION_TS] == t0 + 40 * DAY]
    assert (np.stack(at40[S.CAND_WATCH_HIST]) == [9, 4, 3, 0, 0, 0]).all()  # strictly before the label
    assert (at40["since_last_watch_days"] == np.float32(10.0)).all()


def test_held_out_targets_get_the_full_retrieved_slate():
    """Same log as above, pool 5 and 1 negative: training labels get 1 unclicked row, the validation and test
    targets every other retrieved video (the list serving reranks); full_slates=False gives them 1 too."""
    t0 = 1.7e9
    rows = [(t0 + 10 * DAY, KIND_WATCH, 3, []), (t0 + 20 * DAY, KIND_WATCH, 4, []),
            (t0 + 30 * DAY, KIND_WATCH, 9, []), (t0 + 40 * DAY, KIND_WATCH, 8, []),
            (t0 + 50 * DAY, KIND_WATCH, 5, [])]
    rp = RankingParams(history_length=6, source_idx=3)
    args = (_events(rows), PARAMS, rp, pa.array(VOCAB_TOKENS, pa.string()), _fixed_logits)
    out = candidate_negative_rows(*args, pool=5, negatives=1, meta=_meta()).to_pandas()
    by_t = {t: sorted(g[S.RANK_VIDEO]) for t, g in out.groupby(S.RANK_IMPRESSION_TS)}
    split = {t: set(g[S.SPLIT]) for t, g in out.groupby(S.RANK_IMPRESSION_TS)}
    assert split == {t0 + 30 * DAY: {"train"}, t0 + 40 * DAY: {"val"}, t0 + 50 * DAY: {"test"}}
    assert len(by_t[t0 + 30 * DAY]) == 2 and 9 in by_t[t0 + 30 * DAY]  # the label and 1 of 8 7 6 5
    assert by_t[t0 + 40 * DAY] == [2, 5, 6, 7, 8]  # 3 4 9 watched: top 5 = 8 7 6 5 2
    assert by_t[t0 + 50 * DAY] == [2, 5, 6, 7]  # 3 4 9 8 watched: top 5 = 7 6 5 2 (and pad/OOV never)
    sparse = candidate_negative_rows(*args, pool=5, negatives=1, meta=_meta(), full_slates=False).to_pandas()
    assert sparse.groupby(S.RANK_IMPRESSION_TS).size().tolist() == [2, 2, 2]


@pytest.mark.parametrize("seed", [0, 2])
def test_candidate_negatives_never_use_the_label_time_or_later(seed):
    """Random timelines with ties: brute force over the events for every row."""
    events = random_events(seed)
    rp = RankingParams(history_length=6, source_idx=3)
    vocab = pa.array(VOCAB_TOKENS, pa.string())
    out = candidate_negative_rows(events, PARAMS, rp, vocab, _fixed_logits, pool=4, negatives=3,
                                  meta=_meta()).to_pandas()
    assert list(out.columns) == RANKING_ARROW_SCHEMA.names
    labels = batch_candidate_rows(events, PARAMS, vocab).to_pandas()
    ev = events.to_pandas()
    watches = ev[ev["kind"] == KIND_WATCH]

    def retrieved(uid, t, label):  # in the top 4 ids of those not watched before t (the fixed logits)
        seen = set(watches[(watches[S.USER_ID] == uid) & (watches[S.TS] < t)][S.VIDEO_IDX])
        return label in sorted(set(range(2, V)) - seen, reverse=True)[:4]

    want = [k for k in zip(labels[S.USER_ID], labels[S.CAND_LABEL_TS], labels[S.CAND_LABEL]) if retrieved(*k)]
    pos = out[out[S.RANK_CLICKED] == 1]
    assert sorted(zip(pos[S.USER_ID], pos[S.RANK_IMPRESSION_TS], pos[S.RANK_VIDEO])) == sorted(want)
    assert 50 < len(want) < len(labels)
    meta = _meta()
    checked = 0
    for (uid, t), g in out.groupby([S.USER_ID, S.RANK_IMPRESSION_TS]):
        before = watches[(watches[S.USER_ID] == uid) & (watches[S.TS] < t)]
        seen = set(before[S.VIDEO_IDX])
        negs = g[g[S.RANK_CLICKED] == 0]
        assert not seen & set(negs[S.RANK_VIDEO]), (uid, t)  # never a video watched before the label
        hist = list(before[S.VIDEO_IDX])[::-1][:6]  # events are in time order: most recent first
        for _, r in g.iterrows():
            assert list(r[S.CAND_WATCH_HIST]) == hist + [0] * (6 - len(hist)), (uid, t)
            assert r[S.RANK_CHANNEL] == meta.channel[r[S.RANK_VIDEO]]
            same = before[before[S.RANK_CHANNEL] == r[S.RANK_CHANNEL]]
            assert r["channel_watches"] == len(same)
            if len(same):
                assert r["since_channel_watch_days"] == np.float32((t - same[S.TS].max()) / DAY)
            checked += 1
    assert checked > 300


def test_pick_negatives_takes_the_hard_ones_first():
    logits = np.tile(np.arange(12, dtype=np.float32), (3, 1))  # ids 2..11, higher = better
    got, retrieved = pick_negatives(logits, [np.array([11]), np.array([], np.int32), np.array([10])],
                                    np.array([10, 3, 2]), np.arange(3, dtype=np.uint64), pool=8, negatives=4, hard=2)
    assert {9, 8} <= set(got[0]) and 11 not in got[0] and 10 not in got[0]  # 11 seen, 10 the label
    assert {11, 10} <= set(got[1]) and {11, 9} <= set(got[2]) and 10 not in got[2]
    assert all(len(g) == 4 for g in got)
    assert retrieved.tolist() == [True, False, False]  # 3 and 2 are not in their rows' top 8


# ------------------------------------------------- impressions that ask the candidate model the same question

def _candidate_model(seed: int, **kw):
    import torch

    from ytspark.models.candidate import CandidateConfig, CandidateModel

    quantiles = {S.USER_AGE: [-1.0, 18.0, 30.0, 50.0], S.CAND_EXAMPLE_AGE: [0.0, 1.0, 5.0],
                 S.CAND_SINCE_LAST: [-1.0, 0.01, 0.5, 2.0]}
    torch.manual_seed(seed)
    cfg = CandidateConfig(n_videos=V, n_tokens=len(VOCAB_TOKENS) + 2, embed_dim=8, hidden=(16,), attn_heads=2,
                          demographic_vocab_sizes=tuple(6 for _ in S.DEMOGRAPHIC_COLUMNS), **kw)
    model = CandidateModel(cfg, quantiles).eval()
    with torch.no_grad():
        model.out_bias.normal_(0.0, 0.5)
    return model


def test_distinct_queries_group_impressions_between_the_same_actions():
    """u1: watch 10, imps 12 and 13, search 15, imp 16, watch 20 with an imp in its second (the tie: it sees
    only what imp 16 saw), imp 30; u2: imp 5, imp 6."""
    from ytspark.features.asof import Events, distinct_queries

    t0 = 1.7e9
    u1 = _events([(t0 + 10, KIND_WATCH, 3, []), (t0 + 12, 2, 4, []), (t0 + 13, 2, 5, []), (t0 + 15, 1, S.OOV, ["cats"]),
                  (t0 + 16, 2, 6, []), (t0 + 20, KIND_WATCH, 6, []), (t0 + 20, 2, 7, []), (t0 + 30, 2, 8, [])])
    u2 = _events([(t0 + 5, 2, 3, []), (t0 + 6, 2, 4, [])], user="u2")
    table = pa.concat_tables([u1, u2])
    e = Events.of(table, pa.array(VOCAB_TOKENS, pa.string()))
    ii = np.flatnonzero(table.column("kind").to_numpy() == 2)
    assert ii.tolist() == [1, 2, 4, 6, 7, 8, 9]
    rep, group = distinct_queries(e, ii)
    assert rep.tolist() == [1, 4, 7, 8] and group.tolist() == [0, 0, 1, 1, 2, 3, 3]
    np.testing.assert_array_equal(rep[group][[0, 2, 4, 5]], ii[[0, 2, 4, 5]])
    got = candidate_inputs_at(table, ii, PARAMS, pa.array(VOCAB_TOKENS, pa.string()))
    for c in (S.CAND_WATCH_HIST, S.CAND_SEARCH_HIST, S.CAND_N_WATCHES):  # what a group's queries see is one thing
        np.testing.assert_array_equal(got[c], got[c][np.searchsorted(ii, rep)[group]])


@pytest.mark.parametrize("kw", [dict(encoder="sequence"), dict(recency="last_k"), dict(recency="none"),
                                dict(recency="attention"), dict(recency="weighted")])
def test_a_query_that_reads_no_time_gives_one_vector_for_the_same_events_later(kw):
    """query_reads_time False: the same inputs a day later (every age + 1, another gap to the last watch) give
    the same query vector (ages enter as differences or through a softmax); with query_gap = "as_of" a model
    that reads the gap does not, and it says True."""
    import torch

    from ytspark.models.features import batch_from_numpy

    events = random_events(3)
    ii = np.flatnonzero(events.column("kind").to_numpy() != KIND_WATCH)
    cols = candidate_inputs_at(events, ii, PARAMS, pa.array(VOCAB_TOKENS, pa.string()))
    later = dict(cols)
    real = cols[S.CAND_WATCH_HIST] != S.PAD
    later[S.CAND_WATCH_AGE] = np.where(real, cols[S.CAND_WATCH_AGE] + 1.0, 0.0).astype(np.float32)
    s = cols[S.CAND_SINCE_LAST]
    later[S.CAND_SINCE_LAST] = np.where(s >= 0, s + 1.0, s).astype(np.float32)
    assert real.any(axis=1).sum() > 50

    def vectors(model, c):
        with torch.no_grad():
            return model.query_vector(batch_from_numpy(c, serving=True)).numpy()

    model = _candidate_model(0, **kw)
    assert model.query_reads_time is False
    np.testing.assert_allclose(vectors(model, later), vectors(model, cols), rtol=1e-5, atol=1e-5)
    model = _candidate_model(0, **kw, query_gap="as_of")
    if kw.get("recency") in ("none", "weighted"):  # the bag reads the gap with last_k and attention only
        assert model.query_reads_time is False
        np.testing.assert_allclose(vectors(model, later), vectors(model, cols), rtol=1e-5, atol=1e-5)
    else:
        assert model.query_reads_time is True
        assert np.abs(vectors(model, later) - vectors(model, cols)).max() > 1e-3


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kw", [dict(encoder="sequence"), dict(recency="weighted"),
                                dict(recency="last_k", query_gap="as_of")])
def test_impression_rows_score_each_distinct_query_once_with_every_impressions_own_score(seed, kw):
    """The ranker's retrieval_score of every impression row equals the candidate logit computed from that
    impression's own inputs, while the model was asked once per group of impressions that see the same events."""
    from ytspark.features.asof import Events, distinct_queries
    from ytspark.models.covisit import build_covisitation
    from ytspark.train.rank_rows import CandidateScorer, scored_impression_rows

    events = random_events(seed)
    vocab = pa.array(VOCAB_TOKENS, pa.string())
    model = _candidate_model(seed, **kw)
    hist = np.array([[5, 4, 3], [6, 5, 0], [7, 3, 0]], np.int32)
    cv = build_covisitation(hist, np.array([6, 7, 8]), V, 3, 5, 2, 0.7).with_weight(1.5)
    scorer = CandidateScorer(model, cv)
    asked = []
    user_vectors = scorer.user_vectors
    scorer.user_vectors = lambda cols: asked.append(len(cols[S.CAND_N_WATCHES])) or user_vectors(cols)
    rp = RankingParams(history_length=6, source_idx=3)
    got = scored_impression_rows(events, PARAMS, rp, vocab, scorer).to_pandas()
    ii = np.flatnonzero(events.column("kind").to_numpy() == 2)
    want = CandidateScorer(model, cv).pair_logits(candidate_inputs_at(events, ii, PARAMS, vocab),
                                                  got[S.RANK_VIDEO].to_numpy())
    assert len(got) == len(ii) > 100
    np.testing.assert_allclose(got["retrieval_score"], want, rtol=1e-5, atol=1e-5)
    groups = len(distinct_queries(Events.of(events, vocab), ii)[0])
    assert sum(asked) == (len(ii) if model.query_reads_time else groups) and groups < 0.9 * len(ii)
