"""The nightly scoring job: every user of a prepared directory -> top-N table for a run date.

``run_score(spark, cfg, prepared_dir, model_dir, run_date, out_root, ranker_dir=None)``
writes, atomically (a rerun of the date replaces it whole; a failed run leaves
the previous table as it was)::

    <out_root>/recommendations/run_date=YYYY-MM-DD/
      part-*.parquet   user_id, rank (1..N), video_id, score, retrieval_score, source,
                       model_version, run_date   (schema.RECOMMENDATIONS_SCHEMA)
      _manifest.json   rows, users, sources, coverage, index kind and recall, timings, versions
      _SUCCESS
The manifest's name starts with ``_`` so that Spark, pyarrow and pandas read the
folder as a plain Parquet table (they skip ``_*`` and ``.*`` files).

Steps: the FAISS index of the model's folded video table built once on the
driver for the approximate kinds (:mod:`.index`, recall against exact search
measured on a sample; the exact ``flat`` kind needs none), then ONE pass over
the raw prepared events (:func:`~.features.serving_events`, no join): they are
partitioned and sorted by user, and a ``mapInArrow`` function encodes each
batch of whole users, builds their serving columns as of the end of the run
date (:mod:`.features`, the same code as the ranker's training rows),
retrieves, ranks and keeps the top N, which Spark writes (:mod:`.scorer`; the
models are shipped in a broadcast and rebuilt once per Python worker,
:mod:`.bundle`). Users without a usable history are left to the driver: the
tasks also count distinct watchers per (country, age bucket, video), and the
popular lists built from those counts (:mod:`.fallback`) are appended to the
same table as one more file. The manifest's counts and per-step task seconds
come back from the tasks in an accumulator, so no job reads the table back.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Callable

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ytspark import schema as S
from ytspark import storage
from ytspark.config import Config, ScoreConfig
from ytspark.features.events import ROW_ORDER
from ytspark.features.grouping import sort_by_user
from ytspark.models.blend import ServingOrder, serving_order
from ytspark.models.covisit import load_covisitation
from ytspark.models.export import load_candidate
from ytspark.models.ranker import RankerConfig
from ytspark.prepared import load_manifest
from ytspark.schema import (
    KIND_WATCH, MODEL_VERSION, RANK, RECOMMENDATIONS_SCHEMA, RETRIEVAL_SCORE, RUN_DATE, SCORE, SCORED_ARROW_SCHEMA,
    SCORED_SCHEMA, SOURCE,
)
from ytspark.score import index as ix
from ytspark.score.bundle import Bundle, folded_table, model_vocabs, read_ranker, state_bytes
from ytspark.score.catalog import publish_partition
from ytspark.score.fallback import AGE_SLOTS, popular_lists
from ytspark.score.features import Encoder, as_of_ts, collect_serving_columns, serving_events
from ytspark.score.rank import IMPRESSION_FEATURES, VideoMeta
from ytspark.score.rules import RULES, build_rules, rules_configured
from ytspark.score.scorer import STEPS, RunData, Tally, TallyParam, partition_fn, usable_history, user_vectors
from ytspark.vocab import Vocab

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
MANIFEST_FILE = "_manifest.json"
CANDIDATE_VOCABS = ("video", "token", "gender", "country", "language", "device")


def check_score_config(sc: ScoreConfig) -> None:
    """Raise ValueError naming the ``score.*`` key that is out of range."""
    problems = []
    if sc.n < 1:
        problems.append(f"score.n must be >= 1, got {sc.n}")
    if sc.k < sc.n:
        problems.append(f"score.k ({sc.k}) must be >= score.n ({sc.n}): the top N come from the K retrieved")
    if sc.index not in ix.KINDS:
        problems.append(f"score.index must be one of {ix.KINDS}, got '{sc.index}'")
    for key in ("batch_size", "threads_per_task", "ivf_nlist", "ivf_nprobe", "hnsw_m", "ef_search"):
        if getattr(sc, key) < 1:
            problems.append(f"score.{key} must be >= 1, got {getattr(sc, key)}")
    for key in ("max_per_channel", "min_video_age_s", "max_video_age_days"):
        if getattr(sc, key) < 0:
            problems.append(f"score.{key} must be >= 0 (0 = off), got {getattr(sc, key)}")
    if problems:
        raise ValueError("; ".join(problems))


def resolve_run_date(run_date: str | None, sc: ScoreConfig) -> str:
    """The run date: the argument, else ``score.run_date``, else today (UTC); checked as YYYY-MM-DD."""
    d = run_date or sc.run_date or dt.datetime.now(dt.timezone.utc).date().isoformat()
    as_of_ts(d)
    return d


def _vocabs(spark: SparkSession, prepared_dir: str, md, ranker_md) -> dict[str, Vocab]:
    """The candidate model's own vocabularies (ids must match its tables); the ranker's for its inputs."""
    own = model_vocabs(md)
    missing = [n for n in CANDIDATE_VOCABS if n not in own]
    if missing:
        raise ValueError(f"model directory {md.path} has no vocab/{missing[0]}.json; the model's vocabularies "
                         "are needed to encode histories: re-export the model with its vocab/ folder")
    out = dict(own)
    extra = model_vocabs(ranker_md) if ranker_md is not None else {}
    for name in ("video", "language"):
        if name in extra and extra[name].values != own[name].values:
            raise ValueError(f"ranker {ranker_md.path} and candidate model {md.path} have different '{name}' "
                             "vocabularies: train both on the same prepared directory")
    for name in ("channel", "category", "source"):
        out[name] = extra.get(name) or own.get(name) or Vocab.load(spark, f"{prepared_dir}/vocab/{name}.json")
    return out


def _videos_table(spark: SparkSession, prepared_dir: str) -> pa.Table:
    """The prepared videos table's id, channel, category, language (strings) and upload time (one scan)."""
    df = spark.read.parquet(f"{prepared_dir}/videos").select(
        F.col(S.VIDEO_ID).cast("string"), F.col(S.CHANNEL_ID).cast("string"), F.col(S.CATEGORY).cast("string"),
        F.col(S.LANGUAGE).cast("string"), F.col(S.UPLOAD_TS).cast("double"))
    t = df.toPandas()
    return pa.Table.from_pandas(t, preserve_index=False) if len(t) else pa.table(
        {c: pa.array([], pa.float64() if c == S.UPLOAD_TS else pa.string()) for c in df.columns})


