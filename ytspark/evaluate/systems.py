"""Our own systems as evaluation entries: the candidate model alone, and candidate + ranking.

``ranked_topk(spark, ..., evalset, k, retrieve_k)`` is the nightly scoring
path at each user's target time: the candidate model's top ``retrieve_k``
(``score.k``) over the whole catalogue, seen excluded, rescored by the
ranking network (expected watch time) with the features scoring builds
(:class:`ytspark.score.rank.TorchRanker`): the user's channel and category
watch counts and recency computed in Spark from the watches strictly before
the target, video age at the target time.

``candidate_topk(model_dir, prepared_dir, evalset, k)`` computes user vectors
from the split's candidate rows (the same inputs the model trained on, example
age 0 as at serving), scores the whole catalogue with the exported
``u · v + b`` plus the model's fused co-visitation term
(:mod:`ytspark.models.covisit`; ``covisit=False`` leaves it out), excludes the user's seen videos and keeps the K best: lists in
``evalset.user_ids`` order for :func:`ytspark.evaluate.job.add_system`.
"""
from __future__ import annotations

import numpy as np
import torch

from ytspark import schema as S
from ytspark.evaluate.impressions import HeldOut
from ytspark.evaluate.protocol import EvalSet
from ytspark.evaluate.retrieval import topk_excluding
from ytspark.models.blend import ServingOrder, serving_order
from ytspark.models.covisit import CoVisitation, load_covisitation
from ytspark.models.export import load_candidate, load_ranker, read_model_dir
from ytspark.models.features import batch_from_numpy
from ytspark.rows import candidate_split


@torch.no_grad()
def candidate_user_vectors(model_dir: str, prepared_dir: str, evalset: EvalSet, with_rows: bool = False):
    """(model, u [B, D]) for ``evalset``'s users (rows in its order) from the split's candidate rows;
    ``with_rows``: (model, u, rows) with the aligned candidate-row columns."""
    model, md = load_candidate(model_dir)
    if md.meta["vocab_sizes"]["video"] != evalset.n_items:
        raise ValueError(f"candidate model {md.path} has {md.meta['vocab_sizes']['video']} videos but "
                         f"{prepared_dir} has {evalset.n_items}: evaluate a model trained on this prepared data")
    cols = candidate_split(prepared_dir, evalset.split)
    cols = {k: evalset.align(cols[S.USER_ID], v) for k, v in cols.items()}
    parts = [model.query_vector(batch_from_numpy({k: v[lo:lo + 4096] for k, v in cols.items()}, serving=True))
             for lo in range(0, len(evalset), 4096)]
    u = torch.cat(parts) if parts else torch.zeros(0, model.config.embed_dim)
    return (model, u, cols) if with_rows else (model, u)


def retrieval_scores(model, u: torch.Tensor, cols: dict, covisit: CoVisitation | None):
    """``score_block(a, b)`` of the candidate stage as served: u·v+b, plus the co-visitation term when fused."""
    hist = np.asarray(cols[S.CAND_WATCH_HIST], np.int64)

    def block(a: int, b: int) -> np.ndarray:
        logits = model.logits_full(u[a:b]).numpy()
        return logits if covisit is None else logits + covisit.dense(hist[a:b])
    return block


@torch.no_grad()
def candidate_topk(model_dir: str, prepared_dir: str, evalset: EvalSet, k: int, covisit: bool = True,
                   held: HeldOut | None = None):
    """int64 [B, k] top-K of the candidate model over the whole catalogue, seen videos excluded
    (with its fused co-visitation source, as served; ``covisit=False``: the network alone). With ``held``:
    (top-K, float64 [N] the same scores of the held-out impressions)."""
    model, u, cols = candidate_user_vectors(model_dir, prepared_dir, evalset, with_rows=True)
    cv = load_covisitation(read_model_dir(model_dir, "candidate")) if covisit else None
    block = retrieval_scores(model, u, cols, cv)
    top = topk_excluding(block, evalset, k)
    return top if held is None else (top, held.scores(block, len(evalset)))


