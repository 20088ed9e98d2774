"""The Spark driver: output schemas, the per-partition functions and :func:`generate`.

Users are ``spark.range(users)`` over ``cfg.partitions`` partitions; each
partition simulates its users with numpy inside ``mapInPandas`` from the
broadcast context, so the driver never holds an event.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Iterator

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ytspark import schema as S
from ytspark import storage
from ytspark.config import GenerateConfig
from ytspark.generate.behaviour import _Rows, _simulate_user
from ytspark.generate.constants import LANGUAGES, USERS_PER_CHUNK
from ytspark.generate.world import _context, _theta_at, _user_profile, build_catalog

log = logging.getLogger("ytspark.generate")


# ------------------------------------------------------------------ output schemas
def _struct(columns: dict[str, T.DataType]) -> T.StructType:
    return T.StructType([T.StructField(n, t, True) for n, t in columns.items()])


EVENTS_SCHEMA = _struct(S.EVENTS_COLUMNS)
USERS_SCHEMA = _struct(S.USERS_COLUMNS)
VIDEOS_SCHEMA = _struct(S.VIDEOS_COLUMNS)
INTEREST = "interest"
INTEREST_START = "interest_start"
QUALITY = "quality"
POPULARITY = "popularity"
SERIES_ID = "series_id"  # truth: the video's series (null: none)
EPISODE = "episode"  # truth: its episode number in the series, 1..n (null: none)
UP_NEXT = "up_next"  # truth: the video_id autoplay continues with (null: none)
USER_INTEREST_SCHEMA = T.StructType(
    [
        T.StructField(S.USER_ID, T.StringType(), False),
        T.StructField(INTEREST, T.ArrayType(T.FloatType(), False), False),
        T.StructField(INTEREST_START, T.ArrayType(T.FloatType(), False), False),
    ]
)
VIDEO_TOPIC_SCHEMA = T.StructType(
    [
        T.StructField(S.VIDEO_ID, T.StringType(), False),
        T.StructField(S.CATEGORY, T.IntegerType(), False),
        T.StructField(QUALITY, T.DoubleType(), False),
        T.StructField(POPULARITY, T.DoubleType(), False),
        T.StructField(SERIES_ID, T.IntegerType(), True),
        T.StructField(EPISODE, T.IntegerType(), True),
        T.StructField(UP_NEXT, T.StringType(), True),
    ]
)
_USERS_WITH_TRUTH = T.StructType(USERS_SCHEMA.fields + USER_INTEREST_SCHEMA.fields[1:])
_VIDEOS_WITH_TRUTH = T.StructType(
    VIDEOS_SCHEMA.fields + [T.StructField("topic_" + f.name, f.dataType, True) for f in VIDEO_TOPIC_SCHEMA.fields[1:]]
)


# ------------------------------------------------------------------ partitions (executors)
def _chunks(ids: np.ndarray, n: int) -> Iterator[np.ndarray]:
    for i in range(0, len(ids), n):
        yield ids[i : i + n]


def _events_partition(ctx: dict[str, Any], batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        for ids in _chunks(batch["id"].to_numpy(), USERS_PER_CHUNK):
            rows = _Rows()
            for uidx in ids:
                _simulate_user(ctx, _user_profile(ctx, int(uidx)), rows)
            if len(rows):
                yield rows.frame()


def _users_partition(ctx: dict[str, Any], batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        for ids in _chunks(batch["id"].to_numpy(), USERS_PER_CHUNK):
            profs = [_user_profile(ctx, int(u)) for u in ids]
            yield pd.DataFrame(
                {
                    S.USER_ID: pd.Series([p["user_id"] for p in profs], dtype="object"),
                    S.GENDER: pd.Series([p["gender"] for p in profs], dtype="object"),
                    S.AGE: pd.Series([p["age"] for p in profs], dtype="float64"),
                    S.BIRTH_YEAR: pd.Series([p["birth_year"] for p in profs], dtype="object"),
                    S.COUNTRY: pd.Series([p["country"] for p in profs], dtype="object"),
                    S.LANGUAGE: pd.Series([p["language"] for p in profs], dtype="object"),
                    S.DEVICE: pd.Series([p["device"] for p in profs], dtype="object"),
                    INTEREST: [_theta_at(ctx, p, ctx["end"]).astype(np.float32) for p in profs],
                    INTEREST_START: [p["theta0"].astype(np.float32) for p in profs],
                }
            )


def _videos_partition(ctx: dict[str, Any], batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    vw, cw = ctx["video_w"], ctx["channel_w"]
    for batch in batches:
        i = batch["id"].to_numpy()
        yield pd.DataFrame(
            {
                S.VIDEO_ID: [f"v{k:0{vw}d}" for k in i],
                S.UPLOAD_TS: ctx["upload"][i],
                S.DURATION_SECONDS: ctx["duration"][i],
                S.LANGUAGE: [LANGUAGES[k] for k in ctx["lang"][i]],
                S.CHANNEL_ID: [f"c{k:0{cw}d}" for k in ctx["chan"][i]],
                S.CATEGORY: [ctx["cat_names"][k] for k in ctx["cat"][i]],
                S.TITLE: [ctx["titles"][k] for k in i],
                "topic_" + S.CATEGORY: ctx["cat"][i].astype(np.int32),
                "topic_" + QUALITY: ctx["quality"][i],
                "topic_" + POPULARITY: ctx["pop"][i],
                "topic_" + SERIES_ID: pd.array(np.where(ctx["series"][i] >= 0, ctx["series"][i], None), dtype="Int32"),
                "topic_" + EPISODE: pd.array(np.where(ctx["episode"][i] > 0, ctx["episode"][i], None), dtype="Int32"),
                "topic_" + UP_NEXT: [f"v{k:0{vw}d}" if k >= 0 else None for k in ctx["up_next"][i]],
            }
        )


# ------------------------------------------------------------------ Spark entry point
TRUTH_CONFIG = "_truth/generate_config.json"  # under the output: the GenerateConfig the world was built from


def truth_config(spark: SparkSession, events_path: str) -> GenerateConfig | None:
    """The GenerateConfig of the world whose events table is ``events_path`` (``<out>/events``), read from
    ``<out>/_truth/generate_config.json``; None for any other input (real logs, MovieLens)."""
    root = events_path.rstrip("/")
    if not root.endswith("/events") and root != "events":
        return None
    path = f"{root[:-len('events')].rstrip('/') or '.'}/{TRUTH_CONFIG}"
    if not storage.exists(spark, path):
        return None
    fields = {f.name for f in dataclasses.fields(GenerateConfig)}
    return GenerateConfig(**{k: v for k, v in storage.read_json(spark, path).items() if k in fields})


def _write(spark: SparkSession, df: DataFrame, path: str) -> None:
    t = time.time()
    with storage.atomic_dir(spark, path) as tmp:
        df.write.mode("overwrite").parquet(tmp)
    log.info("generate: wrote %s in %.1fs", path, time.time() - t)


def generate(spark: SparkSession, cfg: GenerateConfig, out_dir: str) -> dict[str, int]:
    """Write the synthetic platform under ``out_dir``; return row counts per table and event type."""
    t0 = time.time()
    out = out_dir.rstrip("/")
    cat = build_catalog(cfg)
    ctx = _context(cfg, cat)
    bc = spark.sparkContext.broadcast(ctx)

    # Videos are built on the driver but written through executors (Arrow, any size).
    vids = spark.range(0, len(cat["upload"]), numPartitions=max(1, min(cfg.partitions, cfg.videos // 20_000 + 1)))

    def videos_fn(batches):
        return _videos_partition(bc.value, batches)

    videos_all = vids.mapInPandas(videos_fn, _VIDEOS_WITH_TRUTH)
    _write(spark, videos_all.select(*S.VIDEOS_COLUMNS), f"{out}/videos")
    topic = videos_all.select(S.VIDEO_ID, *[F.col("topic_" + f).alias(f) for f in VIDEO_TOPIC_SCHEMA.fieldNames()[1:]])
    _write(spark, topic, f"{out}/_truth/video_topic")

    ids = spark.range(0, cfg.users, numPartitions=max(1, cfg.partitions))

    def users_fn(batches):
        return _users_partition(bc.value, batches)

    def events_fn(batches):
        return _events_partition(bc.value, batches)

    # Profiles are simulated once and feed two tables (users, truth).
    users_all = ids.mapInPandas(users_fn, _USERS_WITH_TRUTH).persist(StorageLevel.MEMORY_AND_DISK)
    _write(spark, users_all.select(*S.USERS_COLUMNS), f"{out}/users")
    _write(spark, users_all.select(S.USER_ID, INTEREST, INTEREST_START), f"{out}/_truth/user_interest")
    users_all.unpersist()
    _write(spark, ids.mapInPandas(events_fn, EVENTS_SCHEMA), f"{out}/events")
    bc.unpersist()
    # the world is a function of its config: evaluation rebuilds the truth from it (true_engagement)
    storage.write_json(spark, f"{out}/{TRUTH_CONFIG}", dataclasses.asdict(cfg))
    log.info("generate: %d users, %d videos in %.1fs", cfg.users, cfg.videos, time.time() - t0)

    # Event counts from what was written (users and videos are one row per id by construction).
    by_type = {
        r[S.EVENT_TYPE]: r["count"]
        for r in spark.read.parquet(f"{out}/events").groupBy(S.EVENT_TYPE).count().collect()
    }
    counts = {"users": int(cfg.users), "videos": int(cfg.videos), "events": int(sum(by_type.values()))}
    for et in S.EVENT_TYPES:
        counts[et] = int(by_type.get(et, 0))
    return counts
