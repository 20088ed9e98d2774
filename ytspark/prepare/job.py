"""The prepare stage: raw contract tables -> validated events, vocabularies, training rows, manifest.

``run_prepare(spark, cfg, raw, out_dir)`` writes, atomically (a killed run
leaves the previous ``out_dir`` intact)::

    out_dir/
      events/            accepted events, typed (epoch-second timestamps; log_seq with prepare.tie_break = "log")
      users/ videos/     accepted users and videos
      rejects/           every rejected row: source_table, reject_reason, raw JSON
      candidates/{train,val,test}/   CANDIDATE_SCHEMA rows, balanced row groups
      ranking/{train,val,test}/      RANKING_SCHEMA rows, balanced row groups
      sequences/train/   SEQUENCE_SCHEMA rows (user windows), only with candidate.encoder = sequence | auto
      vocab/<name>.json  vocabularies (0 = pad, 1 = OOV)
      quantiles.json     quantile boundaries of continuous features
      manifest.json      counts, vocab sizes, inputs, config, timings
      _SUCCESS
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ytspark import schema as S
from ytspark import storage
from ytspark.config import Config
from ytspark.features.events import ROW_ORDER, TOKENS, USER_VOCABS, event_seq, user_features, video_features
from ytspark.features.grouping import map_user_batches
from ytspark.features.params import CandidateParams, check_sampling, RankingParams
from ytspark.prepare.batch_candidates import batch_candidate_rows
from ytspark.prepare.batch_ranking import batch_ranking_rows
from ytspark.prepare.batch_sequences import batch_sequence_rows
from ytspark.prepare.quantiles import fit_quantiles
from ytspark.prepared import MANIFEST_VERSION
from ytspark.schema import KIND_IMPRESSION, KIND_SEARCH, KIND_WATCH
from ytspark.sources import read_table
from ytspark.validate import RAW, RejectShareError, summarize, validate
from ytspark.vocab import Vocab, apply_vocab, fit_vocab, tokens_column

log = logging.getLogger(__name__)

CANDIDATE_QUANTILE_COLUMNS = (S.CAND_EXAMPLE_AGE, S.CAND_SINCE_LAST, S.CAND_N_WATCHES, S.USER_AGE)
_ROWS_PER_GROUP_MAX = 250_000
BROADCAST_MAX_ROWS = 2_000_000  # per-user / per-video tables up to this size join by broadcast (events stay put)
CANDIDATE_INPUT = (S.USER_ID, S.TS, "kind", S.EVENT_SEQ, S.VIDEO_IDX, TOKENS, "completed", S.USER_AGE, *S.DEMOGRAPHIC_COLUMNS)
RANKING_INPUT = (S.USER_ID, S.TS, "kind", S.EVENT_SEQ, S.VIDEO_IDX, S.CLICKED, S.WATCH_SECONDS, S.UPLOAD_TS, S.RANK_CHANNEL,
                 S.RANK_CATEGORY, S.RANK_VIDEO_LANGUAGE, S.RANK_USER_LANGUAGE)


@dataclass
class RawTables:
    """Raw contract tables as read (``sources.read_table``) or adapted (e.g. MovieLens)."""

    events: DataFrame
    users: DataFrame | None = None
    videos: DataFrame | None = None
    paths: dict[str, str] = field(default_factory=dict)


def read_inputs(spark: SparkSession, cfg: Config) -> RawTables:
    """Read the tables named by ``cfg.data`` (users and videos are optional)."""
    d = cfg.data
    if not d.events:
        raise ValueError("data.events is empty: pass --events PATH (or run `ytspark generate` first)")
    return RawTables(
        events=read_table(spark, d.events, "events", d.format),
        users=read_table(spark, d.users, "users", d.format) if d.users else None,
        videos=read_table(spark, d.videos, "videos", d.format) if d.videos else None,
        paths={"events": d.events, "users": d.users, "videos": d.videos},
    )


def _empty_raw(spark: SparkSession, table: str) -> DataFrame:
    cols, _ = S.TABLES[table]
    schema = T.StructType([T.StructField(c, T.StringType()) for c in cols] + [T.StructField(S.CORRUPT_RECORD, T.StringType())])
    return spark.createDataFrame([], schema)


def _validate_tables(spark: SparkSession, cfg: Config, raw: RawTables, tmp: str, out_dir: str) -> dict:
    """Validate the three tables in one pass each; write accepted tables and rejects under ``tmp``."""
    stats: dict = {}
    reject_frames = []
    for table, df in (("events", raw.events), ("users", raw.users), ("videos", raw.videos)):
        df = df if df is not None else _empty_raw(spark, table)
        v = validate(df, table, cfg.validate)
        staged = f"{tmp}/_staging/{table}"
        cols, _ = S.TABLES[table]
        v.tagged.select(
            *[F.col(f"__t_{c}").cast(t).alias(c) for c, t in cols.items()],
            *([F.col(S.LOG_SEQ)] if S.LOG_SEQ in v.tagged.columns and cfg.prepare.tie_break == "log" else []),
            F.col(S.REJECT_REASON),
            # the raw JSON is only kept (and so only built) for rejected rows
            F.when(F.col(S.REJECT_REASON).isNotNull(), F.col(RAW)).alias(RAW),
        ).write.mode("overwrite").parquet(staged)
        tagged = spark.read.parquet(staged)
        counts = {r[S.REJECT_REASON]: r["count"] for r in tagged.groupBy(S.REJECT_REASON).count().collect()}
        accepted_n = counts.pop(None, 0)
        stats[table] = (accepted_n + sum(counts.values()), counts)
        tagged.where(F.col(S.REJECT_REASON).isNull()).drop(S.REJECT_REASON, RAW).write.parquet(f"{tmp}/{table}")
        reject_frames.append(
            tagged.where(F.col(S.REJECT_REASON).isNotNull()).select(
                F.lit(table).alias(S.REJECT_TABLE), F.col(S.REJECT_REASON), F.col(RAW))
        )
    rejects = reject_frames[0].unionByName(reject_frames[1]).unionByName(reject_frames[2])
    rejects.coalesce(1).write.parquet(f"{tmp}/rejects")
    out = {}
    failure = None
    for table, (n, counts) in stats.items():
        try:
            out[table] = summarize(n, counts, table, cfg.validate)
        except RejectShareError as e:
            failure = e
            out[table] = {"input": n, "rejected": sum(counts.values()), "reasons": counts}
    if failure is not None:
        kept = out_dir.rstrip("/") + ".rejects"
        storage.delete(spark, kept)
        storage.publish(spark, f"{tmp}/rejects", kept)
        raise RejectShareError(f"{failure} Rejected rows kept at {kept}") from None
    return out


def _user_features(users: DataFrame, vocabs: dict[str, Vocab], ref_year: int) -> DataFrame:
    """Per user: demographic vocab indices, age (years, -1 unknown) and its bucket index
    (:func:`~ytspark.features.events.user_features`, the function serving calls)."""
    values = {n: pa.array(vocabs[n].values, pa.string()) for n in USER_VOCABS}
    out_type = T.StructType([T.StructField(S.USER_ID, T.StringType()),
                             *[T.StructField(c, T.IntegerType()) for c in S.DEMOGRAPHIC_COLUMNS],
                             T.StructField(S.USER_AGE, T.FloatType())])

    def fn(batches):
        for b in batches:
            c = dict(zip(b.schema.names, b.columns))
            feats = user_features(c, values, ref_year)
            yield pa.RecordBatch.from_arrays([c[S.USER_ID].cast(pa.string()), *feats.values()],
                                             names=[S.USER_ID, *feats])

    cols = [c for c in (S.USER_ID, *USER_VOCABS, S.AGE, S.BIRTH_YEAR) if c in users.columns]
    return users.select(*cols).mapInArrow(fn, out_type)


def _train_cutoffs(events: DataFrame) -> DataFrame:
    """Per user the first timestamp that is not training: the validation watch (or the test watch)."""
    watches = events.where(F.col(S.EVENT_TYPE) == "watch").select(S.USER_ID, F.col(S.EVENT_TS).alias("t"))
    per_user = watches.groupBy(S.USER_ID).agg(F.sort_array(F.collect_list("t"), asc=False).alias("ts"))
    n = F.size("ts")
    cut = F.when(n >= 3, F.element_at("ts", 2)).when(n == 2, F.element_at("ts", 1))
    return per_user.select(S.USER_ID, cut.alias("train_cut"))


def _maybe_broadcast(df: DataFrame, rows: int) -> DataFrame:
    """``df`` marked for a broadcast join when it has at most :data:`BROADCAST_MAX_ROWS` rows."""
    return F.broadcast(df) if rows <= BROADCAST_MAX_ROWS else df


def enrich_events(events: DataFrame, users: DataFrame, videos: DataFrame, vocabs: dict[str, Vocab],
                  completed_fraction: float, ref_year: int, user_rows: int = 0, video_rows: int = 0) -> DataFrame:
    """Accepted events with what the row builders read: ``ts``, ``kind``, vocab ids, ``tokens``,
    ``completed``, video metadata and user features (missing ones as OOV / -1).

    ``user_rows``/``video_rows`` (the tables' sizes) decide whether the feature
    tables are broadcast (no shuffle of the events) or joined by a shuffle.
    """
    ufeat = _maybe_broadcast(_user_features(users, vocabs, ref_year), user_rows)
    vfeat = _maybe_broadcast(video_features(videos, vocabs), video_rows)
    ev = events.withColumn(S.TS, F.col(S.EVENT_TS)).withColumn(
        "kind",
        F.when(F.col(S.EVENT_TYPE) == "watch", KIND_WATCH)
        .when(F.col(S.EVENT_TYPE) == "search", KIND_SEARCH)
        .otherwise(KIND_IMPRESSION),
    ).withColumn(TOKENS, tokens_column(F.col(S.QUERY))).withColumn(S.EVENT_SEQ, event_seq(events.columns))
    ev = apply_vocab(ev, vocabs["video"], S.VIDEO_ID, S.VIDEO_IDX)
    ev = ev.join(vfeat, S.VIDEO_ID, "left").join(ufeat, S.USER_ID, "left")
    dur = F.coalesce(F.col(S.VIDEO_SECONDS), F.col(S.DURATION_SECONDS))
    ev = ev.withColumn(
        "completed",
        F.when(F.col(S.WATCH_SECONDS).isNull() | dur.isNull() | (dur <= 0), F.lit(True)).otherwise(
            F.col(S.WATCH_SECONDS) / dur >= completed_fraction),
    )
    fill_int = {c: S.OOV for c in (*S.DEMOGRAPHIC_COLUMNS, S.RANK_CHANNEL, S.RANK_CATEGORY, S.RANK_VIDEO_LANGUAGE)}
    ev = ev.fillna(fill_int).fillna({S.USER_AGE: -1.0})
    return ev.select(
        S.USER_ID, S.TS, "kind", S.EVENT_SEQ, S.VIDEO_IDX, TOKENS, "completed", S.CLICKED, S.WATCH_SECONDS,
        S.UPLOAD_TS, S.RANK_CHANNEL, S.RANK_CATEGORY, S.RANK_VIDEO_LANGUAGE, S.USER_AGE,
        *S.DEMOGRAPHIC_COLUMNS,
    )


def _write_balanced(df: DataFrame, path: str, rows: int, shards: int, groups_per_shard: int) -> int:
    """Write ``df`` as equally sized files of one row group each, a multiple of ``shards`` of them."""
    base = max(1, shards) * max(1, groups_per_shard)
    n = base * max(1, math.ceil(rows / (base * _ROWS_PER_GROUP_MAX)))
    n = max(min(n, rows), 1) if rows < base else n
    df.repartition(n).write.option("parquet.block.size", 1 << 30).parquet(path)
    return n


def run_prepare(spark: SparkSession, cfg: Config, raw: RawTables, out_dir: str) -> dict:
    """Run the whole prepare stage into ``out_dir`` (published atomically) and return the manifest."""
    p = cfg.prepare
    timings: dict[str, float] = {}
    t0 = time.time()
    with storage.atomic_dir(spark, out_dir) as tmp:
        tables = _validate_tables(spark, cfg, raw, tmp, out_dir)
        timings["validate_s"] = round(time.time() - t0, 2)
        events = spark.read.parquet(f"{tmp}/events")
        users = spark.read.parquet(f"{tmp}/users")
        videos = spark.read.parquet(f"{tmp}/videos")
        per_type = events.groupBy(S.EVENT_TYPE).agg(F.count("*").alias("n"), F.max(S.EVENT_TS).alias("end")).collect()
        by_type = {r[S.EVENT_TYPE]: r["n"] for r in per_type}
        window_end = max((r["end"] for r in per_type), default=None) or 0.0
        ref_year = time.gmtime(window_end).tm_year

        # ---- vocabularies, fitted on training events only (before each user's validation watch)
        t1 = time.time()
        cut = _train_cutoffs(events).persist(StorageLevel.MEMORY_AND_DISK)
        train_ev = events.select(S.USER_ID, S.EVENT_TS, S.EVENT_TYPE, S.VIDEO_ID, S.QUERY).join(
            _maybe_broadcast(cut, cut.count()), S.USER_ID, "left").where(
            F.col("train_cut").isNull() | (F.col(S.EVENT_TS) < F.col("train_cut")))
        vocabs: dict[str, Vocab] = {
            "video": fit_vocab(train_ev.where(F.col(S.EVENT_TYPE).isin("watch", "impression")), S.VIDEO_ID,
                               "video", p.video_min_count, p.video_top_k),
            "token": fit_vocab(
                train_ev.where(F.col(S.EVENT_TYPE) == "search").select(F.explode(tokens_column(F.col(S.QUERY))).alias("tok")),
                "tok", "token", p.token_min_count, p.token_top_k),
        }
        cut.unpersist()
        mc = p.categorical_min_count
        for col in (S.GENDER, S.COUNTRY, S.DEVICE):
            vocabs[col] = fit_vocab(users, col, col, mc)
        vocabs["language"] = fit_vocab(
            users.select(S.LANGUAGE).unionByName(videos.select(S.LANGUAGE)), S.LANGUAGE, "language", mc)
        vocabs["channel"] = fit_vocab(videos, S.CHANNEL_ID, "channel", mc)
        vocabs["category"] = fit_vocab(videos, S.CATEGORY, "category", mc)
        vocabs["source"] = Vocab("source", list(S.CANDIDATE_SOURCES), [0] * len(S.CANDIDATE_SOURCES))
        for name, v in vocabs.items():
            v.save(spark, f"{tmp}/vocab/{name}.json")
        timings["vocab_s"] = round(time.time() - t1, 2)

        # ---- one enriched event table: vocab ids, video metadata, user features
        t2 = time.time()
        check_sampling(p.example_sampling)
        ev = enrich_events(events, users, videos, vocabs, p.completed_fraction, ref_year,
                           tables["users"]["accepted"], tables["videos"]["accepted"])
        cparams = CandidateParams(p.history_length, p.max_examples_per_user, p.example_sampling, p.seed, window_end,
                                  p.ties)
        vocab_tokens = pa.array(vocabs["token"].values, pa.string())
        rparams = RankingParams(p.history_length, vocabs["source"].index("impression"))
        cand = map_user_batches(
            ev.where(F.col("kind") != KIND_IMPRESSION).select(*CANDIDATE_INPUT),
            lambda t: batch_candidate_rows(t, cparams, vocab_tokens), S.CANDIDATE_SCHEMA, ROW_ORDER)
        rank = map_user_batches(
            ev.where(F.col("kind") != KIND_SEARCH).select(*RANKING_INPUT),
            lambda t: batch_ranking_rows(t, rparams), S.RANKING_SCHEMA, ROW_ORDER)
        out_counts = {}
        row_groups = {}
        for name, df in (("candidates", cand), ("ranking", rank)):
            df = df.persist(StorageLevel.MEMORY_AND_DISK)
            counts = {r[S.SPLIT]: r["count"] for r in df.groupBy(S.SPLIT).count().collect()}
            out_counts[name] = {s: int(counts.get(s, 0)) for s in S.SPLITS}
            row_groups[name] = {}
            for split in S.SPLITS:
                groups = p.row_groups_per_shard if split == "train" else 1
                row_groups[name][split] = _write_balanced(
                    df.where(F.col(S.SPLIT) == split), f"{tmp}/{name}/{split}", out_counts[name][split],
                    p.target_shards, groups)
            df.unpersist()
        if cfg.candidate.encoder != "bag":  # the second layout: user windows, trained on every position
            seq = map_user_batches(
                ev.where(F.col("kind") != KIND_IMPRESSION).select(*CANDIDATE_INPUT),
                lambda t: batch_sequence_rows(t, cparams, vocab_tokens, p.sequence_windows, p.sequence_stride),
                S.SEQUENCE_SCHEMA,
                ROW_ORDER).persist(StorageLevel.MEMORY_AND_DISK)
            out_counts["sequences"] = {"train": seq.count()}
            row_groups["sequences"] = {"train": _write_balanced(
                seq, f"{tmp}/sequences/train", out_counts["sequences"]["train"], p.target_shards,
                p.row_groups_per_shard)}
            seq.unpersist()
        timings["rows_s"] = round(time.time() - t2, 2)

        # ---- quantile boundaries of continuous features (training rows)
        t3 = time.time()
        quantiles = {
            "candidates": fit_quantiles(spark.read.parquet(f"{tmp}/candidates/train"), CANDIDATE_QUANTILE_COLUMNS,
                                        p.quantiles, p.quantile_rel_error),
            "ranking": fit_quantiles(spark.read.parquet(f"{tmp}/ranking/train"), S.RANK_CONTINUOUS,
                                     p.quantiles, p.quantile_rel_error) if out_counts["ranking"]["train"] else {},
        }
        storage.write_json(spark, f"{tmp}/quantiles.json", quantiles)
        timings["quantiles_s"] = round(time.time() - t3, 2)
        storage.delete(spark, f"{tmp}/_staging")
        timings["total_s"] = round(time.time() - t0, 2)

        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "inputs": raw.paths,
            "tables": tables,
            "events_by_type": {k: int(by_type.get(k, 0)) for k in S.EVENT_TYPES},
            "window_end": window_end,
            "vocab_sizes": {k: len(v) for k, v in vocabs.items()},
            "candidates": out_counts["candidates"],
            "ranking": out_counts["ranking"],
            **({"sequences": out_counts["sequences"]} if "sequences" in out_counts else {}),
            "row_groups": row_groups,
            "target_shards": p.target_shards,
            "timings": timings,
            "config": cfg.to_dict(),
        }
        storage.write_json(spark, f"{tmp}/manifest.json", manifest)
        storage.write_text(spark, f"{tmp}/_SUCCESS", "")
    log.info("prepare wrote %s in %.1fs", out_dir, timings["total_s"])
    return manifest
