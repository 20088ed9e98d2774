"""Fallback lists for users with no usable history: popular among similar users, else globally.

Popularity of a video = number of distinct users who watched it before the
cut-off. A cold user gets the most
popular videos among users of the same (country, age bucket) first
(``source="demographic"``); when that group's list runs out (or the country is
unknown) the list is filled from the whole catalogue by global popularity,
ties by vocabulary index (``source="popular"``). Already-watched videos are
skipped in both. ``score`` and ``retrieval_score`` of a fallback row are the
video's watcher count in the list it came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from ytspark import schema as S

SOURCE_DEMOGRAPHIC = "demographic"
SOURCE_POPULAR = "popular"
COUNTRY, AGE_BUCKET = "country_idx", "age_bucket_idx"


@dataclass
class PopularLists:
    """Global ranking of every catalogue id (2..V-1) and the top of each (country, age bucket) group."""

    global_ids: np.ndarray  # int64 [V-2], most popular first
    global_counts: np.ndarray  # float32 [V-2]
    groups: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def recommend(self, country: int, age_bucket: int, seen: np.ndarray, n: int):
        """(ids int64 [<=n], scores float32, sources list[str]) for one user; ``seen`` sorted or not."""
        seen_set = set(int(x) for x in seen)
        ids: list[int] = []
        scores: list[float] = []
        sources: list[str] = []
        taken: set[int] = set()
        lists = []
        if country >= 2 and (country, age_bucket) in self.groups:
            lists.append((*self.groups[(country, age_bucket)], SOURCE_DEMOGRAPHIC))
        lists.append((self.global_ids, self.global_counts, SOURCE_POPULAR))
        for vids, counts, source in lists:
            for v, c in zip(vids.tolist(), counts.tolist()):
                if len(ids) >= n:
                    break
                if v in seen_set or v in taken:
                    continue
                ids.append(v)
                scores.append(c)
                sources.append(source)
                taken.add(v)
        return np.asarray(ids, np.int64), np.asarray(scores, np.float32), sources


def popular_lists(watched: DataFrame, n_videos: int, per_group: int) -> PopularLists:
    """Watcher counts -> :class:`PopularLists`.

    ``watched``: one row per distinct (user, watched video idx >= 2) with the user's ``country_idx`` and
    ``age_bucket_idx``; ``n_videos``: the model's video vocabulary size (ids 2..n_videos-1 form the
    catalogue); ``per_group``: how many videos to keep per (country, age bucket).
    """
    watched = watched.select(COUNTRY, AGE_BUCKET, S.VIDEO_IDX).where(F.col(S.VIDEO_IDX) < n_videos)
    glob = {r[S.VIDEO_IDX]: r["n"] for r in watched.groupBy(S.VIDEO_IDX).agg(F.count(F.lit(1)).alias("n")).collect()}
    all_ids = np.arange(2, n_videos, dtype=np.int64)
    counts = np.array([glob.get(int(i), 0) for i in all_ids], dtype=np.float32)
    order = np.lexsort((all_ids, -counts))  # by count desc, then id asc
    by_group = watched.where(F.col(COUNTRY) >= 2).groupBy(COUNTRY, AGE_BUCKET, S.VIDEO_IDX) \
        .agg(F.count(F.lit(1)).alias("n"))
    w = Window.partitionBy(COUNTRY, AGE_BUCKET).orderBy(F.col("n").desc(), F.col(S.VIDEO_IDX).asc())
    top = by_group.withColumn("r", F.row_number().over(w)).where(F.col("r") <= per_group).collect()
    groups: dict[tuple[int, int], list] = {}
    for r in sorted(top, key=lambda r: (r[COUNTRY], r[AGE_BUCKET], r["r"])):
        groups.setdefault((r[COUNTRY], r[AGE_BUCKET]), []).append((r[S.VIDEO_IDX], r["n"]))
    return PopularLists(
        global_ids=all_ids[order], global_counts=counts[order],
        groups={k: (np.array([v for v, _ in lst], np.int64), np.array([c for _, c in lst], np.float32))
                for k, lst in groups.items()},
    )
