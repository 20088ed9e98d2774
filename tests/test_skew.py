"""Impression features: one definition for training rows and serving, and the train/serve skew check.

Hand-built logs with repeated impressions of the same video (some clicked),
impressions tied in time with each other and with watches, and one at
exactly the serving cut-off, run through the real ``prepare``.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from helpers import DAY, T0, make_config, write_jsonl

from ytspark import schema as S
from ytspark.features.history import impression_history
from ytspark.prepare import read_inputs, run_prepare

RUN_DATE = "2023-12-01"
AS_OF = dt.datetime(2023, 12, 2, tzinfo=dt.timezone.utc).timestamp()  # the end of RUN_DATE


def test_impression_history_counts_strictly_earlier_impressions_of_the_same_pair():
    # key = user * 100 + video: (0, 5) shown at 10 (clicked), 20, 30; (1, 5) at 15; (0, 6) at 25 (clicked)
    key = np.array([5, 5, 5, 105, 6])
    ts = np.array([10.0, 20.0, 30.0, 15.0, 25.0]) * DAY
    clicked = np.array([1, 0, 0, 0, 1])
    q_key = np.array([5, 5, 105, 6, 6, 7])
    q_ts = np.array([30.0, 10.0, 30.0, 25.0, 26.0, 30.0]) * DAY
    n, since, was_clicked = impression_history(key, ts, clicked, q_key, q_ts)
    assert n.tolist() == [2, 0, 1, 0, 1, 0]  # at 30: the one at 30 itself is not before; (1, 5) is its own pair
    assert since.tolist() == pytest.approx([10.0, -1.0, 15.0, -1.0, 1.0, -1.0])
    assert was_clicked.tolist() == [1, 0, 0, 0, 1, 0]  # (0, 6) at 25 counts only after 25


def _logs():
    rng = np.random.default_rng(4)
    events, users = [], []
    for u in range(8):
        uid = f"u{u}"
        users.append({"user_id": uid, "country": ["NL", "DE"][u % 2], "language": ["nl", "de"][u % 2], "age": 30.0})
        for d in np.sort(rng.uniform(0, 15, 6)):
            events.append({"event_ts": T0 + d * DAY, "user_id": uid, "event_type": "watch",
                           "video_id": f"v{int(rng.integers(0, 12))}", "watch_seconds": 50.0, "video_seconds": 100.0})
        for d in rng.uniform(0, 16, 10):
            v = f"v{int(rng.integers(0, 4))}"  # four videos only: repeated impressions of the same video
            c = int(rng.random() < 0.3)
            events.append({"event_ts": T0 + float(d) * DAY, "user_id": uid, "event_type": "impression",
                           "video_id": v, "clicked": c, "watch_seconds": 40.0 if c else 0.0})
        # two impressions at the same second, at the time of a watch (the same pair twice is a duplicate)
        t = T0 + 8 * DAY
        events += [{"event_ts": t, "user_id": uid, "event_type": "impression", "video_id": "v1", "clicked": 1,
                    "watch_seconds": 10.0},
                   {"event_ts": t, "user_id": uid, "event_type": "impression", "video_id": "v3", "clicked": 0},
                   {"event_ts": t, "user_id": uid, "event_type": "watch", "video_id": "v2", "watch_seconds": 9.0}]
    # known answers at the cut-off of RUN_DATE: user a and user b
    users += [{"user_id": "a", "country": "NL", "age": 20.0}, {"user_id": "b", "country": "DE", "age": 20.0}]
    for uid in ("a", "b"):
        events.append({"event_ts": T0, "user_id": uid, "event_type": "watch", "video_id": "v9"})
    events += [
        {"event_ts": AS_OF - 2 * DAY, "user_id": "a", "event_type": "impression", "video_id": "v1", "clicked": 1,
         "watch_seconds": 30.0},
        {"event_ts": AS_OF - 1 * DAY, "user_id": "a", "event_type": "impression", "video_id": "v1", "clicked": 0},
        {"event_ts": AS_OF, "user_id": "a", "event_type": "impression", "video_id": "v2", "clicked": 1,
         "watch_seconds": 30.0},  # exactly at the cut-off: not before it
        {"event_ts": AS_OF - 0.5 * DAY, "user_id": "b", "event_type": "impression", "video_id": "v2", "clicked": 0},
    ]
    videos = [{"video_id": f"v{i}", "upload_ts": T0 - i * DAY, "duration_seconds": 100.0, "language": "nl",
               "channel_id": f"ch{i % 3}", "category": f"cat{i % 2}"} for i in range(12)]
    return events, users, videos


@pytest.fixture(scope="module")
def prepared(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("skew")
    events, users, videos = _logs()
    cfg = make_config(f'data.events="{write_jsonl(tmp / "events.jsonl", events)}"',
                      f'data.users="{write_jsonl(tmp / "users.jsonl", users)}"',
                      f'data.videos="{write_jsonl(tmp / "videos.jsonl", videos)}"',
                      "prepare.history_length=4", "prepare.token_min_count=1", "prepare.target_shards=1",
                      'validate.as_of="2024-01-01"')
    out = str(tmp / "prepared")
    run_prepare(spark, cfg, read_inputs(spark, cfg), out)
    return out


def test_serving_impression_features_at_the_cut_off(spark, prepared):
    from ytspark.score.features import Encoder, IMPRESSIONS, collect_serving_columns, load_vocabs, serving_events

    vocabs = load_vocabs(spark, prepared)
    events = serving_events(spark, prepared, AS_OF, impressions=True).where("user_id in ('a', 'b')")
    cols = collect_serving_columns(events, AS_OF, 4, Encoder.of(vocabs, AS_OF), impressions=True)
    imp, video = cols[IMPRESSIONS], vocabs["video"]
    got = {}
    for r, uid in enumerate(cols[S.USER_ID]):
        for i in range(imp.offsets[r], imp.offsets[r + 1]):
            got[(uid, video.values[imp.ids[i] - 2])] = (imp.counts[i], imp.since[i], imp.flag[i])
    # a: v1 twice (the clicked one counts once, as one impression); v2 at the cut-off is left out.
    # b: its own v2 only; nothing of a's leaks to b or back.
    assert got == {("a", "v1"): (2.0, pytest.approx(1.0), 1.0), ("b", "v2"): (1.0, pytest.approx(0.5), 0.0)}


def test_training_rows_count_the_same_earlier_impressions(spark, prepared):
    rows = spark.read.parquet(f"{prepared}/ranking/*").toPandas()
    a = rows[rows[S.USER_ID] == "a"].sort_values(S.RANK_IMPRESSION_TS)
    assert a["n_prev_impressions"].tolist() == [0.0, 1.0, 0.0]  # v1, v1, v2
    assert a["prev_impression_clicked"].tolist() == [0.0, 1.0, 0.0]
    assert a["since_impression_days"].tolist() == pytest.approx([-1.0, 1.0, -1.0])
    tied = rows[(rows[S.RANK_IMPRESSION_TS] == T0 + 8 * DAY)]
    assert len(tied) == 16


def test_skew_check_finds_no_difference_between_training_and_serving_rows(spark, prepared):
    from ytspark.score.skew import BY_DESIGN, check_skew

    n_rows = spark.read.parquet(f"{prepared}/ranking/train").count()
    table = check_skew(spark, prepared, n=1000, seed=3)
    checked = table[table["note"] == ""]
    assert set(checked["feature"]) == {S.RANK_VIDEO, S.CAND_WATCH_HIST, S.RANK_USER_LANGUAGE, S.RANK_VIDEO_LANGUAGE,
                                       S.RANK_CHANNEL, S.RANK_CATEGORY,
                                       *[f for f in S.RANK_CONTINUOUS if f not in BY_DESIGN]}
    assert (checked["rows"] == n_rows).all() and n_rows > 50
    assert (checked["differ"] == 0).all(), checked[checked["differ"] > 0].to_string()
    # the check has teeth: the features it compared were not all trivial
    from ytspark.score.skew import sample_rows

    sample = sample_rows(spark, prepared, 1000, 3)
    assert (sample["n_prev_impressions"] >= 2).sum() > 10 and (sample["prev_impression_clicked"] == 1).sum() > 10
    assert (sample["channel_watches"] > 0).sum() > 10


def test_skew_check_reports_a_changed_serving_definition(spark, prepared, monkeypatch):
    """Mutation: serving leaving clicked impressions out of the count (they were watches) is caught, and
    only on the features it changes."""
    import ytspark.features.history as fh
    from ytspark.score import skew

    real = fh.impression_history

    def unclicked_only(imp_key, imp_ts, imp_clicked, q_key, q_ts):
        keep = np.asarray(imp_clicked) == 0
        n, since, _ = real(np.asarray(imp_key)[keep], np.asarray(imp_ts)[keep], np.asarray(imp_clicked)[keep],
                           q_key, q_ts)
        return n, since, real(imp_key, imp_ts, imp_clicked, q_key, q_ts)[2]

    sample = skew.sample_rows(spark, prepared, 1000, 3)
    monkeypatch.setattr(fh, "impression_history", unclicked_only)  # prepare ran already: serving changes alone
    table = skew.compare(sample, skew.serving_rows(spark, prepared, sample)).set_index("feature")
    assert table.loc["n_prev_impressions", "differ"] > 0 and table.loc["since_impression_days", "differ"] > 0
    assert table.loc["prev_impression_clicked", "differ"] == 0 and table.loc["channel_watches", "differ"] == 0


def test_impression_history_at_one_cut_off_equals_the_general_path():
    """Serving's case (every query at one cut-off after every impression) takes a group-by path: the same
    values as the general sort-based one, on seeded random impressions."""
    import ytspark.features.history as fh

    rng = np.random.default_rng(8)
    n = 5000
    key = rng.integers(0, 400, n)
    ts = rng.uniform(0, 30, n).round(1) * DAY  # repeated timestamps
    clicked = (rng.random(n) < 0.2).astype(np.int32)
    q = np.unique(np.r_[key, rng.integers(0, 500, 50)])  # shown keys and a few never shown
    t = np.full(len(q), 31 * DAY)
    fast = impression_history(key, ts, clicked, q, t)
    count, since = fh.count_and_last_before(key, ts, q, t)
    slow = (count, since, (fh.count_and_last_before(key[clicked > 0], ts[clicked > 0], q, t)[0] > 0).astype(np.float32))
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)
    assert (fast[0] == 0).sum() > 5 and fast[2].sum() > 50