def _video_meta(spark: SparkSession, prepared_dir: str, vocabs: dict[str, Vocab],
                videos: pa.Table | None = None) -> VideoMeta:
    """Language/channel/category idx and upload time of every video idx, from the prepared videos table
    (``videos``, read when None; ids as :func:`ytspark.features.events.video_features` gives them, OOV for unknown values)."""
    from ytspark.features.events import vocab_ids

    videos = _videos_table(spark, prepared_dir) if videos is None else videos
    V = len(vocabs["video"])
    meta = VideoMeta(np.full(V, S.OOV, np.int64), np.full(V, S.OOV, np.int64), np.full(V, S.OOV, np.int64),
                     np.full(V, np.nan, np.float64))
    if videos.num_rows:
        idx = vocab_ids(videos.column(S.VIDEO_ID), pa.array(vocabs["video"].values, pa.string()))
        ok = idx >= 2
        for field, c, vocab in (("channel", S.CHANNEL_ID, "channel"), ("category", S.CATEGORY, "category"),
                                ("language", S.LANGUAGE, "language")):
            getattr(meta, field)[idx[ok]] = vocab_ids(videos.column(c), pa.array(vocabs[vocab].values, pa.string()))[ok]
        meta.upload_ts[idx[ok]] = videos.column(S.UPLOAD_TS).to_numpy(zero_copy_only=False).astype(np.float64)[ok]
    return meta


def _recall(spark: SparkSession, model, events: DataFrame, index, vectors: np.ndarray, sc: ScoreConfig,
            as_of: float, H: int, encoder) -> dict:
    """Recall@K of the approximate index against exact search on up to ``recall_sample_users`` users
    (the first users with a watch, their serving columns built on the driver)."""
    ids = events.where(F.col("kind") == KIND_WATCH).select(S.USER_ID).distinct().limit(sc.recall_sample_users)
    cols = collect_serving_columns(events.join(F.broadcast(ids), S.USER_ID), as_of, H, encoder)
    if not len(cols[S.USER_ID]):
        return {"recall_at_k": None, "sample_users": 0}
    cols = {k: v for k, v in cols.items() if k not in (S.USER_ID, "seen")}
    rows = np.flatnonzero(usable_history(cols))
    q = user_vectors(model, {k: v[rows] for k, v in cols.items()})
    r = ix.measure_recall(index, ix.build_index(vectors, "flat"), q, sc.k)
    return {"recall_at_k": round(float(r), 4), "sample_users": int(len(rows))}


