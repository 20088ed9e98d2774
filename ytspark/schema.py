"""Column names and table schemas: the one place where the data contracts live.

Input contract (DESIGN.md "Input contract"): ``events``, ``users``, ``videos``.
Internal tables produced by ``prepare``: validated events, rejects, candidate
rows, ranking rows; by ``score``: the nightly top-N rows. Every Spark step
declares its output schema here and its test checks it. A table built both in
Spark and as Arrow batches is declared once (:class:`Table`) and its two
schemas are made from that one declaration (``*_SCHEMA`` and ``*_ARROW_SCHEMA``).
Shared constants live here too: PAD/OOV/N_SPECIAL, DAY, NEVER_DAYS, KIND_*.
"""
from __future__ import annotations

from typing import NamedTuple

import pyarrow as pa
from pyspark.sql import types as T

# ---------------------------------------------------------------- input columns
EVENT_TS = "event_ts"
USER_ID = "user_id"
EVENT_TYPE = "event_type"
VIDEO_ID = "video_id"
QUERY = "query"
WATCH_SECONDS = "watch_seconds"
VIDEO_SECONDS = "video_seconds"
CLICKED = "clicked"
DEVICE = "device"
COUNTRY = "country"

GENDER = "gender"
AGE = "age"
BIRTH_YEAR = "birth_year"
LANGUAGE = "language"

UPLOAD_TS = "upload_ts"
DURATION_SECONDS = "duration_seconds"
CHANNEL_ID = "channel_id"
CATEGORY = "category"
TITLE = "title"

EVENT_TYPES = ("watch", "search", "impression")

# The Spark type each input column is cast to after reading, declared once for every table that has the
# column. The reader accepts anything castable (e.g. epoch seconds as string).
_INPUT_TYPES: dict[str, T.DataType] = {
    EVENT_TS: T.DoubleType(), UPLOAD_TS: T.DoubleType(),  # epoch seconds after parsing (timestamp, number, ISO)
    WATCH_SECONDS: T.DoubleType(), VIDEO_SECONDS: T.DoubleType(), DURATION_SECONDS: T.DoubleType(),
    AGE: T.DoubleType(), BIRTH_YEAR: T.IntegerType(), CLICKED: T.IntegerType(),
    **{c: T.StringType() for c in (USER_ID, EVENT_TYPE, VIDEO_ID, QUERY, DEVICE, COUNTRY, GENDER, LANGUAGE,
                                   CHANNEL_ID, CATEGORY, TITLE)},
}


def _input_columns(*names: str) -> dict[str, T.DataType]:
    return {c: _INPUT_TYPES[c] for c in names}


# Each input table's columns (in the order written) and the ones a row must have.
EVENTS_COLUMNS = _input_columns(EVENT_TS, USER_ID, EVENT_TYPE, VIDEO_ID, QUERY, WATCH_SECONDS, VIDEO_SECONDS,
                                CLICKED, DEVICE, COUNTRY)
EVENTS_REQUIRED = (EVENT_TS, USER_ID, EVENT_TYPE)
USERS_COLUMNS = _input_columns(USER_ID, GENDER, AGE, BIRTH_YEAR, COUNTRY, LANGUAGE, DEVICE)
USERS_REQUIRED = (USER_ID,)
VIDEOS_COLUMNS = _input_columns(VIDEO_ID, UPLOAD_TS, DURATION_SECONDS, LANGUAGE, CHANNEL_ID, CATEGORY, TITLE)
VIDEOS_REQUIRED = (VIDEO_ID,)
TABLES = {
    "events": (EVENTS_COLUMNS, EVENTS_REQUIRED),
    "users": (USERS_COLUMNS, USERS_REQUIRED),
    "videos": (VIDEOS_COLUMNS, VIDEOS_REQUIRED),
}
# Columns parsed as timestamps (accept timestamp, epoch number or ISO string).
TIMESTAMP_COLUMNS = {"events": (EVENT_TS,), "users": (), "videos": (UPLOAD_TS,)}

# ---------------------------------------------------------------- declared tables
# A table written by a Spark step and built as Arrow batches (mapInArrow) has two schemas, a Spark
# StructType and a pyarrow Schema. Each is declared once, as a Table of (name, kind) columns, and both
# twins are made from it: ``to_spark()`` and ``to_arrow()``. Kinds are Spark simple strings, each mapped
# here to its (Spark type, Arrow type). Arrow lists keep Arrow's default (nullable) item field: what the batch
# builders write and the tests compare; Spark's arrays say containsNull=False.
_KINDS: dict[str, tuple[T.DataType, pa.DataType]] = {
    "string": (T.StringType(), pa.string()),
    "int": (T.IntegerType(), pa.int32()),
    "bigint": (T.LongType(), pa.int64()),
    "float": (T.FloatType(), pa.float32()),
    "double": (T.DoubleType(), pa.float64()),
    "boolean": (T.BooleanType(), pa.bool_()),
    "array<int>": (T.ArrayType(T.IntegerType(), False), pa.list_(pa.int32())),
    "array<float>": (T.ArrayType(T.FloatType(), False), pa.list_(pa.float32())),
}


