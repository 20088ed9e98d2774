"""The prepare job on hand-built logs whose every row is known: quarantine, counts, rows, vocab, layout."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import DAY, T0, impression, make_config, search, watch, write_jsonl

from ytspark import schema as S
from ytspark.prepare import read_inputs, run_prepare
from ytspark.prepared import load_manifest
from ytspark.sources import InputError
from ytspark.validate import RejectShareError

pytestmark = pytest.mark.spark

GOOD = (
    [watch("u1", d, f"v{d % 4}") for d in range(1, 9)]  # u1: 8 watches of v0..v3
    + [search("u1", 2.5, "Funny Cats"), search("u1", 4.5, "cats")]
    + [watch("u2", d, f"v{(d + 1) % 4}", watch_s=10.0) for d in range(1, 6)]  # u2: never completes
    + [watch("u2", 6, "v9")]
    + [impression("u1", 3.5, "v1", 1, 80.0), impression("u1", 3.5, "v2", 0),
       impression("u1", 7.5, "v1", 0), impression("u1", 8.5, "v3", 1, 50.0)]
    + [watch("u3", 1, "v0")]
)
BAD = {
    "missing_user_id": {"event_ts": T0, "event_type": "watch", "video_id": "v1"},
    "unknown_event_type": {"event_ts": T0, "user_id": "u1", "event_type": "like", "video_id": "v1"},
    "invalid_event_ts": {"event_ts": "yesterday", "user_id": "u1", "event_type": "watch", "video_id": "v1"},
    "event_ts_in_future": {"event_ts": 4102444800, "user_id": "u1", "event_type": "watch", "video_id": "v1"},
    "event_ts_before_epoch": {"event_ts": -5, "user_id": "u1", "event_type": "watch", "video_id": "v1"},
    "negative_watch_seconds": watch("u1", 9.1, "v1", watch_s=-5.0),
    "absurd_watch_seconds": watch("u1", 9.2, "v1", watch_s=1e9, video_s=100.0),
    "missing_video_id": {"event_ts": T0, "user_id": "u1", "event_type": "watch"},
    "missing_query": {"event_ts": T0, "user_id": "u1", "event_type": "search", "query": "  "},
    "invalid_watch_seconds": {**watch("u1", 9.3, "v1"), "watch_seconds": "lots"},
    "duplicate_event": watch("u1", 1, "v1"),  # u1's day-1 watch is v1: same key as a good row
    "unparseable_line": '{"event_ts": 1700000000, "user_id": "u1", "event_type": ',
}
USERS = [{"user_id": "u1", "gender": "f", "age": 34, "country": "NL", "language": "nl", "device": "ios"},
         {"user_id": "u2", "gender": "m", "birth_year": 1990, "country": "DE", "language": "de", "device": "web"},
         {"user_id": "u2", "gender": "m"},  # duplicate user
         {"gender": "x"}]  # missing user id
VIDEOS = [{"video_id": f"v{i}", "upload_ts": T0 - DAY, "duration_seconds": 100.0, "language": "nl",
           "channel_id": f"c{i % 2}", "category": "pets" if i < 2 else "news", "title": "t"} for i in range(10)]


def _raw(tmp: Path) -> dict:
    return {
        "events": write_jsonl(tmp / "events" / "part-0.jsonl", GOOD + list(BAD.values())),
        "users": write_jsonl(tmp / "users" / "u.jsonl", USERS),
        "videos": write_jsonl(tmp / "videos" / "v.jsonl", VIDEOS),
    }


def _cfg(raw: dict, *extra: str):
    return make_config(f'data.events="{raw["events"]}"', f'data.users="{raw["users"]}"',
                       f'data.videos="{raw["videos"]}"', "validate.max_reject_share=0.5",
                       "prepare.history_length=4", "prepare.target_shards=2", *extra)


@pytest.fixture(scope="module")
def prepared(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prep")
    raw = _raw(tmp)
    cfg = _cfg(raw)
    out = str(tmp / "prepared")
    manifest = run_prepare(spark, cfg, read_inputs(spark, cfg), out)
    return {"out": out, "manifest": manifest, "raw": raw, "tmp": tmp, "cfg": cfg}


def test_every_bad_row_is_rejected_with_its_reason(spark, prepared):
    rejects = spark.read.parquet(f"{prepared['out']}/rejects")
    from ytspark.schema import check_schema
    from ytspark.schema import REJECTS_SCHEMA

    check_schema(rejects.schema, REJECTS_SCHEMA, "rejects")
    got = {(r[S.REJECT_TABLE], r[S.REJECT_REASON]): r["count"]
           for r in rejects.groupBy(S.REJECT_TABLE, S.REJECT_REASON).count().collect()}
    want = {("events", reason): 1 for reason in BAD}
    want.update({("users", "duplicate_user"): 1, ("users", "missing_user_id"): 1})
    assert got == want
    assert rejects.where("raw is null").count() == 0  # the original row is kept


def test_counts_add_up(spark, prepared):
    m = prepared["manifest"]
    ev = m["tables"]["events"]
    assert ev["input"] == len(GOOD) + len(BAD)
    assert ev["accepted"] == len(GOOD)
    assert ev["input"] == ev["accepted"] + ev["rejected"]
    assert ev["reasons"] == {k: 1 for k in BAD}
    assert spark.read.parquet(f"{prepared['out']}/events").count() == ev["accepted"]
    assert m["events_by_type"] == {"watch": 15, "search": 2, "impression": 4}
    assert m["tables"]["users"]["accepted"] == 2 and m["tables"]["videos"]["accepted"] == 10
    assert load_manifest(spark, prepared["out"])["tables"] == m["tables"]


def test_candidate_rows_are_the_known_ones(spark, prepared):
    df = spark.read.parquet(f"{prepared['out']}/candidates/train")
    from ytspark.schema import CANDIDATE_SCHEMA, check_schema

    check_schema(df.schema, CANDIDATE_SCHEMA, "candidates/train")
    rows = {(r[S.USER_ID], r[S.SPLIT]): r for r in
            spark.read.parquet(*[f"{prepared['out']}/candidates/{s}" for s in S.SPLITS]).collect()
            if r[S.SPLIT] != "train"}
    vocab = json.loads(Path(prepared["out"], "vocab", "video.json").read_text())["values"]
    idx = {v: i + 2 for i, v in enumerate(vocab)}
    # u1: 8 watches -> 6 train, val = day 7 (v3), test = day 8 (v0)
    assert rows[("u1", "val")][S.CAND_LABEL] == idx["v3"]
    assert rows[("u1", "test")][S.CAND_LABEL] == idx["v0"]
    assert list(rows[("u1", "test")][S.CAND_WATCH_HIST]) == [idx["v3"], idx["v2"], idx["v1"], idx["v0"]]
    # u2 never completed a watch: no train rows, but val/test targets exist
    train = df.collect()
    assert sum(r[S.USER_ID] == "u1" for r in train) == 6
    assert not [r for r in train if r[S.USER_ID] == "u2"]
    assert ("u2", "test") in rows and ("u2", "val") in rows
    # u3 has one watch: one train row, no target
    assert sum(r[S.USER_ID] == "u3" for r in train) == 1 and ("u3", "test") not in rows
    # demographics: u1 known, u3 unknown (OOV)
    u1 = rows[("u1", "test")]
    assert u1[S.USER_AGE] == 34.0 and u1["gender_idx"] >= 2 and u1["age_bucket_idx"] == 2 + S.AGE_BUCKETS.index(25)
    u3 = [r for r in train if r[S.USER_ID] == "u3"][0]
    assert u3["gender_idx"] == S.OOV and u3[S.USER_AGE] == -1.0
    assert rows[("u2", "test")][S.USER_AGE] == pytest.approx(2023 - 1990)


def test_ranking_rows_are_the_known_ones(spark, prepared):
    out = prepared["out"]
    rows = sorted(spark.read.parquet(*[f"{out}/ranking/{s}" for s in S.SPLITS]).collect(),
                  key=lambda r: (r[S.RANK_IMPRESSION_TS], r[S.RANK_VIDEO]))
    assert [r[S.SPLIT] for r in rows] == ["train", "train", "val", "test"]
    clicked = rows[0] if rows[0][S.RANK_CLICKED] else rows[1]
    assert clicked[S.RANK_WEIGHT] == 80.0 and clicked[S.RANK_WATCH_SECONDS] == 80.0
    assert all(r[S.RANK_WEIGHT] == 1.0 for r in rows if not r[S.RANK_CLICKED])
    day75 = rows[2]  # impression of v1 on day 7.5: v1 impressed once before, watched on days 1 and 5
    assert day75["n_prev_impressions"] == 1.0
    assert day75["since_last_watch_days"] == pytest.approx(0.5)
    assert day75["video_age_days"] == pytest.approx(8.5)
    assert day75["channel_watches"] == 4.0  # v1, v3 on channel c1: days 1, 3, 5, 7
    assert day75["since_channel_watch_days"] == pytest.approx(0.5)
    assert day75["category_watches"] == 3.0  # pets = v0, v1: watched days 1, 4, 5 before 7.5
    assert day75["since_category_watch_days"] == pytest.approx(2.5)
    assert day75[S.RANK_CLICKED] == 0 and day75[S.RANK_WEIGHT] == 1.0


def test_quantiles_and_vocab_files(prepared):
    out = Path(prepared["out"])
    q = json.loads((out / "quantiles.json").read_text())
    assert set(q["candidates"]) >= {S.CAND_EXAMPLE_AGE, S.CAND_SINCE_LAST}
    assert q["candidates"][S.CAND_EXAMPLE_AGE] == sorted(q["candidates"][S.CAND_EXAMPLE_AGE])
    tokens = json.loads((out / "vocab" / "token.json").read_text())["values"]
    # "cats" twice (both searches), "funny" and the bigram "funny cats" once: min_count=1 in local profile
    assert tokens[0] == "cats" and set(tokens) == {"cats", "funny", "funny cats"}
    assert (out / "_SUCCESS").exists()


def test_row_groups_are_balanced_for_sharding(prepared):
    m = prepared["manifest"]
    files = sorted(Path(prepared["out"], "candidates", "train").glob("*.parquet"))
    sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
    groups = [pq.ParquetFile(f).metadata.num_row_groups for f in files]
    assert sum(sizes) == m["candidates"]["train"]
    assert all(g == 1 for g in groups)
    assert max(sizes) - min(sizes) <= 1


def test_rerun_gives_identical_vocab_and_rows(spark, prepared):
    cfg = prepared["cfg"]
    out2 = str(prepared["tmp"] / "prepared2")
    run_prepare(spark, cfg, read_inputs(spark, cfg), out2)
    for name in S.VOCAB_NAMES:
        a = json.loads(Path(prepared["out"], "vocab", f"{name}.json").read_text())
        b = json.loads(Path(out2, "vocab", f"{name}.json").read_text())
        assert a == b, name
    cols = [S.USER_ID, S.SPLIT, S.CAND_LABEL, S.CAND_LABEL_TS]
    a = sorted(tuple(r) + (tuple(r[S.CAND_WATCH_HIST]),) for r in
               spark.read.parquet(f"{prepared['out']}/candidates/train").select(*cols, S.CAND_WATCH_HIST).collect())
    b = sorted(tuple(r) + (tuple(r[S.CAND_WATCH_HIST]),) for r in
               spark.read.parquet(f"{out2}/candidates/train").select(*cols, S.CAND_WATCH_HIST).collect())
    assert a == b


def test_reject_share_bound_fails_and_keeps_rejects(spark, prepared, tmp_path):
    raw = prepared["raw"]
    cfg = _cfg(raw, "validate.max_reject_share=0.1")
    out = str(tmp_path / "p")
    with pytest.raises(RejectShareError, match=r"max_reject_share.*kept at"):
        run_prepare(spark, cfg, read_inputs(spark, cfg), out)
    assert not Path(out).exists()  # nothing half-written
    kept = spark.read.parquet(out + ".rejects")
    assert kept.where(f"{S.REJECT_TABLE} = 'events'").count() == len(BAD)


def test_schema_errors_name_the_column(spark, tmp_path):
    p = write_jsonl(tmp_path / "e.jsonl", [{"event_ts": T0, "event_type": "watch", "video_id": "v1"}])
    cfg = make_config(f'data.events="{p}"')
    with pytest.raises(InputError, match="'user_id'.*required, expected string"):
        read_inputs(spark, cfg)
    bad = spark.createDataFrame([(T0, ["u1"], "watch")], "event_ts double, user_id array<string>, event_type string")
    bad.write.parquet(str(tmp_path / "arr"))
    cfg = make_config(f'data.events="{tmp_path / "arr"}"')
    with pytest.raises(InputError, match="column 'user_id'.*array<string>, expected string"):
        read_inputs(spark, cfg)


def test_missing_and_empty_paths_say_what_to_do(spark, tmp_path):
    cfg = make_config(f'data.events="{tmp_path / "nope"}"')
    with pytest.raises(InputError, match="does not exist"):
        read_inputs(spark, cfg)
    (tmp_path / "empty").mkdir()
    cfg = make_config(f'data.events="{tmp_path / "empty"}"')
    with pytest.raises(InputError, match="is empty"):
        read_inputs(spark, cfg)


@pytest.mark.parametrize("tie_break", ["log", "hash"])
def test_same_second_ties_follow_the_log_or_a_neutral_hash_never_popularity(spark, tmp_path, tie_break):
    """Each user's last two watches share a second: one is the most popular video, one a rare one, written
    popular-first for even users and rare-first for odd ones. Ordering ties by video index (= popularity rank)
    would always hold out the rare one; "log" keeps the written order (the one written second is the test
    target, for every user), "hash" a fair coin."""
    n = 120
    events = []
    for i in range(n):
        u = f"t{i:03d}"
        tied = [watch(u, 3, "vp"), watch(u, 3, f"vr{i % 3}")]
        events += [watch(u, 1, f"a{i % 5}"), watch(u, 2, f"b{i % 5}"), *(tied if i % 2 == 0 else tied[::-1])]
    for j in range(30):  # earlier watchers put both into the (training-only) vocabulary, vp far ahead
        f = f"f{j:02d}"
        events += [watch(f, 0.5, "vp"), watch(f, 0.7, "z1"), watch(f, 0.8, "z2")]
        events += [watch(f, 0.6, f"vr{j % 3}")] if j < 6 else []
    raw = {"events": write_jsonl(tmp_path / "events.jsonl", events)}
    cfg = make_config(f'data.events="{raw["events"]}"', "prepare.history_length=4", "prepare.target_shards=1",
                      f'prepare.tie_break="{tie_break}"')
    out = str(tmp_path / "prepared")
    run_prepare(spark, cfg, read_inputs(spark, cfg), out)
    assert (S.LOG_SEQ in spark.read.parquet(f"{out}/events").columns) == (tie_break == "log")
    vocab = ["<pad>", "<oov>"] + json.loads(Path(out, "vocab", "video.json").read_text())["values"]
    assert {"vp", "vr0", "vr1", "vr2"} <= set(vocab) and vocab.index("vp") < vocab.index("vr0")
    test = [r for r in spark.read.parquet(f"{out}/candidates/test").select(S.USER_ID, S.CAND_LABEL).collect()
            if r[S.USER_ID].startswith("t")]
    val = {r[S.USER_ID]: r[S.CAND_LABEL] for r in
           spark.read.parquet(f"{out}/candidates/val").select(S.USER_ID, S.CAND_LABEL).collect()}
    assert len(test) == n and len([u for u in val if u.startswith("t")]) == n
    popular_last = {r[S.USER_ID] for r in test if vocab[r[S.CAND_LABEL]] == "vp"}
    if tie_break == "log":  # the one written second, for every user
        assert popular_last == {f"t{i:03d}" for i in range(1, n, 2)}
    else:
        assert 0.3 * n < len(popular_last) < 0.7 * n  # a fair coin, not always the rare one
    # the tied pair splits between validation and test, whichever order the tie-break gave
    assert all({vocab[val[r[S.USER_ID]]], vocab[r[S.CAND_LABEL]]} >= {"vp"} for r in test)