def _write_fallback(spark: SparkSession, tmp: str, t: Tally, V: int, run: RunData, per_group: int,
                    model_version: str, run_date: str) -> None:
    """Popular lists for the users the pass found cold (``t.cold_ids``) from every task's watcher counts,
    appended to the table being written as one more Parquet file; ``t`` counts their rows."""
    popular = popular_lists(t.watch_keys if t.watch_keys is not None else np.zeros(0, np.int64),
                            t.watch_counts if t.watch_counts is not None else np.zeros(0, np.int64), V, per_group)
    out = {n: [] for n in (S.USER_ID, RANK, S.VIDEO_ID, SCORE, RETRIEVAL_SCORE, SOURCE)}
    no_seen = np.zeros(0, np.int64)  # a cold user has no in-vocabulary watch
    country, age = t.cold_groups // AGE_SLOTS, t.cold_groups % AGE_SLOTS
    for uid, c, a in zip(t.cold_ids, country, age):
        ids, sc, src = popular.recommend(int(c), int(a), no_seen, run.n, run.rules)
        out[S.USER_ID] += [uid] * len(ids)
        out[RANK] += list(range(1, len(ids) + 1))
        out[S.VIDEO_ID] += list(run.video_ids[ids])
        out[SCORE] += sc.tolist()
        out[RETRIEVAL_SCORE] += sc.tolist()
        out[SOURCE] += src
        t.cover(ids, V)
    batch = pa.RecordBatch.from_arrays([
        pa.array(out[S.USER_ID], pa.string()), pa.array(out[RANK], pa.int32()), pa.array(out[S.VIDEO_ID], pa.string()),
        pa.array(out[SCORE], pa.float32()), pa.array(out[RETRIEVAL_SCORE], pa.float32()),
        pa.array(out[SOURCE], pa.string())], schema=SCORED_ARROW_SCHEMA)
    t.count(batch, 0, 0, run.n)
    t.add_counts("removed", popular.removed)
    t.add_counts("struck", popular.struck)
    pdf = batch.to_pandas().assign(**{MODEL_VERSION: model_version, RUN_DATE: run_date})
    spark.createDataFrame(pdf, RECOMMENDATIONS_SCHEMA).coalesce(1).write.mode("append").parquet(tmp)


def _rules_summary(rules, t: Tally) -> dict | None:
    """The manifest's ``rules``: what was loaded, and per rule the videos it removed from the lists (ranked
    above a user's last kept video) and among all K candidates (:mod:`.rules`)."""
    if rules is None:
        return None
    return {**rules.info, "removed": {r: int((t.removed or {}).get(r, 0)) for r in RULES},
            "candidates_removed": {r: int((t.struck or {}).get(r, 0)) for r in RULES}}


def _summary(t: Tally, n_catalogue: int) -> dict:
    """The manifest's counts from the tasks' :class:`Tally`."""
    videos = int(t.videos[2:].sum()) if t.videos is not None else 0
    return {"rows": t.rows, "users_with_list": t.users_with_list, "short_lists": t.short_lists,
            "rows_by_source": dict(sorted((t.rows_by_source or {}).items())),
            "users_by_source": dict(sorted((t.users_by_source or {}).items())),
            "coverage": {"videos": videos, "catalogue": n_catalogue, "share": round(videos / max(n_catalogue, 1), 4)}}