def _affinity_block(spark, prepared_dir: str, vocabs: dict, user_ids: np.ndarray, as_of: np.ndarray) -> dict:
    """"channel"/"category" -> :class:`Csr` of each user's watches strictly before their own ``as_of``
    (:func:`~ytspark.features.asof.per_user_groups`, serving's definition)."""
    from pyspark.sql import functions as F

    from ytspark.features.asof import per_user_groups
    from ytspark.features.events import video_features
    from ytspark.score.features import AFFINITY_GROUPS
    from ytspark.score.rank import Csr

    cut = spark.createDataFrame([(str(u), i, float(t)) for i, (u, t) in enumerate(zip(user_ids, as_of))],
                                [S.USER_ID, "user_no", "as_of"])
    ev = spark.read.parquet(f"{prepared_dir}/events").where(F.col(S.EVENT_TYPE) == "watch") \
        .join(F.broadcast(cut), S.USER_ID).where(F.col(S.EVENT_TS) < F.col("as_of"))
    vfeat = video_features(spark.read.parquet(f"{prepared_dir}/videos"), vocabs)
    w = ev.join(vfeat.select(S.VIDEO_ID, S.RANK_CHANNEL, S.RANK_CATEGORY), S.VIDEO_ID, "left") \
        .fillna({S.RANK_CHANNEL: S.OOV, S.RANK_CATEGORY: S.OOV})
    out = {}
    for g, col in zip(AFFINITY_GROUPS, (S.RANK_CHANNEL, S.RANK_CATEGORY)):
        # counted in Spark per (user, channel/category): only the groups reach the driver, not the watches
        a = w.groupBy("user_no", col).agg(F.count(F.lit(1)).alias("n"),
                                           F.max(F.col(S.EVENT_TS).cast("double")).alias("last")).toPandas()
        off, ids, cnt, days = per_user_groups(a["user_no"].to_numpy(np.int64), a[col].to_numpy(np.int64),
                                              a["last"].to_numpy(np.float64), len(user_ids),
                                              np.asarray(as_of, np.float64), weight=a["n"].to_numpy())
        out[g] = Csr(off, ids, cnt, days)
    return out


