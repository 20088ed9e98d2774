"""Run per-user code over a Spark DataFrame sorted by user, with little per-group overhead.

Both entry points hash-partition rows by ``user_id``, sort them by (user_id,
order columns) and stream Arrow batches to Python, carrying a user whose rows
straddle two batches over to the next one (``groupBy().applyInPandas``
without its per-group cost, which dominates when users have few events each):

* :func:`map_user_batches` (what ``prepare`` runs): ``fn(table)`` gets an
  Arrow table of many *whole* users at once and returns an Arrow record batch
  (``mapInArrow``, no pandas);
* :func:`map_users`: ``fn(frame)`` gets one pandas frame per user (the
  per-user reference path, kept for tests and small custom steps).
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from ytspark import schema as S
from ytspark.features.segments import string_change_mask

UserFn = Callable[[pd.DataFrame], pd.DataFrame | None]
BatchFn = Callable[[pa.Table], pa.RecordBatch]
MIN_BATCH_ROWS = 32_768  # events handed to a BatchFn at once (more if one user has more)


def iter_users(frames: Iterator[pd.DataFrame], key: str = S.USER_ID) -> Iterator[pd.DataFrame]:
    """Yield one sorted frame per user from a stream of frames sorted by ``key``."""
    carry: pd.DataFrame | None = None
    for frame in frames:
        if frame.empty:
            continue
        if carry is not None:
            frame = pd.concat([carry, frame], ignore_index=True)
        keys = frame[key].to_numpy()
        # Boundaries where the key changes; the last user may continue in the next batch.
        starts = [0] + (np.flatnonzero(keys[1:] != keys[:-1]) + 1).tolist()
        for a, b in zip(starts[:-1], starts[1:]):
            yield frame.iloc[a:b]
        carry = frame.iloc[starts[-1]:].reset_index(drop=True)
    if carry is not None and not carry.empty:
        yield carry


def map_users(
    df: DataFrame,
    fn: UserFn,
    schema: T.StructType,
    order: Sequence[str],
    num_partitions: int | None = None,
) -> DataFrame:
    """Apply ``fn`` to every user's rows (sorted by ``order``) and union the frames it returns."""
    n = num_partitions or int(df.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    names = [f.name for f in schema.fields]

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        out: list[pd.DataFrame] = []
        size = 0
        for user in iter_users(frames):
            res = fn(user)
            if res is not None and len(res):
                out.append(res)
                size += len(res)
            if size >= 8192:
                yield pd.concat(out, ignore_index=True)[names]
                out, size = [], 0
        if out:
            yield pd.concat(out, ignore_index=True)[names]

    sorted_df = df.repartition(n, S.USER_ID).sortWithinPartitions(S.USER_ID, *order)
    return sorted_df.mapInPandas(run, schema)


def iter_user_tables(batches: Iterator[pa.RecordBatch], min_rows: int = MIN_BATCH_ROWS,
                     key: str = S.USER_ID) -> Iterator[pa.Table]:
    """Regroup record batches sorted by ``key`` into tables of whole users, ``min_rows`` or more each
    (the last one aside).

    The rows of the last user seen are held back until a later batch starts
    another user (or the stream ends), so no user is ever split.
    """
    pending: list[pa.RecordBatch] = []
    size = 0
    boundary = 0  # rows in ``pending`` before the first row of the last user seen
    last = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        ids = batch.column(key)
        starts = string_change_mask(ids)
        starts[0] = last is None or ids[0].as_py() != last
        new = np.flatnonzero(starts)
        if len(new):
            boundary = size + int(new[-1])
        last = ids[batch.num_rows - 1].as_py()
        pending.append(batch)
        size += batch.num_rows
        if boundary >= min_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, boundary)
            rest = table.slice(boundary)
            pending, size, boundary = rest.to_batches(), rest.num_rows, 0
    if size:
        yield pa.Table.from_batches(pending)


def map_user_batches(
    df: DataFrame,
    fn: BatchFn,
    schema: T.StructType,
    order: Sequence[str],
    num_partitions: int | None = None,
    min_rows: int = MIN_BATCH_ROWS,
) -> DataFrame:
    """Apply ``fn`` to Arrow tables of whole users (sorted by user, then ``order``); union its batches."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for table in iter_user_tables(batches, min_rows):
            out = fn(table)
            if out.num_rows:
                yield out

    return sort_by_user(df, order, num_partitions).mapInArrow(run, schema)


def sort_by_user(df: DataFrame, order: Sequence[str], num_partitions: int | None = None) -> DataFrame:
    """``df`` hash-partitioned by ``user_id`` and sorted by (user_id, ``order``) within each partition: what
    :func:`iter_user_tables` reads (a partition-level ``mapInArrow`` function can call it itself)."""
    n = num_partitions or int(df.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    return df.repartition(n, S.USER_ID).sortWithinPartitions(S.USER_ID, *order)
