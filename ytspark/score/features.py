"""Serving inputs: every user's inputs to both networks as of a run date, from the raw prepared events.

Serving is one Spark pass: :func:`serving_events` gives the prepared watches
and searches before the cut-off ``as_of`` (epoch seconds, exclusive;
:func:`as_of_ts` gives the end of a run date's UTC day) plus one marker row
per user of the ``users`` table (so users without events get a fallback
list), with no join; they are hash-partitioned by user and sorted as
``prepare`` sorts them, and the scoring function reads whole users at a time:
:class:`Encoder` gives them prepare's vocabulary ids and demographics, and
:func:`serving_columns` builds their inputs with
:func:`ytspark.features.asof.inputs_at_end`, the same code that gives the
ranker's training rows their candidate inputs.
The columns mean exactly what they mean in a training row of
``user_candidate_rows`` (``tests/reference_rows.py``) labelled at ``as_of``
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
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ytspark import schema as S
from ytspark.features.asof import inputs_at_end
from ytspark.features.events import ROW_ORDER, TOKENS, USER_VOCABS, event_seq, user_features, vocab_ids
from ytspark.features.params import CandidateParams
from ytspark.schema import KIND_IMPRESSION, KIND_SEARCH, KIND_USER, KIND_WATCH
from ytspark.vocab import Vocab, tokens_column

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


RAW_USER_COLUMNS = (S.GENDER, S.COUNTRY, S.LANGUAGE, S.DEVICE, S.AGE, S.BIRTH_YEAR)
# the marker rows' raw attributes, one struct column (null on event rows: one null field where six would
# each take a slot in every shuffled and sorted event row)
USER_STRUCT = "user"


def serving_events(spark: SparkSession, prepared_dir: str, as_of: float, impressions: bool = False) -> DataFrame:
    """The prepared watches and searches strictly before ``as_of`` plus one marker row per ``users`` row
    (kind :data:`~ytspark.schema.KIND_USER`, ts -1, the user's raw attributes): the input of the
    serving pass, unsorted and not yet encoded.

    There is no join: vocabulary ids and demographics are encoded inside the tasks (:class:`Encoder`), so
    the plan is one scan of each table and one shuffle (each broadcast join would be a Spark job of its own).
    ``impressions``: the impressions before ``as_of`` too (kind ``KIND_IMPRESSION``, with ``clicked``), for
    the ranker's impression features; a user known only from impressions then gets a (fallback) list too.
    Without them, users known only from impressions and absent from ``users`` get no list.
    """
    kinds = ("watch", "search", "impression") if impressions else ("watch", "search")
    events = spark.read.parquet(f"{prepared_dir}/events") \
        .where((F.col(S.EVENT_TS) < F.lit(as_of)) & F.col(S.EVENT_TYPE).isin(*kinds))
    users = spark.read.parquet(f"{prepared_dir}/users")
    utypes = dict(users.dtypes)
    user_type = "struct<" + ",".join(f"{c}:{utypes.get(c, 'string')}" for c in RAW_USER_COLUMNS) + ">"
    ev = events.select(
        S.USER_ID, F.col(S.EVENT_TS).cast("double").alias(S.TS),
        F.when(F.col(S.EVENT_TYPE) == "watch", KIND_WATCH).when(F.col(S.EVENT_TYPE) == "search", KIND_SEARCH)
        .otherwise(KIND_IMPRESSION).alias("kind"),
        event_seq(events.columns).alias(S.EVENT_SEQ), F.col(S.VIDEO_ID).cast("string").alias(S.VIDEO_ID),
        tokens_column(F.col(S.QUERY)).alias(TOKENS),
        *([F.col(S.CLICKED).cast("int").alias(S.CLICKED)] if impressions else []),
        F.lit(None).cast(user_type).alias(USER_STRUCT))
    marks = users.select(
        S.USER_ID, F.lit(-1.0).alias(S.TS), F.lit(KIND_USER).alias("kind"), F.lit(0).cast("long").alias(S.EVENT_SEQ),
        F.lit(None).cast("string").alias(S.VIDEO_ID), F.lit(None).cast("array<string>").alias(TOKENS),
        *([F.lit(None).cast("int").alias(S.CLICKED)] if impressions else []),
        F.struct(*[(F.col(c) if c in utypes else F.lit(None)).cast(utypes.get(c, "string")).alias(c)
                   for c in RAW_USER_COLUMNS]).alias(USER_STRUCT))
    return ev.unionByName(marks)


@dataclass
class Encoder:
    """What the tasks need to encode serving events: vocabulary values (id = position + 2, unknown and null
    OOV 1, as :func:`ytspark.vocab.apply_vocab`), the reference year of ages from birth years, and per video
    idx the channel and category idx (the ranker's affinity features; None without a ranker)."""

    video: pa.Array
    token: pa.Array
    gender: pa.Array
    country: pa.Array
    language: pa.Array
    device: pa.Array
    ref_year: int
    channel: np.ndarray | None = None
    category: np.ndarray | None = None

    @classmethod
    def of(cls, vocabs: dict[str, Vocab], as_of: float, meta=None) -> "Encoder":
        arr = {n: pa.array(vocabs[n].values, pa.string()) for n in ("video", "token", *USER_VOCABS)}
        return cls(**arr, ref_year=cls.of_year(as_of), channel=None if meta is None else np.asarray(meta.channel, np.int32),
                   category=None if meta is None else np.asarray(meta.category, np.int32))

    @staticmethod
    def of_year(as_of: float) -> int:
        """The reference year of ages from birth years: the year of the last instant before ``as_of``."""
        return dt.datetime.fromtimestamp(as_of - 1, dt.timezone.utc).year

    def encode(self, table: pa.Table) -> pa.Table:
        """:func:`serving_events` rows -> the columns :func:`~ytspark.features.asof.inputs_at_end` reads,
        with ``prepare``'s definitions (:func:`~ytspark.features.events.user_features`: demographic ids, age =
        age, else ref_year - birth_year, its bucket, -1 unknown); only marker rows carry demographics (the
        first row of their user, which is where the row builders read them)."""
        c = {n: col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
             for n, col in zip(table.column_names, table.columns)}
        if USER_STRUCT in c:  # flatten() gives the fields null where the struct is (event rows)
            c.update(zip([f.name for f in c[USER_STRUCT].type], c.pop(USER_STRUCT).flatten()))
        vid = vocab_ids(c[S.VIDEO_ID], self.video)
        users = user_features(c, {n: getattr(self, n) for n in USER_VOCABS}, self.ref_year)
        cols = {S.USER_ID: c[S.USER_ID], S.TS: c[S.TS], "kind": c["kind"], S.EVENT_SEQ: c[S.EVENT_SEQ],
                S.VIDEO_IDX: pa.array(vid), TOKENS: c[TOKENS], **users}
        if S.CLICKED in c:
            cols[S.CLICKED] = pc.fill_null(c[S.CLICKED].cast(pa.int32()), 0)
        for name, per_video in ((S.RANK_CHANNEL, self.channel), (S.RANK_CATEGORY, self.category)):
            if per_video is not None:
                cols[name] = pa.array(per_video[np.minimum(vid, len(per_video) - 1)])
        return pa.table(cols)


def impression_csr(encoded: pa.Table, as_of: float, n_videos: int):
    """Per user of ``encoded`` (:meth:`Encoder.encode` rows of whole users, sorted by user), the videos shown
    before ``as_of`` with the ranker's impression features as of then -> :class:`~ytspark.score.rank.Csr`
    (ids sorted; counts = n_prev_impressions, since = since_impression_days, flag = prev_impression_clicked),
    by :func:`ytspark.features.history.impression_history`, the definition of the training rows."""
    from ytspark.features.history import impression_history
    from ytspark.features.segments import Users
    from ytspark.score.rank import Csr

    ts = encoded[S.TS].to_numpy().astype(np.float64)
    users = Users.of(encoded[S.USER_ID].combine_chunks(), ts)
    U = len(users.starts)
    kind = encoded["kind"].to_numpy()
    vid = encoded[S.VIDEO_IDX].to_numpy().astype(np.int64)
    ii = np.flatnonzero((kind == KIND_IMPRESSION) & (vid >= 2) & (ts < as_of))
    clicked = encoded[S.CLICKED].to_numpy()[ii] if S.CLICKED in encoded.column_names else np.zeros(len(ii))
    key = users.event_user[ii].astype(np.int64) * n_videos + vid[ii]
    q = np.unique(key)
    count, since, flag = impression_history(key, ts[ii], clicked, q, np.full(len(q), float(as_of)))
    offsets = np.concatenate([[0], np.cumsum(np.bincount(q // n_videos, minlength=U))]).astype(np.int64)
    return Csr(offsets, q % n_videos, count, since, flag)


IMPRESSIONS = "impressions"


def serving_columns(table: pa.Table | pa.RecordBatch, as_of: float, history_length: int, encoder: Encoder,
                    affinity: bool = False, impressions: bool = False) -> dict:
    """Columns of every user of ``table`` (:func:`serving_events` rows of whole users, sorted by user and
    ``ROW_ORDER``) as of ``as_of``, encoded by ``encoder``.

    Returns ``user_id`` (object [U]); ``watch_hist``, ``search_hist`` [U, H] int64; ``watch_hist_age``
    [U, H] float32; ``n_prior_watches``, ``since_last_watch_days``, ``user_age`` and the demographics [U];
    ``seen``: (offsets [U + 1], sorted video idx); with ``affinity`` "channel"/"category" ->
    :class:`~ytspark.score.rank.Csr` (ids sorted; watch counts; days since the last watch); with
    ``impressions`` "impressions" -> :func:`impression_csr`.
    """
    from ytspark.score.rank import Csr

    groups = dict(zip(AFFINITY_GROUPS, (S.RANK_CHANNEL, S.RANK_CATEGORY)))
    p = CandidateParams(history_length=int(history_length))
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    encoded = encoder.encode(table)
    cols = inputs_at_end(encoded, as_of, p, encoder.token, tuple(groups.values()) if affinity else ())
    out = {S.USER_ID: cols[S.USER_ID], SEEN: cols[SEEN]}
    if impressions:
        out[IMPRESSIONS] = impression_csr(encoded, as_of, len(encoder.video) + 2)
    for c in (S.CAND_WATCH_HIST, S.CAND_SEARCH_HIST):
        out[c] = cols[c].astype(np.int64)
    for c in (S.CAND_WATCH_AGE, S.CAND_N_WATCHES, S.CAND_SINCE_LAST, S.USER_AGE, *S.DEMOGRAPHIC_COLUMNS):
        out[c] = cols[c]
    if affinity:
        for g, col in groups.items():
            out[g] = Csr(*cols[col])
    return out


def collect_serving_columns(events: DataFrame, as_of: float, history_length: int, encoder: Encoder,
                            affinity: bool = False, impressions: bool = False) -> dict:
    """:func:`serving_columns` of every user of ``events`` (a :func:`serving_events` frame, or a subset of
    its users), built on the driver: for samples and tests, not for a whole catalogue of users."""
    pdf = events.toPandas().sort_values([S.USER_ID, *ROW_ORDER], kind="stable").reset_index(drop=True)
    pdf["tokens"] = [None if t is None else [str(x) for x in t] for t in pdf["tokens"]]
    table = pa.Table.from_pandas(pdf, preserve_index=False)
    return serving_columns(table, as_of, history_length, encoder, affinity, impressions)


def slice_users(cols: dict, a: int, b: int) -> dict:
    """Users ``a:b`` of :func:`serving_columns` (CSR columns re-based)."""
    from ytspark.score.rank import Csr

    out = {}
    for k, v in cols.items():
        if isinstance(v, Csr):
            out[k] = v.slice_rows(a, b)
        elif isinstance(v, tuple):
            off, vals = v
            lo, hi = int(off[a]), int(off[b])
            out[k] = (off[a:b + 1] - lo, vals[lo:hi])
        else:
            out[k] = v[a:b]
    return out
