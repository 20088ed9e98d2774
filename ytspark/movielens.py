"""MovieLens adapter (ml-latest-small / ml-latest format) to the input contract.

ratings.csv -> ``watch`` events (every rating is a completed watch; MovieLens has
no durations), tags.csv -> ``search`` events (the tag text is the query),
movies.csv -> videos (first genre as category, the year in the title as the
upload time, the title as title). MovieLens has no demographics, so there is no
users table. The tables come back raw (strings), ready for validation.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ytspark import schema as S
from ytspark import storage
from ytspark.prepare import RawTables
from ytspark.sources import InputError, _list_files, log_seq


def _csv(spark: SparkSession, path: str) -> DataFrame:
    _list_files(spark, path)  # clear error when missing
    return (
        spark.read.option("header", True).option("mode", "PERMISSIVE").option("escape", '"')
        .option("columnNameOfCorruptRecord", S.CORRUPT_RECORD).csv(path)
    )


def _contract(df: DataFrame, table: str) -> DataFrame:
    cols, _ = S.TABLES[table]
    sel = [F.col(c).cast("string").alias(c) if c in df.columns else F.lit(None).cast(T.StringType()).alias(c) for c in cols]
    corrupt = F.col(S.CORRUPT_RECORD) if S.CORRUPT_RECORD in df.columns else F.lit(None).cast("string")
    return df.select(*sel, corrupt.alias(S.CORRUPT_RECORD), *([log_seq()] if table == "events" else []))


def _events(df: DataFrame, event_type: str, what) -> DataFrame:
    """A MovieLens table (timestamp, userId, ...) as contract events of one type; ``what``: the type's column."""
    return _contract(df.select(F.col("timestamp").alias(S.EVENT_TS), F.col("userId").alias(S.USER_ID),
                               F.lit(event_type).alias(S.EVENT_TYPE), what), "events")


def read_movielens(spark: SparkSession, root: str) -> RawTables:
    """Read a MovieLens folder (ratings.csv, movies.csv, optional tags.csv) as contract tables."""
    root = root.rstrip("/")
    for name in ("ratings.csv", "movies.csv"):
        try:
            _list_files(spark, f"{root}/{name}")
        except InputError:
            raise InputError(f"'{root}' is not a MovieLens folder: {name} is missing") from None
    ratings = _csv(spark, f"{root}/ratings.csv")
    events = _events(ratings, "watch", F.col("movieId").alias(S.VIDEO_ID))
    if storage.exists(spark, f"{root}/tags.csv"):  # tags are optional in the MovieLens format
        tags = _csv(spark, f"{root}/tags.csv")
        events = events.unionByName(_events(tags, "search", F.col("tag").alias(S.QUERY)))
    movies = _csv(spark, f"{root}/movies.csv")
    year = F.regexp_extract(F.col("title"), r"\((\d{4})\)\s*$", 1)
    videos = movies.select(
        F.col("movieId").alias(S.VIDEO_ID),
        F.when(year != "", F.unix_timestamp(F.concat(year, F.lit("-01-01")), "yyyy-MM-dd")).alias(S.UPLOAD_TS),
        F.split(F.col("genres"), r"\|").getItem(0).alias(S.CATEGORY),
        F.col("title").alias(S.TITLE),
    )
    return RawTables(events=events, users=None, videos=_contract(videos, "videos"),
                     paths={"movielens": root, "events": f"{root}/ratings.csv+tags.csv", "videos": f"{root}/movies.csv"})