class Col(NamedTuple):
    """One declared column: its name, its kind (a key of ``_KINDS``) and whether it may be null."""

    name: str
    kind: str
    nullable: bool = False


class Table:
    """A table's columns, declared once; ``to_spark()`` and ``to_arrow()`` give its two schemas."""

    def __init__(self, columns) -> None:
        cols = tuple(c if isinstance(c, Col) else Col(*c) for c in columns)
        bad = [f"{c.name}: {c.kind}" for c in cols if c.kind not in _KINDS]
        if bad:
            raise ValueError(f"Table: unknown column kind(s) {bad}; known: {sorted(_KINDS)}")
        self.columns = cols

    def __add__(self, other: Table) -> Table:
        return Table(self.columns + other.columns)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def to_spark(self) -> T.StructType:
        return T.StructType([T.StructField(c.name, _KINDS[c.kind][0], c.nullable) for c in self.columns])

    def to_arrow(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, _KINDS[c.kind][1], nullable=c.nullable) for c in self.columns])


# ---------------------------------------------------------------- rejects
REJECT_REASON = "reject_reason"
REJECT_TABLE = "source_table"
CORRUPT_RECORD = "_corrupt_record"
RAW = "raw"  # the original row as JSON (or the unparseable line itself)
REJECTS = Table([(REJECT_TABLE, "string"), (REJECT_REASON, "string"), (RAW, "string", True)])
REJECTS_SCHEMA = REJECTS.to_spark()
EVENT_SEQ = "event_seq"  # stable tie-breaker within a user's timeline
LOG_SEQ = "log_seq"  # events: the row's position in the input log (read order); prepared/events keep it with
#                      prepare.tie_break = "log", and it then orders same-second events everywhere

# ---------------------------------------------------------------- internal columns
TS = "ts"  # epoch seconds, double
VIDEO_IDX = "video_idx"
TOKEN_IDX = "token_idx"
SPLIT = "split"
SPLITS = ("train", "val", "test")
CALIBRATION = "calibration"  # the ranker's rows only: training impressions of held-out users (ranker.calibration_share)

# Fixed-length padded arrays (index 0 = padding, 1 = OOV).
PAD = 0
OOV = 1
N_SPECIAL = 2  # ids below this (PAD, OOV) are never in the catalogue: never recommended, sampled or a neighbour

# Time units and event kinds shared by prepare, train and score.
DAY = 86400.0  # seconds
NEVER_DAYS = -1.0  # a "days since" feature with nothing before (no previous watch / impression, unknown upload)
KIND_WATCH, KIND_SEARCH, KIND_IMPRESSION = 0, 1, 2  # the int ``kind`` prepare gives each event row
KIND_USER = 3  # a per-user marker row of the serving pass (ytspark.score.features.serving_events): no event

# Candidate-generation rows (one per label watch).
CAND_LABEL = "label"  # video vocab index of the positive watch
CAND_LABEL_TS = "label_ts"
CAND_WATCH_HIST = "watch_hist"  # last-N watched video idx, most recent first, padded with 0
CAND_WATCH_AGE = "watch_hist_age"  # days from each history watch to the label, same order, 0 for pad
CAND_SEARCH_HIST = "search_hist"  # last-N search token idx, most recent first, padded with 0
CAND_EXAMPLE_AGE = "example_age_days"
CAND_SINCE_LAST = "since_last_watch_days"
CAND_N_WATCHES = "n_prior_watches"
DEMOGRAPHIC_COLUMNS = ("gender_idx", "country_idx", "language_idx", "device_idx", "age_bucket_idx")
USER_AGE = "user_age"
USER_IDX = "user_idx"  # row number of the user (stable: sorted by user_id) for baselines

CANDIDATE = Table(
    [
        (USER_ID, "string"),
        (SPLIT, "string"),
        (CAND_LABEL, "int"),
        (CAND_LABEL_TS, "double"),
        (CAND_WATCH_HIST, "array<int>"),
        (CAND_WATCH_AGE, "array<float>"),
        (CAND_SEARCH_HIST, "array<int>"),
        (CAND_N_WATCHES, "int"),
        (CAND_SINCE_LAST, "float"),
        (CAND_EXAMPLE_AGE, "float"),
        (USER_AGE, "float"),
    ]
    + [(c, "int") for c in DEMOGRAPHIC_COLUMNS]
)
CANDIDATE_SCHEMA = CANDIDATE.to_spark()
CANDIDATE_ARROW_SCHEMA = CANDIDATE.to_arrow()

