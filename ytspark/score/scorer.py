"""The per-partition scoring function: serving rows (Arrow) -> top-N rows (Arrow).

For each slice of ``batch_size`` users of a partition: users with a usable
history (a watched video or a search token in the vocabulary) get user vectors
from the candidate tower (example age 0), FAISS retrieves their top-K by exact
logit (folded bias) leaving out already-watched videos (merged with the
co-visitation neighbours of their last watches when the model fuses that
source, :mod:`ytspark.models.covisit`), the optional
:class:`~ytspark.score.rank.Reranker` scores the K candidates, and the top N
are kept (``source="candidate"``); the others get a
:class:`~ytspark.score.fallback.PopularLists` list.

:func:`partition_fn` builds the function that ``mapInArrow`` runs: the models
and the index come from :func:`ytspark.score.bundle.worker_models` (once per
Python worker), the small per-run data (vocabulary, popular lists, video
metadata) from a second broadcast.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import torch
from pyspark.sql import types as T

from ytspark import schema as S
from ytspark.models.candidate import CandidateModel
from ytspark.models.covisit import CoVisitation, merge_topk
from ytspark.models.features import batch_from_numpy
from ytspark.score import index as ix
from ytspark.score.bundle import worker_models
from ytspark.score.fallback import PopularLists
from ytspark.score.features import AFFINITY_GROUPS, SEEN, affinity_columns
from ytspark.score.rank import Csr, Reranker, TorchRanker, UserBlock, VideoMeta

SOURCE_CANDIDATE = "candidate"
RANK, SCORE, RETRIEVAL_SCORE, SOURCE = "rank", "score", "retrieval_score", "source"
MODEL_VERSION, RUN_DATE = "model_version", "run_date"

SCORED_SCHEMA = T.StructType([
    T.StructField(S.USER_ID, T.StringType(), False),
    T.StructField(RANK, T.IntegerType(), False),
    T.StructField(S.VIDEO_ID, T.StringType(), False),
    T.StructField(SCORE, T.FloatType(), False),
    T.StructField(RETRIEVAL_SCORE, T.FloatType(), False),
    T.StructField(SOURCE, T.StringType(), False),
])
RECOMMENDATIONS_SCHEMA = T.StructType(SCORED_SCHEMA.fields + [
    T.StructField(MODEL_VERSION, T.StringType(), False),
    T.StructField(RUN_DATE, T.StringType(), False),
])
_ARROW_SCHEMA = pa.schema([
    pa.field(S.USER_ID, pa.string(), False), pa.field(RANK, pa.int32(), False),
    pa.field(S.VIDEO_ID, pa.string(), False), pa.field(SCORE, pa.float32(), False),
    pa.field(RETRIEVAL_SCORE, pa.float32(), False), pa.field(SOURCE, pa.string(), False),
])


class InjectedFailure(RuntimeError):
    """Raised on purpose by ``fail_partition`` (tests of the atomic write)."""


@dataclass
class RunData:
    """Per-run data every task reads (broadcast): settings, id strings, fallback lists, ranker inputs."""

    k: int
    n: int
    batch_size: int
    threads: int
    video_ids: np.ndarray  # object [V]: vocab value of each idx (None for 0 and 1)
    popular: PopularLists
    as_of: float
    video_meta: VideoMeta | None = None
    source_idx: int = S.OOV
    affinity: bool = False
    retrieval_weight: float = 0.0  # the ranker's serving blend (ytspark.models.blend)


def _matrix(arr: pa.Array, dtype) -> np.ndarray:
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return flat.reshape(len(arr), -1) if len(arr) else flat.reshape(0, 0)


def _csr(arr: pa.Array, dtype) -> tuple[np.ndarray, np.ndarray]:
    offsets = arr.offsets.to_numpy().astype(np.int64)
    return offsets - offsets[0], arr.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def arrow_columns(rb: pa.RecordBatch, affinity: bool = False) -> dict:
    """Serving-row Arrow batch -> numpy columns ([B, H] matrices, CSR pairs for ``seen`` and affinity)."""
    c = {name: rb.column(i) for i, name in enumerate(rb.schema.names)}
    out = {S.USER_ID: c[S.USER_ID].to_numpy(zero_copy_only=False)}
    out[S.CAND_WATCH_HIST] = _matrix(c[S.CAND_WATCH_HIST], np.int64)
    out[S.CAND_WATCH_AGE] = _matrix(c[S.CAND_WATCH_AGE], np.float32)
    out[S.CAND_SEARCH_HIST] = _matrix(c[S.CAND_SEARCH_HIST], np.int64)
    for name in (S.CAND_N_WATCHES, S.CAND_SINCE_LAST, S.USER_AGE, *S.DEMOGRAPHIC_COLUMNS):
        out[name] = c[name].to_numpy(zero_copy_only=False)
    out[SEEN] = _csr(c[SEEN], np.int64)
    if affinity:
        for g in AFFINITY_GROUPS:
            ids, cnt, since = affinity_columns(g)
            off, v = _csr(c[ids], np.int64)
            out[g] = Csr(off, v, _csr(c[cnt], np.float32)[1], _csr(c[since], np.float32)[1])
    return out


def _take(cols: dict, rows: np.ndarray) -> dict:
    """Rows of the dense columns (the ones batch_from_numpy reads)."""
    dense = (S.CAND_WATCH_HIST, S.CAND_WATCH_AGE, S.CAND_SEARCH_HIST, S.CAND_N_WATCHES, S.CAND_SINCE_LAST,
             S.USER_AGE, *S.DEMOGRAPHIC_COLUMNS)
    return {k: cols[k][rows] for k in dense}


def _csr_rows(csr: tuple[np.ndarray, np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    off, vals = csr
    lengths = off[rows + 1] - off[rows]
    parts = [vals[off[r]:off[r + 1]] for r in rows]
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), \
        (np.concatenate(parts) if parts else np.zeros(0, vals.dtype))


@torch.no_grad()
def user_vectors(model: CandidateModel, cols: dict) -> np.ndarray:
    """Folded user vectors [B, D+1] float32 ([u, 1]; example age 0) of serving columns."""
    u = model.user_vector(batch_from_numpy(cols, serving=True))
    return CandidateModel.fold_user(u).numpy().astype(np.float32, copy=False)


def usable_history(cols: dict) -> np.ndarray:
    """[B] bool: a watched video or a search token in the vocabulary (idx >= 2)."""
    return (cols[S.CAND_WATCH_HIST] >= 2).any(axis=1) | (cols[S.CAND_SEARCH_HIST] >= 2).any(axis=1)


def score_users(cols: dict, model: CandidateModel, index, run: RunData,
                ranker: Reranker | None = None, covisit: CoVisitation | None = None,
                table: np.ndarray | None = None) -> pa.RecordBatch:
    """Top-N rows (SCORED_SCHEMA) of the users in ``cols`` (from :func:`arrow_columns`).

    With ``covisit`` (and the folded video ``table``) the retrieval is the fused score's exact top K
    (:func:`ytspark.models.covisit.merge_topk`).
    """
    users = cols[S.USER_ID]
    usable = usable_history(cols)
    out_user, out_rank, out_vid, out_score, out_ret, out_src = [], [], [], [], [], []
    rows = np.flatnonzero(usable)
    if len(rows):
        q = user_vectors(model, _take(cols, rows))
        seen = _csr_rows(cols[SEEN], rows)
        ret, cand = ix.search(index, q, run.k, seen)
        if covisit is not None:  # the ranker reorders all K; without one only the top N are kept
            ret, cand = merge_topk(ret, cand, q, table, cols[S.CAND_WATCH_HIST][rows], seen, covisit,
                                   run.k if ranker is not None else run.n)
        if ranker is not None:
            block = UserBlock(cols[S.CAND_WATCH_HIST], cols[S.RANK_USER_LANGUAGE].astype(np.int64),
                              cols[S.CAND_SINCE_LAST].astype(np.float32),
                              {g: cols[g] for g in AFFINITY_GROUPS if g in cols}).take(rows)
            score = ranker.score(block, cand, ret)
            order = np.argsort(-ranker.order_key(score, ret), axis=1, kind="stable")[:, :run.n]
        else:
            score = ret
            order = np.broadcast_to(np.arange(min(run.n, cand.shape[1])), (len(rows), min(run.n, cand.shape[1])))
        top_c = np.take_along_axis(cand, order, axis=1)
        top_s = np.take_along_axis(score, order, axis=1)
        top_r = np.take_along_axis(ret, order, axis=1)
        valid = top_c >= 2
        r_idx, pos = np.nonzero(valid)
        out_user.append(users[rows][r_idx])
        out_rank.append((np.cumsum(valid, axis=1)[valid]).astype(np.int32))
        out_vid.append(top_c[valid])
        out_score.append(top_s[valid])
        out_ret.append(top_r[valid])
        out_src.append(np.full(len(r_idx), SOURCE_CANDIDATE, dtype=object))
    for r in np.flatnonzero(~usable):
        off, vals = cols[SEEN]
        ids, sc, src = run.popular.recommend(int(cols["country_idx"][r]), int(cols["age_bucket_idx"][r]),
                                             vals[off[r]:off[r + 1]], run.n)
        out_user.append(np.full(len(ids), users[r], dtype=object))
        out_rank.append(np.arange(1, len(ids) + 1, dtype=np.int32))
        out_vid.append(ids)
        out_score.append(sc)
        out_ret.append(sc)
        out_src.append(np.asarray(src, dtype=object))
    if not out_user:
        return pa.RecordBatch.from_pylist([], schema=_ARROW_SCHEMA)
    vid = np.concatenate(out_vid).astype(np.int64)
    return pa.RecordBatch.from_arrays([
        pa.array(np.concatenate(out_user), pa.string()),
        pa.array(np.concatenate(out_rank), pa.int32()),
        pa.array(run.video_ids[vid], pa.string()),
        pa.array(np.concatenate(out_score).astype(np.float32), pa.float32()),
        pa.array(np.concatenate(out_ret).astype(np.float32), pa.float32()),
        pa.array(np.concatenate(out_src), pa.string()),
    ], schema=_ARROW_SCHEMA)


def partition_fn(model_key: str, bundle_bc, run_bc, on_build: Callable[[], None] | None = None,
                 fail_partition: int | None = None) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function: serving-row batches -> SCORED_SCHEMA batches.

    ``fail_partition``: raise :class:`InjectedFailure` after that partition's
    rows have all been produced (tests of the atomic write; never in production).
    """

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        data: RunData = run_bc.value
        models = worker_models(model_key, lambda: bundle_bc.value, data.threads, on_build)
        ranker = None
        if models.ranker is not None:
            ranker = TorchRanker(models.ranker, data.video_meta, data.as_of, data.source_idx, data.retrieval_weight)
        for rb in batches:
            for a in range(0, rb.num_rows, data.batch_size):
                part = rb.slice(a, data.batch_size)
                yield score_users(arrow_columns(part, data.affinity), models.candidate, models.index, data, ranker,
                                  models.covisit, models.table)
        ctx = TaskContext.get()
        if fail_partition is not None and ctx is not None and ctx.partitionId() == fail_partition:
            raise InjectedFailure(f"injected failure after partition {fail_partition} was scored")

    return run
