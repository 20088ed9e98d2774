"""Baselines on the same split as the model: popularity and Spark MLlib ALS (implicit feedback).

What each baseline is fitted on (see ``protocol``): for the validation target,
the training watches of every user; for the test target, the training and
validation watches. Targets and anything after them are never fitted.

* :func:`popularity_topk`: videos by watch count over the split's fit
  watches (``EvalSet.item_counts``; ties by lower index), seen excluded.
* :func:`als_topk`: ``pyspark.ml.recommendation.ALS(implicitPrefs=True)`` on
  the user x video watch counts of the split's fit watches; the top K is
  computed exactly in numpy from the collected factor matrices (chunked
  scores, seen masked, ``argpartition``). Users without factors get the
  popularity list; videos without factors rank after every scored video.
* :func:`tune_als`: the grid fitted on the validation fit watches (up to
  ``evaluate.als_parallelism`` points at once) and
  scored on the validation target (HR@10 by default); the job then refits
  the chosen parameters on the test fit watches for the test target.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from pyspark import StorageLevel
from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ytspark import schema as S
from ytspark.evaluate.metrics import ranking_metrics
from ytspark.evaluate.protocol import COUNT, EvalSet, fit_watches
from ytspark.evaluate.retrieval import topk_excluding

log = logging.getLogger(__name__)

UNSCORED = -1e30  # videos ALS never saw: after every scored video, still recommendable


def popularity_scores(item_counts: np.ndarray) -> np.ndarray:
    """float64 [n_items]: count minus index / (n_items + 1), a strict order (count desc, index asc)."""
    n = len(item_counts)
    return item_counts.astype(np.float64) - np.arange(n) / (n + 1.0)


def popularity_topk(evalset: EvalSet, k: int, chunk_users: int = 1024) -> np.ndarray:
    """int64 [B, k]: the most watched videos of the split's fit watches that each user has not seen."""
    scores = popularity_scores(evalset.item_counts)
    return topk_excluding(lambda a, b: np.broadcast_to(scores, (b - a, len(scores))), evalset, k, chunk_users)


@dataclass(frozen=True)
class AlsParams:
    """One point of the ALS grid; the grid and its defaults are EvaluateConfig.als_* (ytspark.config)."""
    rank: int
    reg_param: float
    alpha: float
    max_iter: int
    seed: int


def als_grid(ranks: Sequence[int], reg_params: Sequence[float], alphas: Sequence[float],
             max_iter: int, seed: int) -> list[AlsParams]:
    """Every combination, in (rank, reg_param, alpha) order."""
    points = itertools.product(ranks, reg_params, alphas)
    return [AlsParams(r, float(g), float(a), max_iter, seed) for r, g, a in points]


@dataclass
class AlsFactors:
    """Collected factors: ``user_ids`` [U] with ``users`` [U, r]; ``items`` [n_items, r] (row = video index)."""

    user_ids: np.ndarray
    users: np.ndarray
    items: np.ndarray
    has_item: np.ndarray


def indexed_interactions(fit: DataFrame) -> DataFrame:
    """``fit_watches`` rows with a dense integer ``user_idx`` (users sorted by id), as ALS needs."""
    # zipWithIndex over the sorted ids: a global row_number() window would pull every user into one partition
    ids = fit.select(S.USER_ID).distinct().orderBy(S.USER_ID)
    users = ids.rdd.zipWithIndex().map(lambda r: (r[0][0], r[1])).toDF(
        T.StructType([ids.schema[S.USER_ID], T.StructField(S.USER_IDX, T.LongType(), False)])
    ).withColumn(S.USER_IDX, F.col(S.USER_IDX).cast("int"))
    return fit.join(users, S.USER_ID).select(
        S.USER_ID, S.USER_IDX, F.col(S.VIDEO_IDX).cast("int"), F.col(COUNT).cast("float"))


def fit_als(interactions: DataFrame, n_items: int, p: AlsParams, blocks: int = 4) -> AlsFactors:
    """Fit implicit ALS on ``indexed_interactions`` rows and collect both factor matrices."""
    als = ALS(rank=p.rank, regParam=p.reg_param, alpha=p.alpha, maxIter=p.max_iter, seed=p.seed,
              implicitPrefs=True, userCol=S.USER_IDX, itemCol=S.VIDEO_IDX, ratingCol=COUNT,
              numUserBlocks=blocks, numItemBlocks=blocks, nonnegative=False)
    model = als.fit(interactions)
    users = interactions.select(S.USER_ID, S.USER_IDX).distinct()
    uf = model.userFactors.join(users, model.userFactors["id"] == users[S.USER_IDX]).select(
        S.USER_ID, "features").toPandas()
    itf = model.itemFactors.toPandas()
    items = np.zeros((n_items, p.rank), np.float32)
    has = np.zeros(n_items, bool)
    if len(itf):
        ids = itf["id"].to_numpy(np.int64)
        items[ids] = np.stack(itf["features"].to_numpy()).astype(np.float32)
        has[ids] = True
    users_m = np.stack(uf["features"].to_numpy()).astype(np.float32) if len(uf) else np.zeros((0, p.rank), np.float32)
    return AlsFactors(uf[S.USER_ID].to_numpy(object), users_m, items, has)


