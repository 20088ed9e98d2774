"""Serving inputs: every user's inputs to both networks as of a run date, from the raw prepared events.

Serving is one Spark pass (:func:`serving_events` then ``mapInArrow``): the
prepared events before the cut-off ``as_of`` (epoch seconds, exclusive;
:func:`as_of_ts` gives the end of a run date's UTC day), enriched exactly as
``prepare`` enriches them (:func:`ytspark.prepare.job.enrich_events`: vocab
ids, tokens, video metadata, demographics), plus one marker row per user of
the ``users`` table (so users without events get a fallback list), are
hash-partitioned by user and sorted as ``prepare`` sorts them; the scoring
function then reads whole users at a time and builds their columns with
:func:`serving_columns`, which is :func:`ytspark.prepare.batch_asof.inputs_at_end`:
the same code that gives the ranker's training rows their candidate inputs.
The columns mean exactly what they mean in a training row of
:func:`ytspark.prepare.candidates.user_candidate_rows` labelled at ``as_of``
(a "next watch" asked about now): the last ``history_length`` watched video
idx most recent first and their age in days before ``as_of``, the last
``history_length`` search tokens, ``n_prior_watches``,
``since_last_watch_days`` (-1 without a watch), the demographics and
``user_age``; there is no label and the example age is 0.
``tests/test_score.py`` checks them against that reference on hand-built logs.

Extra columns: ``seen`` (every distinct in-vocabulary video the user watched
before ``as_of``, sorted: excluded from recommendations) and, for the ranking
network, per channel and per category the user's watch count and days since
the last such watch (sorted by id, :class:`~ytspark.score.rank.Csr`).
"""
from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from ytspark import schema as S
from ytspark.prepare.batch_asof import inputs_at_end
from ytspark.prepare.candidates import DAY, KIND_USER, CandidateParams
from ytspark.prepare.job import _user_features, enrich_events
from ytspark.vocab import Vocab

SEEN = "seen"
AFFINITY_GROUPS = ("channel", "category")  # -> <g>_ids, <g>_watches, <g>_since_days
VOCABS_NEEDED = ("video", "token", "gender", "country", "language", "device", "channel", "category", "source")


def affinity_columns(group: str) -> tuple[str, str, str]:
    """(ids, watch counts, days since last watch) column names of a channel/category group."""
    return f"{group}_ids", f"{group}_watches", f"{group}_since_days"


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




def _days_before(as_of: float | Column, ts: Column) -> Column:
    """(as_of - ts) / DAY in double, then float32: the rounding the row builders do."""
    return ((F.lit(as_of) - ts) / F.lit(DAY)).cast("float")


SERVING_INPUT = (S.USER_ID, S.TS, "kind", S.EVENT_SEQ, S.VIDEO_IDX, "tokens", S.USER_AGE, *S.DEMOGRAPHIC_COLUMNS,
                 S.RANK_CHANNEL, S.RANK_CATEGORY)


def serving_events(spark: SparkSession, prepared_dir: str, as_of: float, vocabs: dict[str, Vocab],
                   manifest: dict) -> DataFrame:
    """The enriched prepared watches and searches strictly before ``as_of`` plus one marker row per ``users`` row
    (kind :data:`~ytspark.prepare.candidates.KIND_USER`, ts -1): the input of the serving pass, unsorted
    (:func:`ytspark.prepare.grouping.map_user_batches` partitions and sorts it by user and ``ROW_ORDER``)."""
    p = manifest["config"]["prepare"]
    tables = manifest.get("tables", {})
    ref_year = dt.datetime.fromtimestamp(as_of - 1, dt.timezone.utc).year
    # Watches and searches only: no serving feature reads impressions yet (their rows would be shuffled for
    # nothing; users known only from impressions and absent from ``users`` get no list).
    events = spark.read.parquet(f"{prepared_dir}/events") \
        .where((F.col(S.EVENT_TS) < F.lit(as_of)) & F.col(S.EVENT_TYPE).isin("watch", "search"))
    users = spark.read.parquet(f"{prepared_dir}/users")
    videos = spark.read.parquet(f"{prepared_dir}/videos")
    ev = enrich_events(events, users, videos, vocabs, float(p.get("completed_fraction", 0.5)), ref_year,
                       int(tables.get("users", {}).get("accepted", 0)),
                       int(tables.get("videos", {}).get("accepted", 0))).select(*SERVING_INPUT)
    marks = _user_features(users, vocabs, ref_year).select(
        S.USER_ID, F.lit(-1.0).alias(S.TS), F.lit(KIND_USER).alias("kind"), F.lit(0).cast("long").alias(S.EVENT_SEQ),
        F.lit(None).cast("int").alias(S.VIDEO_IDX), F.lit(None).cast("array<string>").alias("tokens"),
        F.coalesce(S.USER_AGE, F.lit(-1.0).cast("float")).alias(S.USER_AGE),
        *[F.coalesce(c, F.lit(S.OOV)).alias(c) for c in S.DEMOGRAPHIC_COLUMNS],
        F.lit(S.OOV).alias(S.RANK_CHANNEL), F.lit(S.OOV).alias(S.RANK_CATEGORY))
    return ev.unionByName(marks.select(*[marks[c].cast(ev.schema[c].dataType).alias(c) for c in SERVING_INPUT]))


