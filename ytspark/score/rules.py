"""Serving rules: what may be recommended, applied after ranking and before the top N is cut.

All are optional (``[score]`` in the config, off by default):

``score.exclude``
    A table of video ids that are never recommended: a path or URL (Parquet, CSV
    with a header or JSON Lines, detected from the file names) or the name of a
    Spark catalog table. Column ``video_id`` (required) and optionally
    ``country``: a row with a country keeps the video out of the lists of users
    of that country only, a row without one (null or empty) out of everyone's.
    Countries are matched through the candidate model's country vocabulary; a
    country outside it matches every user whose country is outside it (their
    country is encoded OOV too), so an exclusion never leaks through a rare
    country. Rows without a ``video_id`` are counted and skipped.
``score.max_per_channel``
    At most this many videos of one channel in a user's top N (0 = no cap); the
    list is filled from the next candidates. Videos without a channel are not
    capped.
``score.min_video_age_s`` / ``score.max_video_age_days``
    Videos uploaded less than ``min_video_age_s`` before the end of the run date
    (e.g. still in moderation), or more than ``max_video_age_days`` days before
    it, are left out (0 = off). Videos with no upload time are kept.

The rules look at the candidates in their final order (ranker order, or
retrieval order without a ranker) and keep the first N that pass, so every user
still gets N videos whenever the K candidates hold enough allowed ones. A
candidate is charged to the first rule that strikes it, in the order
:data:`RULES`; the channel cap counts only videos that passed the other rules.
:meth:`ServingRules.apply` reports, per rule, ``removed``: the struck
candidates ranked above the user's last kept video (what would otherwise have
been in the list), and ``candidates``: all struck candidates of the K.
The popular lists of cold users go through the same rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from ytspark import schema as S
from ytspark.config import TABLE_NAME, ScoreConfig
from ytspark.schema import DAY

log = logging.getLogger(__name__)

RULES = ("excluded", "video_age", "channel_cap")
EXCLUDE_COUNTRY = "country"


def rules_configured(sc: ScoreConfig) -> bool:
    return bool(sc.exclude) or sc.max_per_channel > 0 or sc.min_video_age_s > 0 or sc.max_video_age_days > 0


@dataclass
class ServingRules:
    """The rules of one run, as arrays over the video vocabulary (idx 0..V-1; 0 and 1 never recommended)."""

    n_videos: int
    blocked: np.ndarray  # bool [V]: excluded for everyone
    too_old_or_young: np.ndarray  # bool [V]: outside [min_video_age_s, max_video_age_days]
    country_keys: np.ndarray  # sorted int64 country_idx * V + video_idx: excluded for one country
    channel: np.ndarray | None = None  # int64 [V]: channel group (>= 0), -1 none; None = no cap
    max_per_channel: int = 0
    info: dict = field(default_factory=dict)  # what was loaded (the manifest's "rules")

    def apply(self, cand: np.ndarray, country: np.ndarray, n: int) -> tuple[np.ndarray, dict, dict]:
        """``cand`` int64 [B, K] video idx in final order (< 2 = empty slot), ``country`` [B] country idx ->
        (keep bool [B, K]: the first ``n`` allowed of each row, removed {rule: int}, candidates {rule: int})."""
        cand = np.asarray(cand, np.int64)
        B, K = cand.shape
        valid = cand >= 2
        c = np.where(valid, cand, 0)
        excluded = self.blocked[c]
        if len(self.country_keys):
            keys = np.asarray(country, np.int64)[:, None] * self.n_videos + c
            pos = np.minimum(np.searchsorted(self.country_keys, keys), len(self.country_keys) - 1)
            excluded |= self.country_keys[pos] == keys
        excluded &= valid
        aged = self.too_old_or_young[c] & valid & ~excluded
        passed = valid & ~excluded & ~aged
        capped = np.zeros_like(passed)
        if self.channel is not None and self.max_per_channel > 0 and passed.any():
            ch = self.channel[c]
            r, k = np.nonzero(passed & (ch >= 0))
            if len(r):
                # occurrence number of each (row, channel) among the passed candidates, in list order
                key = r * (int(self.channel.max()) + 1) + ch[r, k]
                o = np.lexsort((k, key))
                ks = key[o]
                start = np.r_[0, np.flatnonzero(ks[1:] != ks[:-1]) + 1]
                occ = np.arange(len(ks)) - np.repeat(start, np.diff(np.r_[start, len(ks)]))
                over = np.zeros(len(ks), bool)
                over[o] = occ >= self.max_per_channel
                capped[r[over], k[over]] = True
        allowed = passed & ~capped
        keep = allowed & (np.cumsum(allowed, axis=1) <= n)
        # the part of each row the list was filled from: up to its n-th kept video (all of it when short)
        n_kept = keep.sum(axis=1)
        last = np.where(n_kept >= n, K - 1 - np.argmax(keep[:, ::-1], axis=1), K - 1)
        head = np.arange(K)[None, :] <= last[:, None]
        struck = {"excluded": excluded, "video_age": aged, "channel_cap": capped}
        removed = {name: int((m & head).sum()) for name, m in struck.items()}
        candidates = {name: int(m.sum()) for name, m in struck.items()}
        return keep, removed, candidates


def _video_arrays(videos: pa.Table, video_idx: np.ndarray, V: int, sc: ScoreConfig, as_of: float):
    """(too_old_or_young bool [V], channel group int64 [V] or None) from the prepared videos table."""
    ok = video_idx >= 2
    bad_age = np.zeros(V, bool)
    if sc.min_video_age_s > 0 or sc.max_video_age_days > 0:
        up = np.full(V, np.nan)
        up[video_idx[ok]] = pc.cast(videos.column(S.UPLOAD_TS), pa.float64()).to_numpy(zero_copy_only=False)[ok]
        age = as_of - up
        known = np.isfinite(age)
        if sc.min_video_age_s > 0:
            bad_age |= known & (age < sc.min_video_age_s)
        if sc.max_video_age_days > 0:
            bad_age |= known & (age > sc.max_video_age_days * DAY)
    channel = None
    if sc.max_per_channel > 0:
        raw = pc.cast(videos.column(S.CHANNEL_ID), pa.string())
        raw = pc.if_else(pc.equal(pc.utf8_trim_whitespace(raw), ""), None, raw)
        codes = pc.dictionary_encode(raw).combine_chunks().indices
        channel = np.full(V, -1, np.int64)
        channel[video_idx[ok]] = pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64)[ok]
    return bad_age, channel


def read_exclusions(spark: SparkSession, source: str):
    """The exclusion table as a Spark DataFrame of (video_id string, country string or null)."""
    from ytspark.sources import InputError, detect_format, error_line, _spark_errors

    if TABLE_NAME.fullmatch(source) and spark.catalog.tableExists(source):
        df = spark.table(source)
    else:
        fmt = detect_format(spark, source, "auto")
        try:
            reader = spark.read.option("header", True) if fmt == "csv" else spark.read
            df = {"parquet": reader.parquet, "csv": reader.csv, "jsonl": reader.json}[fmt](source)
        except _spark_errors() as e:
            raise InputError(f"score.exclude: cannot read '{source}' as {fmt}: {error_line(e)}; give a Parquet, "
                             "CSV (with a header) or JSON Lines table, or a catalog table name") from None
    if S.VIDEO_ID not in df.columns:
        raise InputError(f"score.exclude table '{source}' has no column 'video_id' (columns: {df.columns}); it "
                         "needs video_id and, optionally, country (empty = every country)")
    country = F.col(EXCLUDE_COUNTRY).cast("string") if EXCLUDE_COUNTRY in df.columns else F.lit(None).cast("string")
    return df.select(F.col(S.VIDEO_ID).cast("string").alias(S.VIDEO_ID), country.alias(EXCLUDE_COUNTRY))


def build_rules(spark: SparkSession, sc: ScoreConfig, videos: pa.Table | None, vocabs: dict, as_of: float
                ) -> ServingRules | None:
    """The run's :class:`ServingRules`, or None when no rule is configured. ``videos``: the prepared videos
    table (``video_id``, ``channel_id``, ``upload_ts``); ``vocabs``: the candidate model's (video, country)."""
    from ytspark.features.events import vocab_ids

    if not rules_configured(sc):
        return None
    V = len(vocabs["video"])
    video_values = pa.array(vocabs["video"].values, pa.string())
    info: dict = {"max_per_channel": sc.max_per_channel, "min_video_age_s": sc.min_video_age_s,
                  "max_video_age_days": sc.max_video_age_days}
    if videos is not None and videos.num_rows:
        vidx = vocab_ids(videos.column(S.VIDEO_ID), video_values).astype(np.int64)
        bad_age, channel = _video_arrays(videos, vidx, V, sc, as_of)
    else:
        bad_age, channel = np.zeros(V, bool), (np.full(V, -1, np.int64) if sc.max_per_channel > 0 else None)
    info["videos_outside_age"] = int(bad_age[2:].sum())
    blocked = np.zeros(V, bool)
    country_keys = np.zeros(0, np.int64)
    if sc.exclude:
        t = read_exclusions(spark, sc.exclude).toPandas()
        vid = t[S.VIDEO_ID].astype(object).where(t[S.VIDEO_ID].notna(), None)
        ctry = t[EXCLUDE_COUNTRY].astype(object).where(t[EXCLUDE_COUNTRY].notna(), None)
        ctry = ctry.map(lambda x: x.strip() if isinstance(x, str) and x.strip() else None)
        no_id = vid.isna() | (vid.map(lambda x: isinstance(x, str) and not x.strip()))
        idx = vocab_ids(pa.array(vid.where(~no_id, None).tolist(), pa.string()), video_values).astype(np.int64)
        known = (idx >= 2) & ~no_id.to_numpy()
        everywhere = known & ctry.isna().to_numpy()
        blocked[idx[everywhere]] = True
        per_country = known & ctry.notna().to_numpy()
        if per_country.any():
            cidx = vocab_ids(pa.array(ctry[per_country].tolist(), pa.string()),
                        pa.array(vocabs["country"].values, pa.string())).astype(np.int64)
            country_keys = np.unique(cidx * V + idx[per_country])
        info["exclude"] = {"source": sc.exclude, "rows": int(len(t)), "rows_without_video_id": int(no_id.sum()),
                           "not_in_catalogue": int((~no_id.to_numpy() & (idx < 2)).sum()),
                           "videos_everywhere": int(blocked.sum()), "country_pairs": int(len(country_keys))}
        if info["exclude"]["rows_without_video_id"]:
            log.warning("score.exclude: %d rows of %s have no video_id and were skipped",
                        info["exclude"]["rows_without_video_id"], sc.exclude)
    return ServingRules(n_videos=V, blocked=blocked, too_old_or_young=bad_age, country_keys=country_keys,
                        channel=channel, max_per_channel=sc.max_per_channel, info=info)