def als_score_block(f: AlsFactors, evalset: EvalSet):
    """(``score_block(a, b)`` of ALS for ``evalset``'s users: u·v, videos without factors UNSCORED, users
    without factors the popularity scores; the number of those users)."""
    pos = {u: i for i, u in enumerate(f.user_ids)}
    row = np.fromiter((pos.get(u, -1) for u in evalset.user_ids), np.int64, len(evalset))
    cold = row < 0
    pop = popularity_scores(evalset.item_counts)
    items_t = f.items.T.astype(np.float64)

    def block(a: int, b: int) -> np.ndarray:
        r = row[a:b]
        s = f.users[np.maximum(r, 0)].astype(np.float64) @ items_t
        s[:, ~f.has_item] = UNSCORED
        s[cold[a:b]] = pop
        return s

    return block, int(cold.sum())


def als_factor_topk(f: AlsFactors, evalset: EvalSet, k: int, chunk_users: int = 1024) -> tuple[np.ndarray, int]:
    """(int64 [B, k] top-K from the factors, number of users without factors who got the popularity list)."""
    block, n_cold = als_score_block(f, evalset)
    return topk_excluding(block, evalset, k, chunk_users), n_cold


def als_topk(spark: SparkSession, prepared_dir: str, evalset: EvalSet, k: int, params: AlsParams,
             chunk_users: int = 1024, interactions: DataFrame | None = None
             ) -> tuple[np.ndarray, dict, AlsFactors]:
    """Fit ALS on the fit watches of ``evalset.split`` and return (top-K [B, k], info with timings, factors).

    ``interactions`` (``indexed_interactions`` of that split) may be passed
    to reuse a cached frame across a grid.
    """
    inter = interactions if interactions is not None else indexed_interactions(
        fit_watches(spark, prepared_dir, evalset.split))
    t0 = time.time()
    factors = fit_als(inter, evalset.n_items, params)
    t1 = time.time()
    topk, n_cold = als_factor_topk(factors, evalset, k, chunk_users)
    t2 = time.time()
    info = {**asdict(params), "fit_s": round(t1 - t0, 2), "retrieval_s": round(t2 - t1, 2), "cold_users": n_cold}
    return topk, info, factors


def tune_als(spark: SparkSession, prepared_dir: str, val_set: EvalSet, grid: Sequence[AlsParams], k: int,
             ks: Sequence[int] = (10, 50, 100), select: str = "hr@10",
             chunk_users: int = 1024, parallelism: int = 1) -> tuple[AlsParams, list[dict], np.ndarray]:
    """Fit every grid point on the validation fit watches; pick the best ``select`` on the validation target.

    ``parallelism``: grid points fitted at once, each from its own driver thread (Spark runs their jobs
    side by side, as ``pyspark.ml.tuning.CrossValidator(parallelism=)`` does); every fit is seeded, so the
    figures and the choice are those of one-at-a-time fitting.

    Returns (chosen params, one row per grid point in grid order with its validation
    metrics and timings, the chosen point's validation top-K). Ties keep
    the earlier grid point.
    """
    if val_set.split != "val":
        raise ValueError(f"tune_als: tune on the validation set, got the '{val_set.split}' set")
    if not grid:
        raise ValueError("tune_als: the ALS grid is empty; set evaluate.als_ranks/als_reg_params/als_alphas")
    if select not in {f"{m}@{x}" for x in ks for m in ("hr", "ndcg")} | {"mrr"}:
        raise ValueError(f"tune_als: selection metric '{select}' is not computed with ks={tuple(ks)}")
    if parallelism < 1:
        raise ValueError(f"tune_als: parallelism must be >= 1 (evaluate.als_parallelism), got {parallelism}")
    inter = indexed_interactions(fit_watches(spark, prepared_dir, "val")).persist(StorageLevel.MEMORY_AND_DISK)
    lock = threading.Lock()
    best: list = [None]  # (metric, -grid index, params, top-K): only the best point's lists are kept

    def fit(i: int, p: AlsParams) -> dict:
        topk, info, _ = als_topk(spark, prepared_dir, val_set, k, p, chunk_users, inter)
        m = ranking_metrics(topk, val_set, ks, system="als")
        log.info("ALS %s: val %s=%.4f (fit %.1fs)", p, select, m[select], info["fit_s"])
        with lock:
            if best[0] is None or (m[select], -i) > best[0][:2]:
                best[0] = (m[select], -i, p, topk)
        return {**info, **{key: m[key] for key in (select, *[f"hr@{x}" for x in ks], f"ndcg@{ks[0]}")}}

    try:
        inter.count()
        with ThreadPoolExecutor(max_workers=min(parallelism, len(grid)), thread_name_prefix="als") as pool:
            rows = list(pool.map(fit, range(len(grid)), grid))
    finally:
        inter.unpersist()
    return best[0][2], rows, best[0][3]