def serving_columns(table: pa.Table | pa.RecordBatch, as_of: float, history_length: int, vocab_tokens: pa.Array,
                    affinity: bool = False) -> dict:
    """Columns of every user of ``table`` (whole users sorted by user and ``ROW_ORDER``) as of ``as_of``.

    Returns ``user_id`` (object [U]); ``watch_hist``, ``search_hist`` [U, H] int64; ``watch_hist_age``
    [U, H] float32; ``n_prior_watches``, ``since_last_watch_days``, ``user_age`` and the demographics [U];
    ``seen``: (offsets [U + 1], sorted video idx); with ``affinity`` "channel"/"category" ->
    :class:`~ytspark.score.rank.Csr` (ids sorted; watch counts; days since the last watch).
    """
    from ytspark.score.rank import Csr

    groups = dict(zip(AFFINITY_GROUPS, (S.RANK_CHANNEL, S.RANK_CATEGORY)))
    p = CandidateParams(history_length=int(history_length))
    cols = inputs_at_end(table, as_of, p, vocab_tokens, tuple(groups.values()) if affinity else ())
    out = {S.USER_ID: cols[S.USER_ID], SEEN: cols[SEEN]}
    for c in (S.CAND_WATCH_HIST, S.CAND_SEARCH_HIST):
        out[c] = cols[c].astype(np.int64)
    for c in (S.CAND_WATCH_AGE, S.CAND_N_WATCHES, S.CAND_SINCE_LAST, S.USER_AGE, *S.DEMOGRAPHIC_COLUMNS):
        out[c] = cols[c]
    if affinity:
        for g, col in groups.items():
            out[g] = Csr(*cols[col])
    return out


def collect_serving_columns(events: DataFrame, as_of: float, history_length: int, vocab_tokens: pa.Array,
                            affinity: bool = False) -> dict:
    """:func:`serving_columns` of every user of ``events`` (a :func:`serving_events` frame, or a subset of
    its users), built on the driver: for samples and tests, not for a whole catalogue of users."""
    from ytspark.prepare.job import ROW_ORDER

    pdf = events.toPandas().sort_values([S.USER_ID, *ROW_ORDER], kind="stable").reset_index(drop=True)
    pdf["tokens"] = [None if t is None else [str(x) for x in t] for t in pdf["tokens"]]
    table = pa.Table.from_pandas(pdf, preserve_index=False)
    return serving_columns(table, as_of, history_length, vocab_tokens, affinity)


def slice_users(cols: dict, a: int, b: int) -> dict:
    """Users ``a:b`` of :func:`serving_columns` (CSR columns re-based)."""
    from ytspark.score.rank import Csr

    out = {}
    for k, v in cols.items():
        if isinstance(v, Csr):
            lo, hi = int(v.offsets[a]), int(v.offsets[b])
            out[k] = Csr(v.offsets[a:b + 1] - lo, v.ids[lo:hi], v.counts[lo:hi], v.since[lo:hi])
        elif isinstance(v, tuple):
            off, vals = v
            lo, hi = int(off[a]), int(off[b])
            out[k] = (off[a:b + 1] - lo, vals[lo:hi])
        else:
            out[k] = v[a:b]
    return out