def _impression_block(spark, prepared_dir: str, vocabs: dict, user_ids: np.ndarray, as_of: np.ndarray):
    """:class:`Csr` (with flag) of each user's videos shown before their own request time and the ranker's
    impression features then (:func:`ytspark.features.history.impression_history`, the definition of
    the training rows and of serving); None when the log has no impressions.

    The request time is the start of the target's UTC day: the cut-off of the nightly table served that
    day. Impressions later than that belong to the visits that lead to the target, the target's own clicked
    impression among them (a slate's impressions are logged before its watches), which a list computed
    before those visits cannot have seen; with the target time itself as cut-off the ranker reads the
    label from its click (measured on the embedded default: candidate + ranking HR@10 0.42 against 0.27
    for the candidate stage alone; 0.35 with the user's previous watch as cut-off, whose visit may hold the
    target's impression too)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from ytspark.features.history import impression_history
    from ytspark.schema import DAY
    from ytspark.score.rank import Csr
    from ytspark.vocab import apply_vocab

    row = {str(u): i for i, u in enumerate(user_ids)}
    request = np.floor(np.asarray(as_of, np.float64) / DAY) * DAY
    events = spark.read.parquet(f"{prepared_dir}/events")
    cut = spark.createDataFrame([(str(u), float(t)) for u, t in zip(user_ids, request)],
                                T.StructType([T.StructField(S.USER_ID, T.StringType()),
                                              T.StructField("as_of", T.DoubleType())]))
    ev = events.where(F.col(S.EVENT_TYPE) == "impression") \
        .join(F.broadcast(cut), S.USER_ID).where(F.col(S.EVENT_TS) < F.col("as_of"))
    ev = apply_vocab(ev, vocabs["video"], S.VIDEO_ID, S.VIDEO_IDX).where(F.col(S.VIDEO_IDX) >= 2)
    t = ev.select(S.USER_ID, S.VIDEO_IDX, F.col(S.EVENT_TS).cast("double").alias("ts"),
                  F.coalesce(F.col(S.CLICKED).cast("int"), F.lit(0)).alias(S.CLICKED)).toPandas()
    if t.empty:
        return None
    V = len(vocabs["video"])
    r = t[S.USER_ID].map(row).to_numpy(np.int64)
    key = r * V + t[S.VIDEO_IDX].to_numpy(np.int64)
    q = np.unique(key)
    # the features as of the request time (days since the last impression counted up to it)
    count, since, flag = impression_history(key, t["ts"].to_numpy(np.float64), t[S.CLICKED].to_numpy(), q,
                                            request[q // V])
    offsets = np.concatenate([[0], np.cumsum(np.bincount(q // V, minlength=len(user_ids)))]).astype(np.int64)
    return Csr(offsets, q % V, count, since, flag)


class RankedCandidates:
    """The candidate model's top ``retrieve_k`` per user (seen excluded), scored once by the ranking network
    with the features scoring builds as of each target (:func:`ranked_candidates`); :meth:`topk` orders them
    by any :class:`ServingOrder` without scoring again, :meth:`impression_keys` scores held-out impressions."""

    def __init__(self, evalset: EvalSet, cand: np.ndarray, logits: np.ndarray, score: np.ndarray, scorer, users,
                 block, meta: dict):
        self.evalset, self.cand, self.logits, self.score = evalset, cand, logits, score
        self.scorer, self.users, self.block, self.meta = scorer, users, block, meta

    def order(self, objective: str = "blend", blend_weight: float = -1.0) -> ServingOrder:
        """The order of ``ranker.objective`` / ``ranker.blend_weight`` for this ranker (its MODEL.json)."""
        return serving_order(objective, blend_weight, self.meta)

    def topk(self, order: ServingOrder, k: int) -> np.ndarray:
        """int64 [B, k]: the candidates in ``order`` (pad 0 where a user has fewer)."""
        self.scorer.order = order
        key = self.scorer.order_key(self.score, self.logits)  # pad slots (0) -inf
        best = np.argsort(-key, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(self.cand, best, axis=1)
        return np.where(np.take_along_axis(key, best, axis=1) > -np.inf, top, 0)

    @torch.no_grad()
    def impression_keys(self, held: HeldOut, order: ServingOrder) -> np.ndarray:
        """float64 [N]: the serving key in ``order`` of each held-out impression, with the same features."""
        n = len(self.evalset)
        shown, at = held.matrix(n)
        ret = np.zeros(shown.shape, np.float32)
        for a in range(0, n, 1024):
            ret[a:a + 1024] = np.take_along_axis(self.block(a, min(a + 1024, n)), shown[a:a + 1024], 1)
        self.scorer.order = order
        return self.scorer.order_key(self.scorer.score(self.users, shown, ret), ret).ravel()[at].astype(np.float64)


@torch.no_grad()
def ranked_candidates(spark, model_dir: str, ranker_dir: str, prepared_dir: str, evalset: EvalSet,
                      retrieve_k: int) -> RankedCandidates:
    """The nightly scoring path at each user's target time, up to the order (module docstring)."""
    from ytspark.rows import read_split
    from ytspark.score.job import _video_meta, _vocabs
    from ytspark.score.rank import TorchRanker, UserBlock

    model, u, cols = candidate_user_vectors(model_dir, prepared_dir, evalset, with_rows=True)
    block = retrieval_scores(model, u, cols, load_covisitation(read_model_dir(model_dir, "candidate")))
    cand = topk_excluding(block, evalset, retrieve_k)
    logits = np.zeros(cand.shape, np.float32)
    for a in range(0, len(evalset), 1024):
        logits[a:a + 1024] = np.take_along_axis(block(a, min(a + 1024, len(evalset))), cand[a:a + 1024], 1)
    ranker, rmd = load_ranker(ranker_dir)
    vocabs = _vocabs(spark, prepared_dir, read_model_dir(model_dir, "candidate"), rmd)
    ts = read_split(f"{prepared_dir.rstrip('/')}/candidates/{evalset.split}", [S.USER_ID, S.CAND_LABEL_TS])
    as_of = evalset.align(ts[S.USER_ID], np.asarray(ts[S.CAND_LABEL_TS], np.float64))
    users = UserBlock(np.asarray(cols[S.CAND_WATCH_HIST], np.int64), np.asarray(cols["language_idx"], np.int64),
                      np.asarray(cols[S.CAND_SINCE_LAST], np.float32),
                      _affinity_block(spark, prepared_dir, vocabs, evalset.user_ids, as_of), as_of,
                      _impression_block(spark, prepared_dir, vocabs, evalset.user_ids, as_of))
    source_idx = vocabs["source"].index("candidate") if "candidate" in vocabs["source"].values else \
        2 + S.CANDIDATE_SOURCES.index("candidate")
    scorer = TorchRanker(ranker, _video_meta(spark, prepared_dir, vocabs), 0.0, source_idx)
    return RankedCandidates(evalset, cand, logits, scorer.score(users, cand, logits), scorer, users, block, rmd.meta)


