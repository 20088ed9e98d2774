"""Serving rows: every user's inputs to the user tower as of a run date, built in Spark.

One row per user of the prepared ``users`` table or of the events before the
cut-off ``as_of`` (epoch seconds, exclusive; :func:`as_of_ts` gives the end of
a run date's UTC day). The columns mean exactly what they mean in a training
row of :func:`ytspark.prepare.candidates.user_candidate_rows` labelled at
``as_of`` (a "next watch" asked about now): the last ``history_length`` watched
video idx most recent first and their age in days before ``as_of``, the last
``history_length`` search tokens, ``n_prior_watches``,
``since_last_watch_days`` (-1 without a watch), the demographics and
``user_age`` of ``prepare`` (:func:`ytspark.prepare.job._user_features`, the
same vocabularies); there is no label and the example age is 0.

The per-user function of ``prepare`` costs about 10 ms a user (a pandas frame
per call), which would cap a nightly run at about 200 users/s on two cores;
so the same semantics are written here as Spark SQL over whole tables, and
``tests/test_score.py`` checks that every serving row equals the training row
``user_candidate_rows`` builds for a label at ``as_of``, on hand-built logs and
on a generated platform.

Extra columns: ``seen`` (every distinct in-vocabulary video the user ever
watched before ``as_of``, sorted: excluded from recommendations) and, with
``affinity=True`` (for the ranking network), per channel and per category the
user's watch count and days since the last such watch (sorted by id).
"""
from __future__ import annotations

import datetime as dt
import re

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ytspark import schema as S
from ytspark.prepare.candidates import DAY, NEVER_DAYS
from ytspark.prepare.job import _user_features, _video_features, event_seq
from ytspark.vocab import Vocab, apply_vocab, tokens_column

SEEN = "seen"
AFFINITY_GROUPS = ("channel", "category")  # -> <g>_ids, <g>_watches, <g>_since_days
VOCABS_NEEDED = ("video", "token", "gender", "country", "language", "device", "channel", "category", "source")


def affinity_columns(group: str) -> tuple[str, str, str]:
    """(ids, watch counts, days since last watch) column names of a channel/category group."""
    return f"{group}_ids", f"{group}_watches", f"{group}_since_days"


def serving_schema(affinity: bool = False) -> T.StructType:
    """Output schema of :func:`serving_rows`."""
    fields = [
        T.StructField(S.USER_ID, T.StringType(), False),
        T.StructField(S.CAND_WATCH_HIST, T.ArrayType(T.IntegerType(), False), False),
        T.StructField(S.CAND_WATCH_AGE, T.ArrayType(T.FloatType(), False), False),
        T.StructField(S.CAND_SEARCH_HIST, T.ArrayType(T.IntegerType(), False), False),
        T.StructField(S.CAND_N_WATCHES, T.IntegerType(), False),
        T.StructField(S.CAND_SINCE_LAST, T.FloatType(), False),
        T.StructField(S.USER_AGE, T.FloatType(), False),
        *[T.StructField(c, T.IntegerType(), False) for c in S.DEMOGRAPHIC_COLUMNS],
        T.StructField(SEEN, T.ArrayType(T.IntegerType(), False), False),
    ]
    if affinity:
        for g in AFFINITY_GROUPS:
            ids, cnt, since = affinity_columns(g)
            fields += [T.StructField(ids, T.ArrayType(T.IntegerType(), False), False),
                       T.StructField(cnt, T.ArrayType(T.FloatType(), False), False),
                       T.StructField(since, T.ArrayType(T.FloatType(), False), False)]
    return T.StructType(fields)


