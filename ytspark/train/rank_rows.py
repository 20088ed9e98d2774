"""The rows the ranking network trains on, scored by the candidate model as serving scores them.

Serving ranks the candidate model's retrievals and feeds the ranker their
logit u·v+b as ``retrieval_score`` and the ``candidate`` source. Prepared
ranking rows cannot hold that score (no candidate model exists at prepare
time), so before training :func:`build_rank_rows` writes
``<models>/ranker/_rows`` from the prepared events with a Spark pass over
whole users (``mapInArrow``):

- logs with impressions: prepare's ranking rows
  (:func:`~ytspark.prepare.batch_ranking.batch_ranking_rows`), each with the
  candidate model's logit of the impression video for the user's candidate
  inputs *as of the impression* (:func:`~ytspark.features.asof.candidate_inputs_at`:
  only events strictly before it, example age 0) and ``source`` =
  ``candidate``: exactly what scoring builds for that user and video then
  (the impressions that see the same events are one query when the model's
  does not read the clock: :func:`~ytspark.features.asof.distinct_queries`);
- logs without impressions: :func:`~ytspark.prepare.batch_negatives.candidate_negative_rows`
  (the watched label as the clicked row, retrieved-but-unwatched videos as unclicked ones).

With logged impressions, the training impressions of a hashed
``ranker.calibration_share`` of the users go to ``calibration`` instead of
``train``: never trained on, they fit the served score's map to watch seconds
(:mod:`ytspark.models.score_calibration`). The validation impressions cannot
serve: they lie between a user's last two watches, so at most one click can
follow them, and their click rate is about a third of the log's.

It also fits the quantile boundaries of every continuous feature on these
training rows (the retrieval score's included), stored with the ranker. The
directory is reused while the prepared data, candidate model and settings are
the same.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
import pyarrow as pa
import torch
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from ytspark import schema as S
from ytspark import storage
from ytspark.config import Config
from ytspark.features.asof import Events, distinct_queries, inputs_at
from ytspark.features.events import TOKENS
from ytspark.features.params import CandidateParams, RankingParams
from ytspark.models.covisit import CoVisitation, load_covisitation
from ytspark.prepare.batch_negatives import candidate_negative_rows
from ytspark.prepare.batch_ranking import batch_ranking_rows
from ytspark.schema import KIND_IMPRESSION, RANKING_ARROW_SCHEMA

log = logging.getLogger(__name__)

ROWS_VERSION = 5  # 2: candidate negatives only where the label was retrieved; 3: full held-out slates;
#                  4: retrieval by the fused co-visitation score; 5: the calibration users' split
INPUT = (S.USER_ID, S.TS, "kind", S.EVENT_SEQ, S.VIDEO_IDX, TOKENS, "completed", S.USER_AGE, *S.DEMOGRAPHIC_COLUMNS,
         S.CLICKED, S.WATCH_SECONDS, S.UPLOAD_TS, S.RANK_CHANNEL, S.RANK_CATEGORY, S.RANK_VIDEO_LANGUAGE)
SCORE_CHUNK = 4096
_SCORERS: dict[str, "CandidateScorer"] = {}


class CandidateScorer:
    """The candidate model's retrieval scores for candidate input columns (serving semantics: example age 0):
    u·v+b, plus the fused co-visitation term when the model has one (:mod:`ytspark.models.covisit`)."""

    def __init__(self, model, covisit: CoVisitation | None = None):
        self.model = model.eval()
        self.V = model.video_embeddings().numpy()
        self.b = model.video_biases().numpy()
        self.covisit = covisit

    @torch.no_grad()
    def user_vectors(self, cols: dict) -> np.ndarray:
        """[n, D] float32 user vectors of n rows of candidate input columns."""
        from ytspark.models.features import batch_from_numpy

        n = len(cols[S.CAND_N_WATCHES])
        # the sequence encoder attends over the chunk's longest history: chunks of similar lengths
        order = np.argsort(np.asarray(cols[S.CAND_N_WATCHES]), kind="stable") \
            if self.model.config.encoder == "sequence" else np.arange(n)
        parts = [self.model.query_vector(batch_from_numpy({k: v[order[a:a + SCORE_CHUNK]] for k, v in cols.items()},
                                                         serving=True)).numpy()
                 for a in range(0, n, SCORE_CHUNK)]
        out = np.zeros((n, self.V.shape[1]), np.float32)
        if parts:
            out[order] = np.concatenate(parts)
        return out

    def logits(self, cols: dict) -> np.ndarray:
        """[n, V] scores over the whole catalogue (ids 0 and 1 included; callers exclude them)."""
        out = self.user_vectors(cols) @ self.V.T + self.b
        if self.covisit is not None:
            out += self.covisit.dense(cols[S.CAND_WATCH_HIST])
        return out

    def pair_logits(self, cols: dict, video: np.ndarray, query: np.ndarray | None = None) -> np.ndarray:
        """[n] logit of video[i] for query row i, or for query row ``query[i]`` when given (queries shared by
        several pairs are encoded once)."""
        u = self.user_vectors(cols)
        if query is not None:
            u = u[query]
        v = np.asarray(video, np.int64)
        out = ((u * self.V[v]).sum(axis=1) + self.b[v]).astype(np.float32)
        if self.covisit is not None:
            out += self.covisit.pairs(cols[S.CAND_WATCH_HIST], v, query)
        return out


def _scorer(key: str, get: Callable[[], tuple]) -> CandidateScorer:
    """This process's scorer for model ``key``, built once from (config, quantiles, weights bytes,
    co-visitation arrays or None, its MODEL.json entry)."""
    if key not in _SCORERS:
        from ytspark.score.bundle import build_candidate

        torch.set_num_threads(1)
        _SCORERS.clear()
        config, quantiles, weights, cv_arrays, cv_meta = get()
        cv = CoVisitation.from_arrays(cv_arrays, cv_meta) if cv_arrays is not None else None
        _SCORERS[key] = CandidateScorer(build_candidate(config, quantiles, weights), cv)
    return _SCORERS[key]


def scored_impression_rows(batch: pa.Table, cp: CandidateParams, rp: RankingParams, vocab_tokens: pa.Array,
                           scorer: CandidateScorer) -> pa.RecordBatch:
    """Prepare's ranking rows of ``batch`` with retrieval_score = the candidate logit as of each impression."""
    rows = batch_ranking_rows(batch, rp)
    if rows.num_rows == 0:
        return rows
    ii = np.flatnonzero(batch.column("kind").to_numpy() == KIND_IMPRESSION)  # the rows' impressions, in order
    e = Events.of(batch, vocab_tokens)
    # impressions between the same two actions of a user ask the model one question (8x fewer on the default)
    rep, query = (ii, None) if scorer.model.query_reads_time else distinct_queries(e, ii)
    score = scorer.pair_logits(inputs_at(e, rep, cp), rows.column(S.RANK_VIDEO).to_numpy(), query)
    out = {f: rows.column(f) for f in rows.schema.names}
    out["retrieval_score"] = pa.array(score, pa.float32())
    out[S.RANK_SOURCE] = pa.array(np.full(rows.num_rows, rp.source_idx, np.int32), pa.int32())
    return pa.RecordBatch.from_arrays([out[f.name] for f in RANKING_ARROW_SCHEMA], schema=RANKING_ARROW_SCHEMA)


