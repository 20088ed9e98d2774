"""The batch (vectorised) row builders equal the per-user reference functions, row for row.

The reference is the pure per-user code (``tests/reference_rows.py``: ``frame_candidate_rows``,
``user_ranking_rows``) run user by user over the same sorted events;
the batch path must give the same rows in the same order with the same values.
Checked on seeded random timelines (ties, OOV, incomplete watches, nulls, users
without watches), on the hand-built logs of test_prepare, and on a generated
platform through the whole Spark job.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import make_config

from ytspark import schema as S
from ytspark.features.events import TOKENS
from ytspark.features.history import count_and_last_before
from ytspark.generate import generate
from ytspark.prepare import read_inputs, run_prepare
from ytspark.prepare.batch_candidates import CANDIDATE_ARROW_SCHEMA, batch_candidate_rows
from ytspark.prepare.batch_ranking import RANKING_ARROW_SCHEMA, batch_ranking_rows
from reference_rows import frame_candidate_rows

from ytspark.features.grouping import iter_user_tables, iter_users
from ytspark.features.params import CandidateParams
from reference_rows import _count_and_last_before, user_ranking_rows

from ytspark.features.params import RankingParams
from ytspark.schema import DAY, KIND_IMPRESSION, KIND_SEARCH, KIND_WATCH

WORDS = ["cats", "dogs", "funny", "news", "funny cats", "rare"]
VOCAB_TOKENS = ["cats", "funny", "funny cats", "dogs"]  # "news" and "rare" are OOV
ORDER = [S.USER_ID, S.TS, "kind", S.VIDEO_IDX]
EVENT_SCHEMA = pa.schema([
    (S.USER_ID, pa.string()), (S.TS, pa.float64()), ("kind", pa.int32()), (S.VIDEO_IDX, pa.int32()),
    (TOKENS, pa.list_(pa.string())), ("completed", pa.bool_()), (S.CLICKED, pa.int32()),
    (S.WATCH_SECONDS, pa.float64()), (S.UPLOAD_TS, pa.float64()), (S.RANK_CHANNEL, pa.int32()),
    (S.RANK_CATEGORY, pa.int32()), (S.RANK_VIDEO_LANGUAGE, pa.int32()), (S.USER_AGE, pa.float32()),
    *[(c, pa.int32()) for c in S.DEMOGRAPHIC_COLUMNS],
])  # the Arrow types Spark hands to mapInArrow for prepare's enriched events


def random_events(seed: int, n_users: int = 200) -> pa.Table:
    """Seeded timelines in prepare's enriched-event layout, sorted by (user, ts, kind, video)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = int(rng.choice([0, 1, 2, 3, 5, 20, 60]))
        demo = {S.USER_AGE: float(rng.choice([-1.0, 23.0, 41.5])),
                **{c: int(rng.integers(1, 5)) for c in S.DEMOGRAPHIC_COLUMNS}}
        for _ in range(n):
            kind = int(rng.choice([KIND_WATCH, KIND_SEARCH, KIND_IMPRESSION], p=[0.45, 0.15, 0.4]))
            ts = 1.7e9 + int(rng.integers(0, 25)) * 3600.0 + float(rng.choice([0.0, 0.25]))  # many ties
            search = kind == KIND_SEARCH
            rows.append({
                S.USER_ID: f"u{u:03d}", S.TS: ts, "kind": kind,
                S.VIDEO_IDX: S.OOV if search else int(rng.integers(1, 9)),
                TOKENS: list(rng.choice(WORDS, int(rng.integers(0, 4)))) if search else [],
                "completed": True if search else bool(rng.random() < 0.7),
                S.CLICKED: None if kind != KIND_IMPRESSION else rng.choice([0, 1, None]),
                S.WATCH_SECONDS: None if rng.random() < 0.3 else float(rng.integers(1, 500)),
                S.UPLOAD_TS: None if rng.random() < 0.2 else ts - float(rng.integers(-2, 30)) * DAY,
                S.RANK_CHANNEL: int(rng.integers(1, 5)), S.RANK_CATEGORY: int(rng.integers(1, 4)),
                S.RANK_VIDEO_LANGUAGE: int(rng.integers(1, 4)), **demo,
            })
    df = pd.DataFrame(rows, columns=EVENT_SCHEMA.names).sort_values(ORDER, kind="stable")
    return pa.Table.from_pandas(df, schema=EVENT_SCHEMA, preserve_index=False)