def ranked_topk(spark, model_dir: str, ranker_dir: str, prepared_dir: str, evalset: EvalSet, k: int,
                retrieve_k: int, order: ServingOrder | None = None, objective: str = "blend",
                blend_weight: float = -1.0, held: HeldOut | None = None):
    """int64 [B, k]: the candidate model's top ``retrieve_k`` (seen excluded) reordered by the ranking network,
    in the serving order of ``objective`` and ``blend_weight`` (``ranker.objective``, ``ranker.blend_weight``:
    :func:`ytspark.models.blend.serving_order` with the ranker's MODEL.json), or ``order`` when given. With
    ``held``: (top-K, float64 [N] the serving key of each held-out impression, with the same features).
    Several orders of the same candidates: :func:`ranked_candidates` once, then ``.topk(order, k)``."""
    rc = ranked_candidates(spark, model_dir, ranker_dir, prepared_dir, evalset, max(k, retrieve_k))
    order = order if order is not None else rc.order(objective, blend_weight)
    top = rc.topk(order, k)
    return top if held is None else (top, rc.impression_keys(held, order))


@torch.no_grad()
def candidate_calibration(model_dir: str, prepared_dir: str, evalset: EvalSet, k: int = 10,
                          n_bins: int = 10) -> list[tuple[int, float, float, int]]:
    """Reliability of the candidate model's softmax: [(bin, mean predicted P(next watch), observed hit rate, n)].

    Every (user, slot) of each user's top ``k`` (seen excluded) is one
    prediction: the softmax probability over the unseen catalogue, and 1 when
    it is the user's target. Predictions are cut into ``n_bins`` equal bins.
    """
    model, u = candidate_user_vectors(model_dir, prepared_dir, evalset)
    probs, hits = [], []
    for a in range(0, len(evalset), 1024):
        b = min(len(evalset), a + 1024)
        logits = model.logits_full(u[a:b]).double()
        ip = evalset.seen_indptr
        rows = np.repeat(np.arange(b - a), np.diff(ip[a:b + 1]))
        logits[torch.from_numpy(rows), torch.from_numpy(evalset.seen_indices[ip[a]:ip[b]])] = float("-inf")
        p = torch.softmax(logits, dim=1)
        top_p, top_i = p.topk(min(k, p.shape[1]), dim=1)
        probs.append(top_p.numpy().ravel())
        hits.append((top_i.numpy() == evalset.labels[a:b, None]).ravel().astype(np.float64))
    from ytspark.models.rank_metrics import calibration

    return calibration(np.concatenate(probs) if probs else np.zeros(0),
                       np.concatenate(hits) if hits else np.zeros(0), n_bins)
