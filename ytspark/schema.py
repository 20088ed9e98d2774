"""Column names and table schemas: the one place where the data contracts live.

Input contract (DESIGN.md "Input contract"): ``events``, ``users``, ``videos``.
Internal tables produced by ``prepare``: validated events, rejects, candidate
rows, ranking rows. Every Spark step declares its output schema here and its
test checks it.
"""
from __future__ import annotations

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

# Required columns per table and the Spark type each column is cast to after
# reading. The reader accepts anything castable (e.g. epoch seconds as string).
EVENTS_REQUIRED = (EVENT_TS, USER_ID, EVENT_TYPE)
EVENTS_COLUMNS: dict[str, T.DataType] = {
    EVENT_TS: T.DoubleType(),  # epoch seconds after parsing (timestamp, number or ISO string in)
    USER_ID: T.StringType(),
    EVENT_TYPE: T.StringType(),
    VIDEO_ID: T.StringType(),
    QUERY: T.StringType(),
    WATCH_SECONDS: T.DoubleType(),
    VIDEO_SECONDS: T.DoubleType(),
    CLICKED: T.IntegerType(),
    DEVICE: T.StringType(),
    COUNTRY: T.StringType(),
}
USERS_REQUIRED = (USER_ID,)
USERS_COLUMNS: dict[str, T.DataType] = {
    USER_ID: T.StringType(),
    GENDER: T.StringType(),
    AGE: T.DoubleType(),
    BIRTH_YEAR: T.IntegerType(),
    COUNTRY: T.StringType(),
    LANGUAGE: T.StringType(),
    DEVICE: T.StringType(),
}
VIDEOS_REQUIRED = (VIDEO_ID,)
VIDEOS_COLUMNS: dict[str, T.DataType] = {
    VIDEO_ID: T.StringType(),
    UPLOAD_TS: T.DoubleType(),  # epoch seconds after parsing
    DURATION_SECONDS: T.DoubleType(),
    LANGUAGE: T.StringType(),
    CHANNEL_ID: T.StringType(),
    CATEGORY: T.StringType(),
    TITLE: T.StringType(),
}
TABLES = {
    "events": (EVENTS_COLUMNS, EVENTS_REQUIRED),
    "users": (USERS_COLUMNS, USERS_REQUIRED),
    "videos": (VIDEOS_COLUMNS, VIDEOS_REQUIRED),
}
# Columns parsed as timestamps (accept timestamp, epoch number or ISO string).
TIMESTAMP_COLUMNS = {"events": (EVENT_TS,), "users": (), "videos": (UPLOAD_TS,)}

# ---------------------------------------------------------------- rejects
REJECT_REASON = "reject_reason"
REJECT_TABLE = "source_table"
CORRUPT_RECORD = "_corrupt_record"
EVENT_SEQ = "event_seq"  # stable tie-breaker within a user's timeline

# ---------------------------------------------------------------- internal columns
TS = "ts"  # epoch seconds, double
VIDEO_IDX = "video_idx"
TOKEN_IDX = "token_idx"
SPLIT = "split"
SPLITS = ("train", "val", "test")

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

CANDIDATE_SCHEMA = T.StructType(
    [
        T.StructField(USER_ID, T.StringType(), False),
        T.StructField(SPLIT, T.StringType(), False),
        T.StructField(CAND_LABEL, T.IntegerType(), False),
        T.StructField(CAND_LABEL_TS, T.DoubleType(), False),
        T.StructField(CAND_WATCH_HIST, T.ArrayType(T.IntegerType(), False), False),
        T.StructField(CAND_WATCH_AGE, T.ArrayType(T.FloatType(), False), False),
        T.StructField(CAND_SEARCH_HIST, T.ArrayType(T.IntegerType(), False), False),
        T.StructField(CAND_N_WATCHES, T.IntegerType(), False),
        T.StructField(CAND_SINCE_LAST, T.FloatType(), False),
        T.StructField(CAND_EXAMPLE_AGE, T.FloatType(), False),
        T.StructField(USER_AGE, T.FloatType(), False),
    ]
    + [T.StructField(c, T.IntegerType(), False) for c in DEMOGRAPHIC_COLUMNS]
)

# Sequence rows (candidate.encoder = sequence | auto): one row per user window, training only. A window is
# a candidate row (label = the window's last watch, history = the watches before it) plus, per history slot
# j (most recent first), the target of position j and the searches position j may see. Position j's input
# is slots >= j (older); its target is the next watch (slot j - 1, the label for j = 0). Rollback per
# position, applied by prepare: SEQ_NEXT[j] is 0 (no example) unless that next watch is completed, in the
# vocabulary and strictly later than slot j; position j sees search_hist[SEQ_SEARCH_FROM[j]:], the tokens
# strictly before its target's time.
SEQ_NEXT = "seq_next"
SEQ_SEARCH_FROM = "seq_search_from"
SEQUENCE_SCHEMA = T.StructType(
    list(CANDIDATE_SCHEMA.fields)
    + [T.StructField(SEQ_NEXT, T.ArrayType(T.IntegerType(), False), False),
       T.StructField(SEQ_SEARCH_FROM, T.ArrayType(T.IntegerType(), False), False)]
)

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
    "n_prev_impressions",  # impressions of this video to this user before t (prepare/batch_ranking.impression_history)
    "since_impression_days",  # days since the latest of them (-1 none)
    "prev_impression_clicked",  # 1 when any of them was clicked
    "channel_watches",
    "since_channel_watch_days",
    "category_watches",
    "since_category_watch_days",
    "video_age_days",
    "retrieval_score",
)

RANKING_SCHEMA = T.StructType(
    [
        T.StructField(USER_ID, T.StringType(), False),
        T.StructField(SPLIT, T.StringType(), False),
        T.StructField(RANK_IMPRESSION_TS, T.DoubleType(), False),
        T.StructField(RANK_VIDEO, T.IntegerType(), False),
        T.StructField(CAND_WATCH_HIST, T.ArrayType(T.IntegerType(), False), False),
        T.StructField(RANK_USER_LANGUAGE, T.IntegerType(), False),
        T.StructField(RANK_VIDEO_LANGUAGE, T.IntegerType(), False),
        T.StructField(RANK_CHANNEL, T.IntegerType(), False),
        T.StructField(RANK_CATEGORY, T.IntegerType(), False),
        T.StructField(RANK_SOURCE, T.IntegerType(), False),
    ]
    + [T.StructField(c, T.FloatType(), False) for c in RANK_CONTINUOUS]
    + [
        T.StructField(RANK_CLICKED, T.IntegerType(), False),
        T.StructField(RANK_WATCH_SECONDS, T.FloatType(), False),
        T.StructField(RANK_WEIGHT, T.FloatType(), False),
    ]
)

# Vocabulary names written by prepare.
VOCAB_NAMES = ("video", "token", "gender", "country", "language", "device", "channel", "category", "source")
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