def reference_candidates(events: pa.Table, p: CandidateParams, vocab_tokens: list[str]) -> pd.DataFrame:
    """The per-user path as prepare ran it before the batch path: one pandas frame per user."""
    token_map = {v: i + 2 for i, v in enumerate(vocab_tokens)}
    out = []
    for user in iter_users(iter([events.to_pandas()])):
        user = user.assign(**{S.TOKEN_IDX: [[token_map.get(t, S.OOV) for t in (ts if ts is not None else [])]
                                            for ts in user[TOKENS]]})
        out.append(frame_candidate_rows(user, p))
    return pd.concat([f for f in out if len(f)], ignore_index=True)


def reference_ranking(events: pa.Table, p: RankingParams) -> pd.DataFrame:
    frames = [user_ranking_rows(u, p) for u in iter_users(iter([events.to_pandas()]))]
    return pd.concat([f for f in frames if f is not None], ignore_index=True)


def assert_same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same columns, same row order, identical values (arrays element by element, floats bit for bit)."""
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    for c in want.columns:
        g, w = got[c].to_numpy(), want[c].to_numpy()
        if len(w) and isinstance(w[0], (np.ndarray, list)):
            g, w = np.stack(g), np.stack([np.asarray(x) for x in w])
            assert g.dtype == w.dtype, c
        elif w.dtype != object:
            g = g.astype(w.dtype)
        np.testing.assert_array_equal(g, w, err_msg=c)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cap,sampling", [(100, "recent"), (3, "recent"), (3, "uniform")])
@pytest.mark.parametrize("ties", ["ordered", "excluded"])
def test_batch_candidates_equal_reference_on_random_timelines(seed, cap, sampling, ties):
    events = random_events(seed)
    p = CandidateParams(history_length=7, max_examples_per_user=cap, example_sampling=sampling, seed=5,
                        window_end=1.7e9 + 30 * DAY, ties=ties)
    want = reference_candidates(events, p, VOCAB_TOKENS)
    got = batch_candidate_rows(events, p, pa.array(VOCAB_TOKENS, pa.string()))
    assert got.schema == CANDIDATE_ARROW_SCHEMA
    assert len(want) > 100
    assert_same_rows(got.to_pandas(), want)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_ranking_equal_reference_on_random_timelines(seed):
    events = random_events(seed)
    p = RankingParams(history_length=6, source_idx=2)
    want = reference_ranking(events, p)
    got = batch_ranking_rows(events, p)
    assert got.schema == RANKING_ARROW_SCHEMA
    assert len(want) > 100
    assert_same_rows(got.to_pandas(), want)


def test_batch_on_any_split_of_users_gives_the_same_rows():
    """Rows of a user depend only on that user: cutting the batch between users changes nothing."""
    events = random_events(3, n_users=60)
    p = CandidateParams(history_length=5, max_examples_per_user=4, window_end=1.7e9 + 30 * DAY)
    vocab = pa.array(VOCAB_TOKENS, pa.string())
    whole = batch_candidate_rows(events, p, vocab).to_pandas()
    users = events.column(S.USER_ID).to_numpy(zero_copy_only=False)
    cut = int(np.searchsorted(users, "u030"))
    parts = pd.concat([batch_candidate_rows(events.slice(0, cut), p, vocab).to_pandas(),
                       batch_candidate_rows(events.slice(cut), p, vocab).to_pandas()], ignore_index=True)
    assert_same_rows(parts, whole)


def test_empty_batch_gives_no_rows():
    events = random_events(0, n_users=0)
    assert batch_candidate_rows(events, CandidateParams(), pa.array([], pa.string())).num_rows == 0
    assert batch_ranking_rows(events, RankingParams()).num_rows == 0


def test_count_and_last_before_known_answer():
    # watches of key 1 at t=10, 20, 20; key 2 at t=5. Queries: (1, 20) sees only t=10; (1, 21) sees all three.
    w_key, w_ts = np.array([1, 1, 1, 2]), np.array([10.0, 20.0, 20.0, 5.0]) * DAY
    q_key, q_ts = np.array([1, 1, 2, 3]), np.array([20.0, 21.0, 5.0, 50.0]) * DAY
    count, since = count_and_last_before(w_key, w_ts, q_key, q_ts)
    assert list(count) == [1, 3, 0, 0]
    assert list(since) == pytest.approx([10.0, 1.0, -1.0, -1.0])
    ref_count, ref_since = _count_and_last_before(w_key, w_ts, q_key, q_ts)
    np.testing.assert_array_equal(count, ref_count)
    np.testing.assert_array_equal(since, ref_since)


def test_iter_user_tables_never_splits_a_user():
    events = random_events(4, n_users=80)
    batches = events.to_batches(max_chunksize=7)
    tables = list(iter_user_tables(iter(batches), min_rows=20))
    assert len(tables) > 5
    assert pa.concat_tables(tables).equals(events)  # nothing lost, order kept
    seen: set[str] = set()
    for t in tables:
        ids = set(t.column(S.USER_ID).to_pylist())
        assert not ids & seen  # a user appears in one table only
        seen |= ids
    assert all(t.num_rows >= 20 for t in tables[:-1])


# ---------------------------------------------------------------- through Spark

def _sorted_inputs(spark, prepared: str, cfg, tmp) -> dict[str, pa.Table]:
    """The enriched events prepare feeds each row builder, sorted as the job sorts them (Arrow types from Spark)."""
    from pyspark.sql import functions as F

    from ytspark.features.events import ROW_ORDER
    from ytspark.prepare import job as J
    from ytspark.vocab import Vocab

    m = json.loads(Path(prepared, "manifest.json").read_text())
    vocabs = {n: Vocab.load(spark, f"{prepared}/vocab/{n}.json") for n in S.VOCAB_NAMES}
    read = lambda t: spark.read.parquet(f"{prepared}/{t}")  # noqa: E731
    ev = J.enrich_events(read("events"), read("users"), read("videos"), vocabs, cfg.prepare.completed_fraction,
                         time.gmtime(m["window_end"]).tm_year)
    out = {}
    for name, skip, cols in (("cand", KIND_IMPRESSION, J.CANDIDATE_INPUT), ("rank", KIND_SEARCH, J.RANKING_INPUT)):
        path = str(tmp / name)
        ev.where(F.col("kind") != skip).select(*cols).coalesce(1).sortWithinPartitions(
            S.USER_ID, *ROW_ORDER).write.parquet(path)
        out[name] = pq.read_table(path)
    out["vocab_tokens"] = vocabs["token"].values
    out["manifest"] = m
    return out


def _written(spark, prepared: str, name: str, key: list[str]) -> pd.DataFrame:
    df = spark.read.parquet(*[f"{prepared}/{name}/{s}" for s in S.SPLITS]).toPandas()
    return df.sort_values(key, kind="stable").reset_index(drop=True)


def _check_job_against_reference(spark, prepared: str, cfg, tmp) -> None:
    inputs = _sorted_inputs(spark, prepared, cfg, tmp)
    p = cfg.prepare
    cp = CandidateParams(p.history_length, p.max_examples_per_user, p.example_sampling, p.seed,
                         inputs["manifest"]["window_end"])
    rp = RankingParams(p.history_length, 2 + S.CANDIDATE_SOURCES.index("impression"))
    want_c = reference_candidates(inputs["cand"], cp, inputs["vocab_tokens"])
    want_r = reference_ranking(inputs["rank"], rp)
    # the batch functions on the same sorted input: same rows, same order
    assert_same_rows(batch_candidate_rows(inputs["cand"], cp, pa.array(inputs["vocab_tokens"], pa.string())).to_pandas(),
                     want_c)
    assert_same_rows(batch_ranking_rows(inputs["rank"], rp).to_pandas(), want_r)
    # and what the Spark job wrote (any file order) is the same multiset of rows
    ck = [S.USER_ID, S.CAND_LABEL_TS, S.CAND_LABEL]
    assert_same_rows(_written(spark, prepared, "candidates", ck),
                     want_c.sort_values(ck, kind="stable").reset_index(drop=True))
    rk = [S.USER_ID, S.RANK_IMPRESSION_TS, S.RANK_VIDEO]
    assert_same_rows(_written(spark, prepared, "ranking", rk),
                     want_r.sort_values(rk, kind="stable").reset_index(drop=True))


@pytest.mark.spark
def test_job_rows_equal_reference_on_hand_built_logs(spark, tmp_path):
    from test_prepare import _cfg, _raw

    raw = _raw(tmp_path)
    cfg = _cfg(raw)
    out = str(tmp_path / "prepared")
    run_prepare(spark, cfg, read_inputs(spark, cfg), out)
    _check_job_against_reference(spark, out, cfg, tmp_path)


@pytest.mark.spark
@pytest.mark.slow
def test_job_rows_equal_reference_on_a_generated_platform(spark, tmp_path):
    cfg = make_config("generate.users=150", "generate.videos=300", "generate.channels=30", "generate.categories=8",
                      "generate.days=20", "generate.partitions=2", "generate.seed=9",
                      "prepare.max_examples_per_user=5", "prepare.history_length=12")
    raw = tmp_path / "raw"
    generate(spark, cfg.generate, str(raw))
    cfg = replace(cfg, data=replace(cfg.data, events=f"{raw}/events", users=f"{raw}/users", videos=f"{raw}/videos"))
    out = str(tmp_path / "prepared")
    run_prepare(spark, cfg, read_inputs(spark, cfg), out)
    _check_job_against_reference(spark, out, cfg, tmp_path)