def rows_key(prepared_manifest: dict, candidate_version: str, cfg: Config) -> dict:
    """What the rows depend on: reused only when all of it matches."""
    return {"rows_version": ROWS_VERSION, "prepared_created_at": prepared_manifest.get("created_at"),
            "window_end": prepared_manifest.get("window_end"), "candidate_model": candidate_version,
            "pool": cfg.score.k, "negatives": cfg.ranker.negatives, "seed": cfg.ranker.negatives_seed,
            "hard_negatives": cfg.ranker.hard_negatives, "calibration_share": cfg.ranker.calibration_share}


CALIBRATION_SALT = "ytspark-calibration"


def calibration_users(user_id, share: float):
    """Spark boolean column: the user is one of the ``share`` held out for calibration (a salted hash, so the
    same users on every run and every machine)."""
    bucket = F.pmod(F.xxhash64(F.lit(CALIBRATION_SALT), user_id.cast("string")), F.lit(10_000))
    return bucket < F.lit(int(round(share * 10_000)))


MODES = ("auto", "impressions", "candidate_negatives")


def build_rank_rows(spark: SparkSession, cfg: Config, prepared: str, candidate_model: str, out_dir: str,
                    mode: str = "auto") -> dict:
    """Write scored ranking rows ``out_dir/{train,val,test}`` (and ``calibration``), ``quantiles.json``, ``manifest.json``.

    ``mode``: "impressions" (prepared impressions, scored), "candidate_negatives", or "auto" =
    impressions when the prepared data has training impressions. Returns the manifest: ``mode``,
    row counts per split, the key. Reuses ``out_dir`` when its manifest has the same key.
    """
    from ytspark.features.events import ROW_ORDER
    from ytspark.features.grouping import map_user_batches
    from ytspark.models.export import read_model_dir
    from ytspark.prepare.job import _write_balanced, enrich_events
    from ytspark.prepare.quantiles import fit_quantiles
    from ytspark.score.bundle import state_bytes
    from ytspark.train.data import read_json
    from ytspark.vocab import Vocab

    prepared, out_dir = prepared.rstrip("/"), out_dir.rstrip("/")
    m = read_json(f"{prepared}/manifest.json")
    md = read_model_dir(candidate_model, "candidate")
    if mode not in MODES:
        raise ValueError(f"build_rank_rows: mode must be one of {MODES}, got '{mode}'")
    if cfg.ranker.negatives < 1 or cfg.score.k < 1:
        raise ValueError("ranker.negatives and score.k must be >= 1")
    impressions = int(m["ranking"]["train"]) > 0 if mode == "auto" else mode == "impressions"
    key = {**rows_key(m, md.version, cfg), "mode": "impressions" if impressions else "candidate_negatives"}
    if storage.exists(spark, f"{out_dir}/_SUCCESS"):
        old = storage.read_json(spark, f"{out_dir}/manifest.json")
        if old.get("key") == key:
            log.info("ranking rows: reusing %s (%s)", out_dir, old["rows"])
            return old
    t0 = time.time()
    p = m["config"]["prepare"]
    vocabs = {n: Vocab.load(spark, f"{prepared}/vocab/{n}.json") for n in S.VOCAB_NAMES}
    if md.meta["vocab_sizes"]["video"] != len(vocabs["video"]):
        raise ValueError(f"candidate model {md.path} has {md.meta['vocab_sizes']['video']} videos but {prepared} "
                         f"has {len(vocabs['video'])}: train the candidate model on this prepared directory")
    window_end = float(m.get("window_end") or 0.0)
    cp = CandidateParams(int(p["history_length"]), int(p["max_examples_per_user"]), p["example_sampling"],
                         int(p["seed"]), window_end)
    source = vocabs["source"].index("candidate")
    rp = RankingParams(int(p["history_length"]), source)
    vocab_tokens = pa.array(vocabs["token"].values, pa.string())
    events, users, videos = (spark.read.parquet(f"{prepared}/{t}") for t in ("events", "users", "videos"))
    ev = enrich_events(events, users, videos, vocabs, float(p["completed_fraction"]),
                       time.gmtime(window_end).tm_year, m["tables"]["users"]["accepted"],
                       m["tables"]["videos"]["accepted"]).select(*INPUT)
    cv = load_covisitation(md)
    parts = (dict(md.meta["model_config"]), md.json("quantiles.json"), state_bytes(md),
             cv.arrays() if cv is not None else None, cv.meta() if cv is not None else None)
    bc = spark.sparkContext.broadcast(parts)
    mkey = f"{md.path}:{md.version}"
    if impressions:
        def fn(t: pa.Table) -> pa.RecordBatch:
            return scored_impression_rows(t, cp, rp, vocab_tokens, _scorer(mkey, lambda: bc.value))
    else:
        from ytspark.score.job import _video_meta

        meta = _video_meta(spark, prepared, vocabs)
        pool, neg, seed, hard = cfg.score.k, cfg.ranker.negatives, cfg.ranker.negatives_seed, \
            cfg.ranker.hard_negatives

        def fn(t: pa.Table) -> pa.RecordBatch:
            return candidate_negative_rows(t, cp, rp, vocab_tokens, _scorer(mkey, lambda: bc.value).logits,
                                           pool, neg, meta, seed, hard)
    rows = map_user_batches(ev, fn, S.RANKING_SCHEMA, ROW_ORDER)
    share = cfg.ranker.calibration_share if impressions else 0.0
    splits = (*S.SPLITS, S.CALIBRATION) if share > 0 else S.SPLITS
    if share > 0:
        held = (F.col(S.SPLIT) == "train") & calibration_users(F.col(S.USER_ID), share)
        rows = rows.withColumn(S.SPLIT, F.when(held, F.lit(S.CALIBRATION)).otherwise(F.col(S.SPLIT)))
    with storage.atomic_dir(spark, out_dir) as tmp:
        # every split at once, deleted before the publish ("_all" read as a hidden path: Spark warned of it)
        rows.write.parquet(f"{tmp}/all_splits")
        allr = spark.read.parquet(f"{tmp}/all_splits")
        counts = {r[S.SPLIT]: int(r["count"]) for r in allr.groupBy(S.SPLIT).count().collect()}
        counts = {s: counts.get(s, 0) for s in splits}
        if counts["train"] == 0:
            raise ValueError(f"no ranking rows for training from {prepared}: it has no impressions and no "
                             "candidate training labels (each user needs 3+ watches)")
        for split in splits:
            _write_balanced(allr.where(F.col(S.SPLIT) == split), f"{tmp}/{split}", counts[split],
                            int(p["target_shards"]), int(p["row_groups_per_shard"]) if split == "train" else 1)
        quantiles = fit_quantiles(spark.read.parquet(f"{tmp}/train"), S.RANK_CONTINUOUS, int(p["quantiles"]),
                                  float(p.get("quantile_rel_error", 0.001)))
        storage.delete(spark, f"{tmp}/all_splits")
        manifest = {"key": key, "mode": "impressions" if impressions else "candidate_negatives", "rows": counts,
                    "prepared": prepared, "candidate_model": str(md.path), "seconds": round(time.time() - t0, 1)}
        storage.write_json(spark, f"{tmp}/quantiles.json", {"ranking": quantiles})
        storage.write_json(spark, f"{tmp}/manifest.json", manifest)
        storage.write_text(spark, f"{tmp}/_SUCCESS", "")
    bc.unpersist()
    log.info("ranking rows (%s): %s in %.1fs -> %s", manifest["mode"], counts, time.time() - t0, out_dir)
    return manifest