def run_score(spark: SparkSession, cfg: Config, prepared_dir: str, model_dir: str, run_date: str | None,
              out_root: str, ranker_dir: str | None = None, *, fail_partition: int | None = None,
              on_step: Callable[[str], None] | None = None) -> dict:
    """Score every user of ``prepared_dir`` as of ``run_date`` and publish the top-N table; returns the manifest.

    ``model_dir``: a candidate model directory (or its root, following LATEST);
    ``ranker_dir``: a ranker model directory, or None to rank by retrieval score.
    ``fail_partition``: test hook, makes that partition raise after it is scored.
    ``on_step``: called with each step's name as it starts (``features``, ``index``,
    ``recall``, ``broadcast``, ``score_write``, ``summary``) and ``done`` (benchmarks).
    """
    step = on_step or (lambda name: None)
    sc = cfg.score
    check_score_config(sc)
    run_date = resolve_run_date(run_date, sc)
    as_of = as_of_ts(run_date)
    timings: dict[str, float] = {}
    t0 = time.time()
    prepared_dir = prepared_dir.rstrip("/")
    pm = load_manifest(spark, prepared_dir)
    H = int(pm["config"]["prepare"]["history_length"])
    model, md = load_candidate(model_dir)
    covisit = load_covisitation(md)
    ranker_md, ranker_cfg, ranker_q = read_ranker(ranker_dir) if ranker_dir else (None, None, None)
    vocabs = _vocabs(spark, prepared_dir, md, ranker_md)
    V = len(vocabs["video"])
    if V != model.config.n_videos:
        raise ValueError(f"model {md.path}: vocab/video.json has {V} entries (with pad and OOV) but the model's "
                         f"table has {model.config.n_videos} rows; the model directory is inconsistent, re-export it")

    # ---- the serving events (lazy: read by the recall sample and the scoring pass) and their encoding
    # the ranker's impression features need the impressions before the cut-off (none: "never shown")
    by_type = pm.get("events_by_type")
    impressions = sc.impression_features and ranker_cfg is not None and \
        bool(set(RankerConfig.from_dict(ranker_cfg).quantile_features()) & set(IMPRESSION_FEATURES)) and \
        (by_type is None or int(by_type.get("impression", 0)) > 0)
    events = serving_events(spark, prepared_dir, as_of, impressions)
    videos = _videos_table(spark, prepared_dir) if ranker_md is not None or rules_configured(sc) else None
    meta = _video_meta(spark, prepared_dir, vocabs, videos) if ranker_md is not None else None
    rules = build_rules(spark, sc, videos, vocabs, as_of)
    encoder = Encoder.of(vocabs, as_of, meta)
    parts = sc.partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))

    # ---- index (driver, once), recall of approximate kinds
    t = time.time()
    step("index")
    vectors = folded_table(model)
    # flat (exact) retrieval is a dense pass over the folded table on the workers: no FAISS index to ship
    index = None if sc.index == "flat" else ix.build_index(
        vectors, sc.index, nlist=sc.ivf_nlist, nprobe=sc.ivf_nprobe, hnsw_m=sc.hnsw_m,
        ef_construction=sc.ef_construction, ef_search=sc.ef_search, seed=sc.seed)
    timings["index_s"] = round(time.time() - t, 2)
    index_info = {"kind": sc.index, "ntotal": int(index.ntotal) if index is not None else V - 2,
                  "dim": int(vectors.shape[1])}
    if sc.index == "ivf":
        index_info.update(nlist=int(ix.faiss.extract_index_ivf(index).nlist),
                          nprobe=int(ix.faiss.extract_index_ivf(index).nprobe))
    if sc.index == "hnsw":
        index_info.update(m=sc.hnsw_m, ef_search=sc.ef_search, ef_construction=sc.ef_construction)
    if sc.index != "flat" and sc.recall_sample_users > 0:
        t = time.time()
        step("recall")
        index_info.update(_recall(spark, model, events, index, vectors, sc, as_of, H, encoder))
        timings["recall_s"] = round(time.time() - t, 2)
        log.info("score: %s index recall@%d = %s on %d users", sc.index, sc.k, index_info["recall_at_k"],
                 index_info["sample_users"])

    # ---- per-run data and the broadcasts
    t = time.time()
    step("broadcast")
    source_idx = vocabs["source"].index("candidate") if "candidate" in vocabs["source"].values else \
        2 + S.CANDIDATE_SOURCES.index("candidate")
    run = RunData(k=sc.k, n=sc.n, batch_size=sc.batch_size, threads=sc.threads_per_task,
                  video_ids=np.array([None, None, *vocabs["video"].values], dtype=object), popular=None,
                  as_of=as_of, video_meta=meta, source_idx=source_idx, affinity=ranker_md is not None,
                  order=serving_order(cfg.ranker.objective, cfg.ranker.blend_weight, ranker_md.meta)
                  if ranker_md is not None else ServingOrder(),
                  history_length=H, encoder=encoder, n_videos=V, rules=rules, impressions=impressions,
                  ranker_calibration=ranker_md.meta.get("calibration") if ranker_md is not None else None)
    key = "|".join([md.version, ranker_md.version if ranker_md else "-", repr(index_info), str(sc.threads_per_task)])
    bundle = Bundle(key=key, candidate_config=model.config.to_dict(), candidate_quantiles=model.norm.to_dict(),
                    candidate_weights=state_bytes(md), index=ix.serialize(index) if index is not None else b"",
                    index_kind=sc.index,
                    ranker_config=ranker_cfg, ranker_quantiles=ranker_q,
                    ranker_weights=state_bytes(ranker_md) if ranker_md else None,
                    ranker_version=ranker_md.version if ranker_md else None,
                    covisit_arrays=covisit.arrays() if covisit is not None else None,
                    covisit_meta=covisit.meta() if covisit is not None else None)
    ssc = spark.sparkContext
    bundle_bc, run_bc = ssc.broadcast(bundle), ssc.broadcast(run)
    builds = ssc.accumulator(0)
    tally = ssc.accumulator(Tally(), TallyParam())
    timings["broadcast_s"] = round(time.time() - t, 2)

    # ---- one pass: serving columns, retrieval, ranking, top N, written as it goes
    t = time.time()
    step("score_write")
    fn = partition_fn(key, bundle_bc, run_bc, tally, lambda: builds.add(1), fail_partition)
    scored = sort_by_user(events, ROW_ORDER, parts).mapInArrow(fn, SCORED_SCHEMA).select(
        *SCORED_SCHEMA.names, F.lit(md.version).alias(MODEL_VERSION), F.lit(run_date).alias(RUN_DATE))
    final = f"{out_root.rstrip('/')}/recommendations/{RUN_DATE}={run_date}"
    try:
        with storage.atomic_dir(spark, final) as tmp:
            scored.write.parquet(tmp)
            timings["score_write_s"] = round(time.time() - t, 2)
            tv: Tally = tally.value
            if tv.cold_ids is not None and len(tv.cold_ids):
                t = time.time()
                step("fallback")
                _write_fallback(spark, tmp, tv, V, run, sc.demographic_list, md.version, run_date)
                timings["fallback_s"] = round(time.time() - t, 2)
            step("summary")
            summary = _summary(tv, V - 2)
            n_users, n_cold = tv.users, tv.cold
            timings["task_s"] = {s_: round(float((tv.seconds or {}).get(s_, 0.0)), 2) for s_ in STEPS}
            timings["total_s"] = round(time.time() - t0, 2)
            manifest = {
                "manifest_version": MANIFEST_VERSION,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "run_date": run_date, "as_of": as_of, "prepared": prepared_dir,
                "model_version": md.version, "model_dir": str(md.path),
                "ranker_version": ranker_md.version if ranker_md else None,
                "ranker_dir": str(ranker_md.path) if ranker_md else None,
                "path": final, "users": n_users, "cold_users": n_cold, **summary,
                "users_per_s": round(n_users / max(timings["total_s"], 1e-9), 1),
                "k": sc.k, "n": sc.n, "index": index_info,
                "covisit_weight": covisit.weight if covisit is not None else 0.0, "model_builds": int(builds.value),
                "partitions": parts, "timings": timings, "config": {"score": cfg.to_dict()["score"]},
                "order": {"objective": run.order.objective, "retrieval_weight": run.order.weight},
                "rules": _rules_summary(rules, tv), "table": sc.table or None, "impression_features": impressions,
            }
            if summary["users_with_list"] != n_users:
                log.warning("score: %d of %d users got no list (catalogue smaller than their watched set?)",
                            n_users - summary["users_with_list"], n_users)
            storage.write_json(spark, f"{tmp}/{MANIFEST_FILE}", manifest)
            storage.write_text(spark, f"{tmp}/_SUCCESS", "")
    finally:
        bundle_bc.unpersist()
        run_bc.unpersist()
    if sc.table:
        step("table")
        try:
            info = publish_partition(spark, sc.table, RECOMMENDATIONS_SCHEMA, f"{out_root.rstrip('/')}/recommendations",
                                     run_date, final)
        except Exception as e:
            raise RuntimeError(f"score: {final} was published, but registering it as partition {RUN_DATE}="
                               f"{run_date} of score.table '{sc.table}' failed: {e}") from e
        log.info("score: table %s partition %s %s", sc.table, info["partition"],
                 "replaced" if info["replaced"] else "added")
    step("done")
    log.info("score wrote %s: %d users, %d rows in %.1fs", final, n_users, summary["rows"], timings["total_s"])
    return manifest
