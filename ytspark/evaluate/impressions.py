"""Held-out impressions: every system's scores judged by the ranking stage's own metrics, beside the hit rates.

For a target split, a user's *held-out impressions* are the impressions logged on the target's UTC day,
from its start (the cut-off of the nightly table served that day, the one "candidate + ranking" reads its
impression features at) to its end, of catalogue videos (OOV left out), without the clicked impressions of
videos the user watched before the target: those watches are in every system's fit data, so their label
is known. What is left are the slates around the target: the target's own clicked impression, the
unclicked videos shown beside it, and any later slate of that day.

Each system scores these (user, video) pairs with the scores that order its own lists (popularity: the
fit watch count; ALS: u·v; the candidate model: its fused retrieval logit; candidate + ranking: its serving
order key), and :func:`ytspark.models.rank_metrics.impression_metrics` gives the weighted per-user loss,
the within-user AUC and the watch-time-weighted NDCG. Logs without impressions (MovieLens) have none:
:func:`load_held_out` returns None and the table says n/a.

:func:`video_channels` gives the channel of each video index for the lists' channel concentration
(:func:`ytspark.evaluate.metrics.top_channel_share`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ytspark import schema as S
from ytspark.evaluate.protocol import EvalSet, load_video_vocab
from ytspark.schema import DAY, N_SPECIAL


@dataclass(frozen=True)
class HeldOut:
    """Held-out impressions of one split, sorted by evaluation row (``EvalSet`` user order), then time.

    Attributes: ``rows`` int64 [N] (row of ``evalset``), ``video`` int64 [N] (video index >= 2),
    ``clicked`` int64 [N] 0/1, ``watch_seconds`` float64 [N] (0 when not clicked).
    """

    rows: np.ndarray
    video: np.ndarray
    clicked: np.ndarray
    watch_seconds: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def matrix(self, n_users: int) -> tuple[np.ndarray, np.ndarray]:
        """(int64 [n_users, M] the videos of each user's impressions, pad 0 after them; int64 [N] the flat
        position of impression i in that matrix), M = the most impressions of one user (at least 1)."""
        counts = np.bincount(self.rows, minlength=n_users)
        start = np.zeros(n_users + 1, np.int64)
        np.cumsum(counts, out=start[1:])
        col = np.arange(len(self.rows)) - start[self.rows]
        m = max(int(counts.max()) if len(counts) else 0, 1)
        out = np.zeros((n_users, m), np.int64)
        out[self.rows, col] = self.video
        return out, self.rows * m + col

    def scores(self, score_block: Callable[[int, int], np.ndarray], n_users: int, chunk: int = 1024) -> np.ndarray:
        """float64 [N]: each impression's entry of ``score_block(a, b)`` ([b - a, n_items] scores of users
        a..b, the block :func:`ytspark.evaluate.retrieval.topk_excluding` takes)."""
        out = np.zeros(len(self.rows), np.float64)
        bounds = np.searchsorted(self.rows, np.arange(0, n_users + chunk, chunk))
        for i, a in enumerate(range(0, n_users, chunk)):
            lo, hi = bounds[i], bounds[i + 1]
            if lo == hi:
                continue
            block = np.asarray(score_block(a, min(a + chunk, n_users)), np.float64)
            out[lo:hi] = block[self.rows[lo:hi] - a, self.video[lo:hi]]
        return out


def load_held_out(spark: SparkSession, prepared_dir: str, evalset: EvalSet) -> HeldOut | None:
    """The held-out impressions of ``evalset`` (module docstring); None when the events hold no impression."""
    from ytspark.rows import read_split
    from ytspark.vocab import apply_vocab

    ts = read_split(f"{prepared_dir.rstrip('/')}/candidates/{evalset.split}", [S.USER_ID, S.CAND_LABEL_TS])
    target = evalset.align(ts[S.USER_ID], np.asarray(ts[S.CAND_LABEL_TS], np.float64))
    day = np.floor(target / DAY) * DAY
    cut = spark.createDataFrame([(str(u), i, float(d)) for i, (u, d) in enumerate(zip(evalset.user_ids, day))],
                                T.StructType([T.StructField(S.USER_ID, T.StringType()),
                                              T.StructField("row", T.LongType()),
                                              T.StructField("day", T.DoubleType())]))
    ev = spark.read.parquet(f"{prepared_dir}/events").where(F.col(S.EVENT_TYPE) == "impression")
    ev = ev.join(F.broadcast(cut), S.USER_ID).where(
        (F.col(S.EVENT_TS) >= F.col("day")) & (F.col(S.EVENT_TS) < F.col("day") + DAY))
    ev = apply_vocab(ev, load_video_vocab(spark, prepared_dir), S.VIDEO_ID, S.VIDEO_IDX) \
        .where(F.col(S.VIDEO_IDX) >= N_SPECIAL)
    t = ev.select("row", S.VIDEO_IDX, F.col(S.EVENT_TS).cast("double").alias("ts"),
                  F.coalesce(F.col(S.CLICKED).cast("long"), F.lit(0)).alias(S.CLICKED),
                  F.coalesce(F.col(S.WATCH_SECONDS).cast("double"), F.lit(0.0)).alias(S.WATCH_SECONDS)).toPandas()
    if t.empty:
        return None
    t = t.sort_values(["row", "ts", S.VIDEO_IDX], kind="stable")
    rows, video = t["row"].to_numpy(np.int64), t[S.VIDEO_IDX].to_numpy(np.int64)
    clicked = (t[S.CLICKED].to_numpy(np.int64) > 0).astype(np.int64)
    seen_rows = np.repeat(np.arange(len(evalset)), np.diff(evalset.seen_indptr))
    seen = np.isin(rows * evalset.n_items + video, seen_rows * evalset.n_items + evalset.seen_indices)
    keep = ~(seen & (clicked == 1))  # a clicked impression of a video watched before the target: label known
    ws = np.where(clicked == 1, t[S.WATCH_SECONDS].to_numpy(np.float64), 0.0)
    return HeldOut(rows[keep], video[keep], clicked[keep], ws[keep])


def video_channels(spark: SparkSession, prepared_dir: str, n_items: int) -> np.ndarray:
    """int64 [n_items]: a code of each video index's channel (the prepared videos table), -1 unknown."""
    from ytspark.vocab import apply_vocab

    out = np.full(n_items, -1, np.int64)
    videos = spark.read.parquet(f"{prepared_dir}/videos")
    if S.CHANNEL_ID not in videos.columns:
        return out
    v = apply_vocab(videos.select(S.VIDEO_ID, S.CHANNEL_ID), load_video_vocab(spark, prepared_dir),
                    S.VIDEO_ID, S.VIDEO_IDX).where(F.col(S.VIDEO_IDX) >= N_SPECIAL) \
        .where(F.col(S.CHANNEL_ID).isNotNull()).toPandas()
    if len(v):
        import pandas as pd

        codes, _ = pd.factorize(v[S.CHANNEL_ID])
        out[v[S.VIDEO_IDX].to_numpy(np.int64)] = codes
    return out
