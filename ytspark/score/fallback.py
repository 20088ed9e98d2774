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


SOURCE_DEMOGRAPHIC = "demographic"
SOURCE_POPULAR = "popular"
COUNTRY, AGE_BUCKET = "country_idx", "age_bucket_idx"


@dataclass
class PopularLists:
    """Global ranking of every catalogue id (2..V-1) and the top of each (country, age bucket) group."""

    global_ids: np.ndarray  # int64 [V-2], most popular first
    global_counts: np.ndarray  # float32 [V-2]
    groups: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    removed: dict = field(default_factory=dict)  # serving-rule removals of the lists given so far
    struck: dict = field(default_factory=dict)

    def recommend(self, country: int, age_bucket: int, seen: np.ndarray, n: int, rules=None):
        """(ids int64 [<=n], scores float32, sources list[str]) for one user; ``seen`` sorted or not.

        ``rules``: a :class:`ytspark.score.rules.ServingRules` the list goes through (the first ``n``
        allowed videos); the removals it reports are added to ``self.removed`` / ``self.struck``.
        """
        group = self.groups.get((country, age_bucket)) if country >= 2 else None
        seen = np.asarray(seen, np.int64)
        # enough of the global list to fill n past the seen and the group's own videos (more with rules)
        need = n + len(seen) + (len(group[0]) if group is not None else 0)
        for depth in ((need, len(self.global_ids)) if rules is None else (4 * need + 1000, len(self.global_ids))):
            parts = [(*group, SOURCE_DEMOGRAPHIC)] if group is not None else []
            parts.append((self.global_ids[:depth], self.global_counts[:depth], SOURCE_POPULAR))
            ids = np.concatenate([p[0] for p in parts]).astype(np.int64)
            scores = np.concatenate([p[1] for p in parts]).astype(np.float32)
            sources = np.concatenate([np.full(len(p[0]), p[2], dtype=object) for p in parts])
            _, first = np.unique(ids, return_index=True)  # a video once, where it first appears
            keep = np.zeros(len(ids), bool)
            keep[first] = True
            keep &= ~np.isin(ids, seen)
            ids, scores, sources = ids[keep], scores[keep], sources[keep]
            if rules is None:
                take = np.arange(min(n, len(ids)))
                ok = None
            else:
                ok, removed, struck = rules.apply(ids[None, :], np.array([country]), n)
                take = np.flatnonzero(ok[0])
            if len(take) >= n or depth >= len(self.global_ids):
                break
        if ok is not None:
            self.removed = {k: self.removed.get(k, 0) + v for k, v in removed.items()}
            self.struck = {k: self.struck.get(k, 0) + v for k, v in struck.items()}
        return ids[take], scores[take], list(sources[take])


AGE_SLOTS = 16  # group key = country_idx * AGE_SLOTS + age_bucket_idx (age buckets: OOV 1, then 2..)


def group_keys(country: np.ndarray, age_bucket: np.ndarray) -> np.ndarray:
    """int64 (country, age bucket) group of each user."""
    return np.asarray(country, np.int64) * AGE_SLOTS + np.asarray(age_bucket, np.int64)


def watcher_counts(group: np.ndarray, seen: tuple[np.ndarray, np.ndarray], n_videos: int):
    """(keys, counts) of distinct watchers per (group, video): ``group`` [U] of :func:`group_keys`, ``seen``
    the users' distinct watched videos (offsets [U + 1], idx); keys = group * n_videos + video, unique."""
    off, vals = seen
    vals = np.asarray(vals, np.int64)
    ok = (vals >= 2) & (vals < n_videos)
    keys = (np.repeat(np.asarray(group, np.int64), np.diff(off)) * n_videos + vals)[ok]
    uniq, counts = np.unique(keys, return_counts=True)
    return uniq, counts.astype(np.int64)


def popular_lists(keys: np.ndarray, counts: np.ndarray, n_videos: int, per_group: int) -> PopularLists:
    """Watcher counts -> :class:`PopularLists`.

    ``keys``/``counts``: distinct watchers per (group, video) as :func:`watcher_counts` gives them (keys may
    repeat across batches: they are summed); ``n_videos``: the model's video vocabulary size (ids
    2..n_videos-1 form the catalogue); ``per_group``: how many videos to keep per (country, age bucket). A
    user belongs to one group, so a video's global count is the sum over the groups.
    """
    keys, inv = np.unique(np.asarray(keys, np.int64), return_inverse=True)
    n = np.bincount(inv, weights=np.asarray(counts, np.float64), minlength=len(keys))
    group, vid = keys // n_videos, keys % n_videos
    all_ids = np.arange(2, n_videos, dtype=np.int64)
    glob = np.bincount(vid - 2, weights=n, minlength=len(all_ids)).astype(np.float32) if len(vid) else \
        np.zeros(len(all_ids), np.float32)
    order = np.lexsort((all_ids, -glob))  # by count desc, then id asc
    country, age = group // AGE_SLOTS, group % AGE_SLOTS
    known = country >= 2
    country, age, vid, n = country[known], age[known], vid[known], n[known]
    o = np.lexsort((vid, -n, age, country))  # per group: count desc, then id asc
    country, age, vid, n = country[o], age[o], vid[o], n[o]
    groups = {}
    if len(o):
        starts = np.flatnonzero(np.r_[True, (country[1:] != country[:-1]) | (age[1:] != age[:-1])])
        for a, b in zip(starts, [*starts[1:], len(o)]):
            b = min(b, a + per_group)
            groups[(int(country[a]), int(age[a]))] = (vid[a:b].copy(), n[a:b].astype(np.float32))
    return PopularLists(global_ids=all_ids[order], global_counts=glob[order], groups=groups)
