"""Fuzzing the readers and validation (hypothesis): every generated row is accepted or rejected with a reason.

Spark jobs are slow, so one hypothesis example is one *file* of many rows,
each row a case: a mix of well-formed "good" rows (user ids ``good-*``, whose
accepted values are known) and adversarial rows (wrong types, nulls, absent
keys, huge strings, unicode, negative/NaN/infinite numbers, timestamps far in
the past or future, duplicates, unparseable lines). The file is written as
JSON Lines, CSV or Parquet, read through :func:`ytspark.sources.read_table`
and split by :func:`ytspark.validate.validate`; per example the test checks

- no exception, and input rows = rows written = accepted + rejected
  (:func:`ytspark.validate.summarize` agrees);
- every reject has a known reason and keeps its raw row;
- every accepted row satisfies the contract (finite numbers, timestamps in
  range, known event type, video id / query where needed, no duplicate key);
- the good rows are accepted exactly once each, with their values intact.

Examples are derandomized (the same cases on every run); set
``YTSPARK_FUZZ_EXAMPLES=N`` to run N examples per test with fresh randomness,
``YTSPARK_FUZZ_SHRINK=1`` to shrink a failure to a minimal file (slow).
Each test asserts how many cases it really ran.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F
from helpers import DAY, T0, make_config
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ytspark import schema as S
from ytspark.sources import read_table
from ytspark.validate import RAW, summarize, validate

pytestmark = [pytest.mark.spark, pytest.mark.slow]

_N = int(os.environ.get("YTSPARK_FUZZ_EXAMPLES", "0"))
ROWS = 60  # rows (cases) per example, i.e. per Spark read
EXAMPLES = {"events": _N or 8, "users": _N or 4, "videos": _N or 4}  # per format (events) or in all


def _settings(n: int):
    # Shrinking re-runs Spark hundreds of times (minutes); on by request: YTSPARK_FUZZ_SHRINK=1.
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if os.environ.get("YTSPARK_FUZZ_SHRINK") else [])
    return settings(max_examples=n, deadline=None, derandomize=not _N, database=None, phases=phases,
                    suppress_health_check=list(HealthCheck), print_blob=False)


CFG = make_config("validate.max_reject_share=1.0").validate
NOW = dt.datetime.fromisoformat(CFG.as_of).replace(tzinfo=dt.timezone.utc).timestamp()

REASONS = {
    "events": {"unparseable_line", "missing_event_ts", "missing_user_id", "missing_event_type",
               *(f"invalid_{c}" for c in S.EVENTS_COLUMNS), "event_ts_before_epoch", "event_ts_in_future",
               "unknown_event_type", "missing_video_id", "missing_query", "negative_watch_seconds",
               "negative_video_seconds", "absurd_watch_seconds", "duplicate_event"},
    "users": {"unparseable_line", "missing_user_id", *(f"invalid_{c}" for c in S.USERS_COLUMNS), "absurd_age",
              "absurd_birth_year", "duplicate_user"},
    "videos": {"unparseable_line", "missing_video_id", *(f"invalid_{c}" for c in S.VIDEOS_COLUMNS),
               "upload_ts_in_future", "negative_duration_seconds", "duplicate_video"},
}

# ------------------------------------------------------------------ value strategies

_chars = st.characters(exclude_categories=("Cs",))  # lone surrogates cannot be written as UTF-8
SPECIAL = ["a,b", 'say "hi"', "line\nbreak", "cr\rlf", "tab\there", "\x00", "\ufeff", " ", "  ", "\t", "ümlaut",
           "日本語", "😀", "عربى", "NaN", "null", "NULL", "\\N", "None", "true", "1e999", "-0", "{}", "[]",
           "'", "Robert'); DROP TABLE events;--", "\u202e", "\u2028"]
text = st.one_of(
    st.text(_chars, max_size=12),
    st.text(st.sampled_from(list(',"\n\r\t \\\'{}[]:;#') + ["x", "é"]), max_size=8),
    st.sampled_from(SPECIAL),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "😀", ","]), st.integers(10_000, 120_000)),  # huge
)
nums = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -0.0, -1, 1e308, -1e308, 5e-324, 2**63, -(2**63) - 1]),
)
FAR_TS = ["0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "1970-01-01", "9999-12-31T23:59:59Z", "2262-04-12",
          "+10000-01-01T00:00:00Z", "-0044-03-15", "2024-02-30", "2024-13-01", "2024-01-01T25:00:00",
          "1700000000", " 1700000000 ", "1.7e9", "0x10", "1d", "yesterday", "2023-11-14 22:13:20+14:00"]
wild_scalar = st.one_of(st.none(), st.booleans(), nums, text, st.sampled_from(FAR_TS))
wild = st.one_of(wild_scalar, st.lists(wild_scalar, max_size=3),
                 st.dictionaries(st.text(max_size=3), wild_scalar, max_size=2))
plausible_ts = st.one_of(
    st.floats(T0 - 5 * DAY, T0 + 4000 * DAY),
    st.sampled_from([-1, 0, 1, -62135596800, 253402300799, 1e12, 1e18, NOW + 2 * DAY, 4102444800]),
    st.floats(T0 - 5 * DAY, T0 + 400 * DAY).map(lambda t: dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat()),
    st.floats(T0, T0 + 400 * DAY).map(repr),
)
plausible_secs = st.one_of(st.floats(-100, 2e5), st.sampled_from([0, -0.0, 86400, 86401, 1e308, -1e-9]),
                           st.floats(-10, 500).map(repr))
PLAUSIBLE = {
    S.EVENT_TS: plausible_ts,
    S.USER_ID: st.one_of(st.sampled_from(["u1", "u2", "u3", " u1 ", "U1"]), text),
    S.EVENT_TYPE: st.sampled_from(["watch", "search", "impression", "WATCH", " Search ", "like", "", "watch\n"]),
    S.VIDEO_ID: st.one_of(st.sampled_from(["v1", "v2", "v3"]), text),
    S.QUERY: st.one_of(st.sampled_from(["funny cats", "a", ""]), text),
    S.WATCH_SECONDS: plausible_secs,
    S.VIDEO_SECONDS: plausible_secs,
    S.CLICKED: st.sampled_from([0, 1, True, False, "yes", "no", "1.0", "2", -1, 0.5]),
    S.DEVICE: text, S.COUNTRY: text,
    S.GENDER: st.one_of(st.sampled_from(["f", "m", "x", ""]), text),
    S.AGE: st.one_of(st.floats(-10, 200), st.sampled_from([0, 130, 131, -1, "34", "thirty"])),
    S.BIRTH_YEAR: st.one_of(st.integers(1800, 2200), st.sampled_from([1879, 2101, "1990", "1990.5", 2**40])),
    S.LANGUAGE: text,
    S.UPLOAD_TS: st.one_of(plausible_ts, st.sampled_from([-1e9, "1950-06-01"])),
    S.DURATION_SECONDS: plausible_secs,
    S.CHANNEL_ID: text, S.CATEGORY: text, S.TITLE: text,
}
ABSENT = object()  # a key left out of a JSON object


def _not_good(v):
    return not (isinstance(v, str) and "good-" in v)


def adversarial_row(table: str, allow_absent: bool):
    cols, _ = S.TABLES[table]
    fields = {}
    for c in cols:
        choices = [st.none(), PLAUSIBLE[c], PLAUSIBLE[c], PLAUSIBLE[c], wild]
        if allow_absent:
            choices.append(st.just(ABSENT))
        fields[c] = st.one_of(*choices).filter(_not_good)
    return st.fixed_dictionaries(fields).map(lambda d: {k: v for k, v in d.items() if v is not ABSENT})


good_text = st.text(_chars, min_size=1, max_size=10).map(lambda s: s.strip()).filter(bool)


@st.composite
def good_event(draw):
    """A valid event; its key (user, ts, type, video, query) determines the row."""
    kind = draw(st.sampled_from(S.EVENT_TYPES))
    row = {S.EVENT_TS: T0 + 60 * draw(st.integers(0, 30)), S.USER_ID: f"good-u{draw(st.integers(0, 4))}",
           S.EVENT_TYPE: kind}
    if kind == "search":
        row[S.QUERY] = draw(st.sampled_from(["cats", "funny dogs", "Ünïcödé 日本", 'a "quoted", query']))
    else:
        row[S.VIDEO_ID] = f"v{draw(st.integers(0, 5))}"
    if kind != "search":
        row[S.WATCH_SECONDS] = float(draw(st.integers(0, 100)))
        row[S.VIDEO_SECONDS] = 100.0
    if kind == "impression":
        row[S.CLICKED] = draw(st.sampled_from([0, 1]))
    row[S.DEVICE] = draw(good_text)
    row[S.COUNTRY] = draw(good_text)
    return row


def _event_key(r: dict) -> tuple:
    return tuple(r.get(k) for k in (S.USER_ID, S.EVENT_TS, S.EVENT_TYPE, S.VIDEO_ID, S.QUERY))


GARBAGE = ["[]", '[{"user_id": "a", "event_ts": 1700000000}, {"user_id": "b"}]', "42", "null", '"s"', "{",
           '{"event_ts": 1}}', "\x00", '{"user_id": "\\ud800", "event_ts": "\\udfff"}', "{'single': 'quotes'}",
           '{"event_ts": 1700000000, "user_id": "x", "event_type": "watch", "video_id": "v"} trailing',
           '{"a":1}{"b":2}', "<html>", "\ufeff{}", "NaN"]
garbage_line = st.one_of(st.sampled_from(GARBAGE), st.text(_chars, min_size=1, max_size=40)).filter(
    lambda s: s.strip() and "\n" not in s and "\r" not in s)


@st.composite
def rows_for(draw, table: str, fmt: str, n: int = ROWS):
    """(rows, good) for one example: ``n`` rows in file order; JSON rows may be raw strings (garbage lines)."""
    good, rows = [], []
    by_key: dict = {}
    for _ in range(n):
        pick = draw(st.integers(0, 9))
        if table == "events" and pick < 3:
            r = draw(good_event())
            r = by_key.setdefault(_event_key(r), r)  # same key -> an exact copy (a duplicate event)
            good.append(r)
        elif fmt == "jsonl" and pick == 9:
            r = draw(garbage_line)
        elif pick == 8 and rows:
            r = rows[draw(st.integers(0, len(rows) - 1))]  # an exact duplicate of an earlier row
            if isinstance(r, dict) and str(r.get(S.USER_ID, "")).startswith("good-"):
                good.append(r)
        else:
            r = draw(adversarial_row(table, allow_absent=fmt == "jsonl"))
        rows.append(r)
    return rows, good


# ------------------------------------------------------------------ writers


def _to_text(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v, ensure_ascii=False)


def write_jsonl(path: Path, rows: list, ensure_ascii: bool, bom: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=ensure_ascii) for r in rows]
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")


def write_csv(path: Path, rows: list[dict], cols: list[str], bom: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        if bom:
            f.write("\ufeff")
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if (t := _to_text(r.get(c))) is None else t for c in cols])


def _as_kind(v, kind: str):
    """A value as Parquet column ``kind``; values that do not fit become null (Parquet columns are typed)."""
    if v is None:
        return None
    if kind == "string":
        return _to_text(v)
    if kind == "bool":
        return v if isinstance(v, bool) else (bool(v) if isinstance(v, int) and v in (0, 1) else None)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if kind == "double":
        return float(v)
    if kind == "int64":
        return int(v) if math.isfinite(v) and -(2**63) <= v < 2**63 else None
    if kind == "timestamp":  # microseconds, year 1..9999
        return dt.datetime(1970, 1, 1) + dt.timedelta(seconds=v) if math.isfinite(v) and \
            -62135596800 <= v <= 253402300799 else None
    raise ValueError(kind)


PA = {"string": pa.string(), "double": pa.float64(), "int64": pa.int64(), "bool": pa.bool_(),
      "timestamp": pa.timestamp("us")}


def parquet_kinds(table: str):
    """A Parquet type per column: strings stay strings; numbers, timestamps and flags get typed columns."""
    cols, _ = S.TABLES[table]
    out = {}
    for c, typ in cols.items():
        if c in S.TIMESTAMP_COLUMNS[table]:
            out[c] = st.sampled_from(["string", "double", "int64", "timestamp"])
        elif c == S.CLICKED:
            out[c] = st.sampled_from(["string", "int64", "bool"])
        elif typ.simpleString() in ("double", "int"):
            out[c] = st.sampled_from(["string", "double", "int64"])
        else:
            out[c] = st.just("string")
    return st.fixed_dictionaries(out)


def write_parquet(path: Path, rows: list[dict], cols: list[str], kinds: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = pa.table({c: pa.array([_as_kind(r.get(c), kinds[c]) for r in rows], PA[kinds[c]]) for c in cols})
    pq.write_table(t, path, row_group_size=max(1, len(rows) // 3))


# ------------------------------------------------------------------ the check


# Optional columns an example may leave out of the file (for events, not those that key the good rows).
DROPPABLE = {"events": [S.DEVICE, S.COUNTRY, S.CLICKED, S.VIDEO_SECONDS],
             "users": [c for c in S.USERS_COLUMNS if c not in S.USERS_REQUIRED],
             "videos": [c for c in S.VIDEOS_COLUMNS if c not in S.VIDEOS_REQUIRED]}


def _write(data, spark_tmp: Path, table: str, fmt: str, rows: list) -> tuple[str, list[str]]:
    """Write ``rows`` as ``fmt`` (some optional columns left out); returns (path, columns written)."""
    gone = data.draw(st.lists(st.sampled_from(DROPPABLE[table]), unique=True, max_size=2), label="dropped")
    cols = [c for c in S.TABLES[table][0] if c not in gone]
    rows = [r if isinstance(r, str) else {k: v for k, v in r.items() if k in cols} for r in rows]
    d = spark_tmp / table
    if fmt == "jsonl":
        write_jsonl(d / "part-0.jsonl", rows, data.draw(st.booleans(), label="ensure_ascii"),
                    data.draw(st.booleans(), label="bom"))
    elif fmt == "csv":
        write_csv(d / "part-0.csv", rows, cols, data.draw(st.booleans(), label="bom"))
    else:
        kinds = data.draw(parquet_kinds(table), label="kinds")
        write_parquet(d / "part-0.parquet", rows, cols, kinds)
    return str(d), cols


def check_example(spark, path: str, table: str, fmt: str, n_written: int, good: list[dict],
                  written: list[str]) -> list:
    """Read + validate + summarize one file and check the accounting and the contract; returns accepted rows."""
    raw = read_table(spark, path, table, fmt)
    v = validate(raw, table, CFG)
    cols, _ = S.TABLES[table]
    got = v.tagged.select(S.REJECT_REASON, F.col(RAW).isNull(), *[f"__t_{c}" for c in cols]).collect()
    assert len(got) == n_written, f"{fmt}: wrote {n_written} rows, the reader saw {len(got)}"
    reasons: dict[str, int] = {}
    for r in got:
        if r[0] is not None:
            reasons[r[0]] = reasons.get(r[0], 0) + 1
            assert not r[1], f"reject {r[0]} lost its raw row"
    assert set(reasons) <= REASONS[table], set(reasons) - REASONS[table]
    summary = summarize(len(got), reasons, table, CFG)
    assert summary["input"] == summary["accepted"] + summary["rejected"] == n_written
    accepted = [dict(zip(cols, r[2:])) for r in got if r[0] is None]
    assert len(accepted) == summary["accepted"]
    _check_contract(table, accepted)
    if good:
        want = {_event_key(r): r for r in good}
        mine = [a for a in accepted if str(a[S.USER_ID]).startswith("good-")]
        assert len(mine) == len(want), (len(mine), len(want))
        for a in mine:
            w = want[_event_key(a)]
            for c in (S.WATCH_SECONDS, S.VIDEO_SECONDS, S.CLICKED, S.DEVICE, S.COUNTRY):
                assert a[c] == (w.get(c) if c in written else None), (c, a, w)
    return accepted


def _finite(x) -> bool:
    return x is None or (isinstance(x, float) and math.isfinite(x)) or isinstance(x, int)


def _check_contract(table: str, accepted: list[dict]) -> None:
    cols, required = S.TABLES[table]
    keys = set()
    for a in accepted:
        for c in required:
            assert a[c] is not None and (not isinstance(a[c], str) or a[c].strip()), (c, a)
        for c, typ in cols.items():
            if typ.simpleString() == "double":
                assert _finite(a[c]), (c, a)
        if table == "events":
            assert 0 <= a[S.EVENT_TS] <= NOW + CFG.future_tolerance_seconds, a
            assert a[S.EVENT_TYPE] in S.EVENT_TYPES, a
            if a[S.EVENT_TYPE] in ("watch", "impression"):
                assert a[S.VIDEO_ID], a
            if a[S.EVENT_TYPE] == "search":
                assert a[S.QUERY], a
            for c in (S.WATCH_SECONDS, S.VIDEO_SECONDS):
                assert a[c] is None or a[c] >= 0, a
            assert a[S.WATCH_SECONDS] is None or a[S.WATCH_SECONDS] <= CFG.max_watch_seconds, a
            assert a[S.CLICKED] in (None, 0, 1), a
            key = _event_key(a)
        elif table == "users":
            assert a[S.AGE] is None or 0 <= a[S.AGE] <= 130, a
            assert a[S.BIRTH_YEAR] is None or 1880 <= a[S.BIRTH_YEAR] <= 2100, a
            key = a[S.USER_ID]
        else:
            assert a[S.UPLOAD_TS] is None or a[S.UPLOAD_TS] <= NOW + CFG.future_tolerance_seconds, a
            assert a[S.DURATION_SECONDS] is None or a[S.DURATION_SECONDS] >= 0, a
            key = a[S.VIDEO_ID]
        assert key not in keys, f"duplicate accepted: {key}"
        keys.add(key)


# ------------------------------------------------------------------ the tests


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_fuzzed_events_are_accepted_or_rejected_never_lost(spark, tmp_path_factory, fmt):
    cases: list[int] = []

    @_settings(EXAMPLES["events"])
    @given(data=st.data())
    def run(data):
        rows, good = data.draw(rows_for("events", fmt), label="rows")
        tmp = tmp_path_factory.mktemp(f"fuzz-{fmt}")
        path, cols = _write(data, tmp, "events", fmt, rows)
        check_example(spark, path, "events", fmt, len(rows), good, cols)
        cases.append(len(rows))

    run()
    assert sum(cases) >= EXAMPLES["events"] * ROWS  # every example really ran (none discarded)


@pytest.mark.parametrize("table", ["users", "videos"])
def test_fuzzed_users_and_videos_are_accepted_or_rejected_never_lost(spark, tmp_path_factory, table):
    cases: list[int] = []

    @_settings(EXAMPLES[table])
    @given(data=st.data())
    def run(data):
        fmt = data.draw(st.sampled_from(["jsonl", "csv", "parquet"]), label="format")
        rows, _ = data.draw(rows_for(table, fmt, n=40), label="rows")
        tmp = tmp_path_factory.mktemp(f"fuzz-{table}")
        path, cols = _write(data, tmp, table, fmt, rows)
        check_example(spark, path, table, fmt, len(rows), [], cols)
        cases.append(len(rows))

    run()
    assert sum(cases) >= EXAMPLES[table] * 40


# ------------------------------------------------------------------ regressions found by fuzzing, known answers

W = {"event_type": "watch", "video_id": "v1", "watch_seconds": 10}


def _reasons(spark, path: str, table: str = "events") -> list:
    v = validate(read_table(spark, path, table), table, CFG)
    return v.tagged.select(S.REJECT_REASON, S.USER_ID, *[f"__t_{c}" for c in S.TABLES[table][0]]).collect()


def test_every_json_line_is_one_row_and_odd_values_are_rejected(spark, tmp_path):
    lines = [
        "\ufeff" + json.dumps({"event_ts": T0, "user_id": "bom", **W}),  # byte-order mark opening the file
        "[]",  # Spark's JSON source dropped this line
        json.dumps([{"event_ts": T0, "user_id": "a1", **W}, {"event_ts": T0, "user_id": "a2", **W}]),  # was 2 rows
        "42",
        "   ",  # a blank line is not a row
        json.dumps({"event_ts": "1d", "user_id": "java-suffix", **W}),  # Spark casts '1d' to 1.0
        json.dumps({"event_ts": T0, "user_id": "\t", **W}),  # whitespace only is missing
        json.dumps({"event_ts": T0, "user_id": "f-suffix", **{**W, "watch_seconds": "5f"}}),
        json.dumps({"event_ts": f" {T0:.0f} ", "user_id": "\tpadded\n", **W}),
    ]
    p = tmp_path / "e" / "e.jsonl"
    p.parent.mkdir()
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    got = [(r[0], r[1]) for r in _reasons(spark, str(p.parent))]
    assert sorted(got, key=str) == sorted([
        (None, "bom"), ("unparseable_line", None), ("unparseable_line", None), ("unparseable_line", None),
        ("invalid_event_ts", "java-suffix"), ("missing_user_id", "\t"), ("invalid_watch_seconds", "f-suffix"),
        (None, "\tpadded\n")], key=str)
    accepted = {r[1]: r for r in _reasons(spark, str(p.parent)) if r[0] is None}
    assert accepted["\tpadded\n"][f"__t_{S.USER_ID}"] == "padded"
    assert accepted["\tpadded\n"][f"__t_{S.EVENT_TS}"] == T0


def test_csv_follows_rfc4180_quotes_and_line_breaks(spark, tmp_path):
    p = tmp_path / "c" / "e.csv"
    p.parent.mkdir()
    with open(p, "w", newline="", encoding="utf-8") as f:
        f.write("\ufeff")
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow([S.EVENT_TS, S.USER_ID, S.EVENT_TYPE, S.QUERY, S.COUNTRY])
        w.writerow([T0, "q", "search", 'say "hi", twice', "N\nL"])
        w.writerow([T0, "r", "search", "cats", "NL"])
        f.write(f'{T0},ragged,search\r\n')
    rows = {r[1]: r for r in _reasons(spark, str(p.parent))}
    assert set(rows) == {"q", "r", "ragged"}  # three records: the line break stayed inside its field
    assert rows["q"][0] is None and rows["q"][f"__t_{S.QUERY}"] == 'say "hi", twice'
    assert rows["q"][f"__t_{S.COUNTRY}"] == "N\nL"
    assert rows["r"][0] is None and rows["ragged"][0] == "unparseable_line"


def test_typed_parquet_columns_booleans_nan_and_numeric_ids(spark, tmp_path):
    t = pa.table({
        S.EVENT_TS: pa.array([T0, float("nan"), float("inf"), T0, T0 + 1], pa.float64()),
        S.USER_ID: pa.array([1, 2, 3, 4, 5], pa.int64()),
        S.EVENT_TYPE: ["watch"] * 5,
        S.VIDEO_ID: ["v"] * 5,
        S.WATCH_SECONDS: pa.array([True, None, None, None, False], pa.bool_()),
    })
    (tmp_path / "p").mkdir()
    pq.write_table(t, tmp_path / "p" / "e.parquet")
    got = {str(r[1]): r[0] for r in _reasons(spark, str(tmp_path / "p"))}
    assert got == {"1": "invalid_watch_seconds", "2": "invalid_event_ts", "3": "invalid_event_ts", "4": None,
                   "5": "invalid_watch_seconds"}
    flags = pa.table({S.EVENT_TS: pa.array([True], pa.bool_()), S.USER_ID: ["u"], S.EVENT_TYPE: ["search"],
                      S.QUERY: ["q"]})
    (tmp_path / "b").mkdir()
    pq.write_table(flags, tmp_path / "b" / "e.parquet")
    assert [r[0] for r in _reasons(spark, str(tmp_path / "b"))] == ["invalid_event_ts"]


def test_user_with_100k_events_one_event_user_and_unwatched_videos_prepare(spark, tmp_path):
    """Extremes of the per-user row builders: one user with 100,000 watches, one with a single watch."""
    from pyspark.sql import functions as F

    from ytspark.prepare import read_inputs, run_prepare

    n = 100_000
    heavy = spark.range(n).select(
        (F.lit(T0) + F.col("id") * 30.0).alias(S.EVENT_TS), F.lit("heavy").alias(S.USER_ID),
        F.lit("watch").alias(S.EVENT_TYPE), F.concat(F.lit("v"), (F.col("id") % 50).cast("string")).alias(S.VIDEO_ID),
        F.lit(90.0).alias(S.WATCH_SECONDS), F.lit(100.0).alias(S.VIDEO_SECONDS))
    light = spark.createDataFrame([(T0 + 5.0, "light", "watch", "v7", 90.0, 100.0)], heavy.schema)
    heavy.unionByName(light).repartition(3).write.parquet(str(tmp_path / "events"))
    videos = spark.createDataFrame([(f"v{i}", T0 - DAY, 100.0) for i in range(60)],  # v50..v59 never watched
                                   f"{S.VIDEO_ID} string, {S.UPLOAD_TS} double, {S.DURATION_SECONDS} double")
    videos.write.parquet(str(tmp_path / "videos"))
    cfg = make_config(f'data.events="{tmp_path / "events"}"', f'data.videos="{tmp_path / "videos"}"',
                      "prepare.history_length=8", "prepare.target_shards=2")
    m = run_prepare(spark, cfg, read_inputs(spark, cfg), str(tmp_path / "prepared"))
    ev = m["tables"]["events"]
    assert ev["input"] == ev["accepted"] == n + 1 and ev["rejected"] == 0
    assert m["tables"]["videos"]["accepted"] == 60
    rows = spark.read.parquet(*[str(tmp_path / "prepared" / "candidates" / s) for s in S.SPLITS])
    per = {(r[S.USER_ID], r[S.SPLIT]): r["count"] for r in rows.groupBy(S.USER_ID, S.SPLIT).count().collect()}
    cap = cfg.prepare.max_examples_per_user
    assert per[("heavy", "train")] == cap  # a fixed number of examples, however many events
    assert per[("heavy", "val")] == per[("heavy", "test")] == 1
    assert per[("light", "train")] == 1 and ("light", "test") not in per
    assert m["vocab_sizes"]["video"] == 50 + 2  # only watched videos get ids (0 pad, 1 OOV)