def as_of_ts(run_date: str) -> float:
    """Epoch seconds of the end of ``run_date`` (YYYY-MM-DD, UTC): events strictly before it count."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", run_date):
            raise ValueError(run_date)
        d = dt.date.fromisoformat(run_date)
    except ValueError as e:
        raise ValueError(f"score.run_date must be a date YYYY-MM-DD, got '{run_date}'") from e
    end = dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
    return end.timestamp()


def load_vocabs(spark: SparkSession, prepared_dir: str) -> dict[str, Vocab]:
    """The prepared vocabularies scoring needs, by name."""
    return {n: Vocab.load(spark, f"{prepared_dir}/vocab/{n}.json") for n in VOCABS_NEEDED}


def _last(arr: Column, h: int) -> Column:
    """The last ``h`` elements of a sorted array, most recent first."""
    n = F.size(arr)
    return F.reverse(F.slice(arr, F.greatest(n - h + 1, F.lit(1)), F.least(n, F.lit(h))))


def _pad(arr: Column, h: int, zero) -> Column:
    return F.concat(arr, F.array_repeat(zero, F.lit(h) - F.size(arr)))


def _days_before(as_of: float, ts: Column) -> Column:
    """(as_of - ts) / DAY in double, then float32: the rounding ``user_candidate_rows`` does."""
    return ((F.lit(as_of) - ts) / F.lit(DAY)).cast("float")


def _watch_features(watches: DataFrame, as_of: float, h: int) -> DataFrame:
    w = watches.groupBy(S.USER_ID).agg(
        # time, then prepare's tie-break (ROW_ORDER): the same order as the training rows
        F.array_sort(F.collect_list(F.struct(F.col(S.TS).alias("t"), event_seq().alias("q"),
                                             F.col(S.VIDEO_IDX).alias("v")))).alias("w"),
        F.array_sort(F.collect_set(F.when(F.col(S.VIDEO_IDX) >= 2, F.col(S.VIDEO_IDX)))).alias(SEEN),
    )
    last = _last(F.col("w"), h)
    n = F.size("w")
    return w.select(
        S.USER_ID,
        _pad(F.transform(last, lambda x: x["v"]), h, F.lit(S.PAD)).alias(S.CAND_WATCH_HIST),
        _pad(F.transform(last, lambda x: _days_before(as_of, x["t"])), h, F.lit(0.0).cast("float"))
        .alias(S.CAND_WATCH_AGE),
        n.cast("int").alias(S.CAND_N_WATCHES),
        F.when(n > 0, _days_before(as_of, F.element_at("w", -1)["t"])).alias(S.CAND_SINCE_LAST),
        F.col(SEEN),
    )


def _search_features(searches: DataFrame, token_vocab: Vocab, h: int) -> DataFrame:
    toks = searches.select(S.USER_ID, F.col(S.TS), F.col(S.QUERY),
                           F.posexplode(tokens_column(F.col(S.QUERY))).alias("pos", "tok"))
    toks = apply_vocab(toks, token_vocab, "tok", S.TOKEN_IDX)
    # Time order; the query text then the token position break ties between searches at the same second.
    s = toks.groupBy(S.USER_ID).agg(F.array_sort(F.collect_list(
        F.struct(F.col(S.TS).alias("t"), F.col(S.QUERY).alias("q"), F.col("pos").alias("p"),
                 F.col(S.TOKEN_IDX).alias("k")))).alias("s"))
    return s.select(S.USER_ID, _pad(F.transform(_last(F.col("s"), h), lambda x: x["k"]), h, F.lit(S.PAD))
                    .alias(S.CAND_SEARCH_HIST))


def _affinity_features(watches: DataFrame, as_of: float | Column) -> DataFrame:
    """Per user and channel/category: watch count and days since the last watch, as parallel sorted arrays.

    ``as_of``: the cut-off in epoch seconds, or a column of ``watches`` holding each user's own cut-off.
    """
    out = None
    keep = [as_of] if isinstance(as_of, Column) else []
    for g, col in zip(AFFINITY_GROUPS, (S.RANK_CHANNEL, S.RANK_CATEGORY)):
        ids, cnt, since = affinity_columns(g)
        per = watches.groupBy(S.USER_ID, *keep, col).agg(F.count(F.lit(1)).alias("n"), F.max(S.TS).alias("last"))
        agg = per.groupBy(S.USER_ID, *keep).agg(F.array_sort(F.collect_list(
            F.struct(F.col(col).alias("g"), F.col("n").cast("float").alias("n"),
                     _days_before(as_of, F.col("last")).alias("d")))).alias("a"))
        agg = agg.select(S.USER_ID, F.transform("a", lambda x: x["g"]).alias(ids),
                         F.transform("a", lambda x: x["n"]).alias(cnt), F.transform("a", lambda x: x["d"]).alias(since))
        out = agg if out is None else out.join(agg, S.USER_ID, "full_outer")
    return out


def serving_rows(spark: SparkSession, prepared_dir: str, as_of: float, history_length: int = 50,
                 vocabs: dict[str, Vocab] | None = None, affinity: bool = False) -> DataFrame:
    """One :func:`serving_schema` row per user as of ``as_of`` (epoch seconds, exclusive) from a prepared dir."""
    h = int(history_length)
    vocabs = vocabs or load_vocabs(spark, prepared_dir)
    events = spark.read.parquet(f"{prepared_dir}/events").where(F.col(S.EVENT_TS) < F.lit(as_of)) \
        .withColumn(S.TS, F.col(S.EVENT_TS))
    users = spark.read.parquet(f"{prepared_dir}/users")
    ref_year = dt.datetime.fromtimestamp(as_of - 1, dt.timezone.utc).year
    ufeat = _user_features(users, vocabs, ref_year)

    watches = apply_vocab(events.where(F.col(S.EVENT_TYPE) == "watch"), vocabs["video"], S.VIDEO_ID, S.VIDEO_IDX)
    searches = events.where(F.col(S.EVENT_TYPE) == "search")
    df = ufeat.join(_watch_features(watches, as_of, h), S.USER_ID, "full_outer") \
        .join(_search_features(searches, vocabs["token"], h), S.USER_ID, "full_outer")
    if affinity:
        vfeat = _video_features(spark.read.parquet(f"{prepared_dir}/videos"), vocabs)
        wv = watches.join(vfeat.select(S.VIDEO_ID, S.RANK_CHANNEL, S.RANK_CATEGORY), S.VIDEO_ID, "left") \
            .fillna({S.RANK_CHANNEL: S.OOV, S.RANK_CATEGORY: S.OOV})
        df = df.join(_affinity_features(wv, as_of), S.USER_ID, "full_outer")

    zeros_i = F.array_repeat(F.lit(S.PAD), h)
    zeros_f = F.array_repeat(F.lit(0.0).cast("float"), h)
    empty_i = F.array().cast("array<int>")
    empty_f = F.array().cast("array<float>")
    cols = {
        S.USER_ID: F.col(S.USER_ID),
        S.CAND_WATCH_HIST: F.coalesce(S.CAND_WATCH_HIST, zeros_i),
        S.CAND_WATCH_AGE: F.coalesce(S.CAND_WATCH_AGE, zeros_f),
        S.CAND_SEARCH_HIST: F.coalesce(S.CAND_SEARCH_HIST, zeros_i),
        S.CAND_N_WATCHES: F.coalesce(S.CAND_N_WATCHES, F.lit(0)),
        S.CAND_SINCE_LAST: F.coalesce(S.CAND_SINCE_LAST, F.lit(NEVER_DAYS).cast("float")),
        S.USER_AGE: F.coalesce(S.USER_AGE, F.lit(-1.0).cast("float")),
        **{c: F.coalesce(c, F.lit(S.OOV)) for c in S.DEMOGRAPHIC_COLUMNS},
        SEEN: F.coalesce(SEEN, empty_i),
    }
    if affinity:
        for g in AFFINITY_GROUPS:
            ids, cnt, since = affinity_columns(g)
            cols.update({ids: F.coalesce(ids, empty_i), cnt: F.coalesce(cnt, empty_f),
                         since: F.coalesce(since, empty_f)})
    schema = serving_schema(affinity)
    return df.select(*[cols[f.name].cast(_nullable(f.dataType)).alias(f.name) for f in schema.fields])


def _nullable(t: T.DataType) -> T.DataType:
    """Spark refuses casts to non-null array elements; the values are never null anyway (check_schema ignores it)."""
    return T.ArrayType(t.elementType, True) if isinstance(t, T.ArrayType) else t