# Sequence rows (candidate.encoder = sequence | auto): one row per user window, training only. A window is
# a candidate row (label = the window's last watch, history = the watches before it) plus, per history slot
# j (most recent first), the target of position j and the searches position j may see. Position j's input
# is slots >= j (older); its target is the next watch (slot j - 1, the label for j = 0). Rollback per
# position, applied by prepare: SEQ_NEXT[j] is 0 (no example) unless that next watch is completed, in the
# vocabulary and strictly later than slot j; position j sees search_hist[SEQ_SEARCH_FROM[j]:], the tokens
# strictly before its target's time.
SEQ_NEXT = "seq_next"
SEQ_SEARCH_FROM = "seq_search_from"
SEQUENCE = CANDIDATE + Table([(SEQ_NEXT, "array<int>"), (SEQ_SEARCH_FROM, "array<int>")])
SEQUENCE_SCHEMA = SEQUENCE.to_spark()
SEQUENCE_ARROW_SCHEMA = SEQUENCE.to_arrow()

# Ranking rows (one per impression).
RANK_VIDEO = "video_idx"
RANK_CLICKED = "clicked"
RANK_WEIGHT = "weight"  # watch seconds when clicked, 1 when not
RANK_WATCH_SECONDS = "watch_seconds"
RANK_IMPRESSION_TS = "impression_ts"
RANK_VIDEO_LANGUAGE = "video_language_idx"
RANK_USER_LANGUAGE = "language_idx"
RANK_CHANNEL = "channel_idx"
RANK_CATEGORY = "category_idx"
RANK_SOURCE = "source_idx"
RANK_CONTINUOUS = (
    "since_last_watch_days",
    "n_prev_impressions",  # impressions of this video to this user before t (features/history.impression_history)
    "since_impression_days",  # days since the latest of them (-1 none)
    "prev_impression_clicked",  # 1 when any of them was clicked
    "channel_watches",
    "since_channel_watch_days",
    "category_watches",
    "since_category_watch_days",
    "video_age_days",
    "retrieval_score",
)

RANKING = Table(
    [
        (USER_ID, "string"),
        (SPLIT, "string"),
        (RANK_IMPRESSION_TS, "double"),
        (RANK_VIDEO, "int"),
        (CAND_WATCH_HIST, "array<int>"),
        (RANK_USER_LANGUAGE, "int"),
        (RANK_VIDEO_LANGUAGE, "int"),
        (RANK_CHANNEL, "int"),
        (RANK_CATEGORY, "int"),
        (RANK_SOURCE, "int"),
    ]
    + [(c, "float") for c in RANK_CONTINUOUS]
    + [
        (RANK_CLICKED, "int"),
        (RANK_WATCH_SECONDS, "float"),
        (RANK_WEIGHT, "float"),
    ]
)
RANKING_SCHEMA = RANKING.to_spark()
RANKING_ARROW_SCHEMA = RANKING.to_arrow()

# Nightly top-N rows (score): SCORED is what the per-partition scorer returns, RECOMMENDATIONS the
# published table (the same rows with the model version and run date).
RANK = "rank"  # 1-based position in the user's list
SCORE = "score"
RETRIEVAL_SCORE = "retrieval_score"
SOURCE = "source"  # "candidate" or the fallback list the row came from
MODEL_VERSION = "model_version"
RUN_DATE = "run_date"
SCORED = Table([
    (USER_ID, "string"),
    (RANK, "int"),
    (VIDEO_ID, "string"),
    (SCORE, "float"),
    (RETRIEVAL_SCORE, "float"),
    (SOURCE, "string"),
])
SCORED_SCHEMA = SCORED.to_spark()
SCORED_ARROW_SCHEMA = SCORED.to_arrow()
RECOMMENDATIONS = SCORED + Table([(MODEL_VERSION, "string"), (RUN_DATE, "string")])
RECOMMENDATIONS_SCHEMA = RECOMMENDATIONS.to_spark()

# Every table declared with both twins (tests/test_schema.py checks that they agree).
DECLARED_TABLES = {
    "rejects": REJECTS,
    "candidates": CANDIDATE,
    "sequences": SEQUENCE,
    "ranking": RANKING,
    "scored": SCORED,
    "recommendations": RECOMMENDATIONS,
}

# Vocabulary names written by prepare.
VOCAB_NAMES = ("video", "token", "gender", "country", "language", "device", "channel", "category", "source")
# The "source" vocabulary's values (a candidate's origin), in id order: id = 2 + position.
CANDIDATE_SOURCES = ("impression", "candidate", "popular", "demographic")
AGE_BUCKETS = (0, 18, 25, 35, 45, 55, 65)  # lower bounds; bucket idx = 2 + position, 1 = unknown


def check_schema(df_schema: T.StructType, expected: T.StructType, what: str) -> None:
    """Raise ValueError naming every column whose presence or type differs from ``expected``."""
    got = {f.name: f.dataType for f in df_schema.fields}
    problems = []
    for f in expected.fields:
        if f.name not in got:
            problems.append(f"missing column '{f.name}' ({f.dataType.simpleString()})")
        elif got[f.name].simpleString() != f.dataType.simpleString():  # nullability aside
            problems.append(
                f"column '{f.name}' is {got[f.name].simpleString()}, expected {f.dataType.simpleString()}"
            )
    if problems:
        raise ValueError(f"{what}: " + "; ".join(problems))
