"""Readers: the same rows in Parquet, JSON Lines and CSV validate to the same accepted events."""
from __future__ import annotations

import csv

import pytest
from helpers import make_config, search, watch, write_jsonl

from ytspark import schema as S
from ytspark.sources import InputError, detect_format, read_table
from ytspark.validate import validate

pytestmark = pytest.mark.spark

ROWS = [watch("u1", 1, "v1"), watch("u1", 2, "v2", watch_s=30.0), search("u1", 3, "héllo wörld"),
        watch("u2", 1.5, "v1")]


def _accepted(spark, path, fmt="auto"):
    v = validate(read_table(spark, path, "events", fmt), "events", make_config().validate)
    return sorted(tuple(r) for r in v.accepted.collect())


def test_formats_agree(spark, tmp_path):
    jl = write_jsonl(tmp_path / "j" / "e.jsonl", ROWS)
    pq_path = str(tmp_path / "p")
    spark.read.json(jl).write.parquet(pq_path)
    cp = tmp_path / "c" / "e.csv"
    cp.parent.mkdir()
    cols = list(S.EVENTS_COLUMNS)
    with open(cp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in ROWS:
            w.writerow({c: r.get(c, "") for c in cols})
    a, b, c = _accepted(spark, jl), _accepted(spark, pq_path), _accepted(spark, str(cp))
    assert len(a) == len(ROWS)
    assert a == b == c
    assert detect_format(spark, str(cp)) == "csv" and detect_format(spark, pq_path) == "parquet"


def test_iso_and_timestamp_event_ts(spark, tmp_path):
    p = write_jsonl(tmp_path / "e.jsonl", [
        {"event_ts": "2024-01-02T03:04:05Z", "user_id": "u", "event_type": "WATCH", "video_id": "v"},
        {"event_ts": "1704164645", "user_id": "u", "event_type": "watch", "video_id": "w"},
    ])
    rows = sorted(_accepted(spark, p))
    assert [r[0] for r in rows] == [1704164645.0, 1704164645.0]
    assert {r[2] for r in rows} == {"watch"}  # event types are case-normalised


def test_unknown_extension_asks_for_format(spark, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "data.bin").write_text("1,2")
    with pytest.raises(InputError, match="set data.format"):
        read_table(spark, str(tmp_path / "x"), "events")
