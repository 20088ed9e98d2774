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
from pyspark.sql import DataFrame
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


def popular_lists(watches: DataFrame, n_videos: int, per_group: int) -> PopularLists:
    """Watcher counts -> :class:`PopularLists`, in one Spark aggregation.

    ``watches``: watch events (``user_id``, ``video_idx``, the user's ``country_idx`` and ``age_bucket_idx``);
    ``n_videos``: the model's video vocabulary size (ids 2..n_videos-1 form the catalogue); ``per_group``:
    how many videos to keep per (country, age bucket). Distinct watchers are counted per (country, age
    bucket, video); a user belongs to one group, so a video's global count is the sum over the groups.
    """
    ok = (F.col(S.VIDEO_IDX) >= 2) & (F.col(S.VIDEO_IDX) < n_videos)
    pdf = watches.where(ok).groupBy(COUNTRY, AGE_BUCKET, S.VIDEO_IDX) \
        .agg(F.countDistinct(S.USER_ID).alias("n")).toPandas()
    country, age, vid = (pdf[c].to_numpy(np.int64) for c in (COUNTRY, AGE_BUCKET, S.VIDEO_IDX))
    n = pdf["n"].to_numpy(np.float64)
    all_ids = np.arange(2, n_videos, dtype=np.int64)
    counts = np.bincount(vid - 2, weights=n, minlength=len(all_ids)).astype(np.float32) if len(vid) else \
        np.zeros(len(all_ids), np.float32)
    order = np.lexsort((all_ids, -counts))  # by count desc, then id asc
    groups = {}
    known = country >= 2
    country, age, vid, n = country[known], age[known], vid[known], n[known]
    o = np.lexsort((vid, -n, age, country))  # per group: count desc, then id asc
    country, age, vid, n = country[o], age[o], vid[o], n[o]
    starts = np.flatnonzero(np.r_[True, (country[1:] != country[:-1]) | (age[1:] != age[:-1])]) if len(o) else []
    for a, b in zip(starts, [*starts[1:], len(o)]):
        b = min(b, a + per_group)
        groups[(int(country[a]), int(age[a]))] = (vid[a:b].copy(), n[a:b].astype(np.float32))
    return PopularLists(global_ids=all_ids[order], global_counts=counts[order], groups=groups)
