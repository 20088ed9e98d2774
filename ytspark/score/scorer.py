"""The per-partition scoring function: the serving events of whole users (Arrow) -> top-N rows (Arrow).

For each table of whole users the serving columns are built once
(:func:`~ytspark.score.features.serving_columns`); then, ``batch_size`` users at
a time, users with a usable history (a watched video or a search token in the
vocabulary) get user vectors from the candidate tower (example age 0), then
their top-K by exact logit (folded bias, plus the co-visitation term of their
last watches when the model fuses that source, :mod:`ytspark.models.covisit`),
already-watched videos left out: for the exact ``flat`` kind by one dense pass
over the folded table (:func:`~ytspark.models.covisit.dense_topk`), for
``ivf``/``hnsw`` by FAISS merged with the co-visitation neighbours
(:func:`~ytspark.models.covisit.merge_topk`). The optional
:class:`~ytspark.score.rank.Reranker` scores the K candidates, and the top N
are kept (``source="candidate"``); the others get a
:class:`~ytspark.score.fallback.PopularLists` list.

:func:`partition_fn` builds the function that ``mapInArrow`` runs: the models
and the index come from :func:`ytspark.score.bundle.worker_models` (once per
Python worker), the small per-run data (vocabulary, popular lists, video
metadata) from a second broadcast; counts and step seconds go back in a
:class:`Tally` accumulator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import time
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import torch
from pyspark.accumulators import AccumulatorParam

from ytspark import schema as S
from ytspark.models.blend import ServingOrder
from ytspark.models.candidate import CandidateModel
from ytspark.models.covisit import CoVisitation, dense_topk, merge_topk
from ytspark.models.features import batch_from_numpy
from ytspark.score import index as ix
from ytspark.score.bundle import worker_models
from ytspark.score.fallback import PopularLists, group_keys, watcher_counts
from ytspark.score.features import AFFINITY_GROUPS, IMPRESSIONS, SEEN, Encoder, serving_columns, slice_users
from ytspark.score.rank import Reranker, TorchRanker, UserBlock, VideoMeta
from ytspark.score.rules import ServingRules
from ytspark.schema import RANK, SOURCE
from ytspark.schema import SCORED_ARROW_SCHEMA as ARROW_SCHEMA

SOURCE_CANDIDATE = "candidate"


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
    popular: PopularLists | None  # None: cold users are left to the driver (Tally.cold_*), after the pass
    as_of: float
    video_meta: VideoMeta | None = None
    source_idx: int = S.OOV
    affinity: bool = False
    order: ServingOrder = field(default_factory=ServingOrder)  # ranker.objective (ytspark.models.blend)
    history_length: int = 50
    encoder: Encoder | None = None  # vocabularies and per-video metadata the serving events are encoded with
    n_videos: int = 0  # the video vocabulary's size (coverage bitmap, watcher counts)
    rules: ServingRules | None = None  # serving rules applied before the top N is cut (ytspark.score.rules)
    impressions: bool = False  # the serving events hold impressions: build the ranker's impression features
    ranker_calibration: dict | None = None  # the ranker's score -> watch seconds map (ytspark.models.score_calibration)


STEPS = ("features", "retrieval", "ranking", "topn")


@dataclass
class Tally:
    """What the scoring tasks report back (a Spark accumulator): counts for the manifest and task seconds.

    ``seconds``: summed over tasks, per step of :data:`STEPS` (features = serving columns from the
    events; retrieval = user tower, FAISS and the co-visitation merge; ranking = the ranking network and
    the order; topn = the output rows). ``videos``: bool [V], recommended at least once.
    """

    users: int = 0
    cold: int = 0
    rows: int = 0
    users_with_list: int = 0
    short_lists: int = 0
    rows_by_source: dict | None = None
    users_by_source: dict | None = None
    seconds: dict | None = None
    removed: dict | None = None  # serving-rule removals (ytspark.score.rules): ranked above the last kept
    struck: dict | None = None  # and among all K candidates
    videos: np.ndarray | None = None
    watch_keys: np.ndarray | None = None  # distinct watchers per (group, video): ytspark.score.fallback
    watch_counts: np.ndarray | None = None
    cold_ids: np.ndarray | None = None  # users with no usable history (object), their group keys
    cold_groups: np.ndarray | None = None

    def add(self, other: "Tally") -> "Tally":
        self.users += other.users
        self.cold += other.cold
        self.rows += other.rows
        self.users_with_list += other.users_with_list
        self.short_lists += other.short_lists
        for name in ("rows_by_source", "users_by_source", "seconds", "removed", "struck"):
            self.add_counts(name, getattr(other, name) or {})
        if other.videos is not None:
            self.videos = other.videos.copy() if self.videos is None else (self.videos | other.videos)
        for name in ("watch_keys", "watch_counts", "cold_ids", "cold_groups"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None:
                setattr(self, name, theirs if mine is None else np.concatenate([mine, theirs]))
        return self

    def append(self, name: str, values: np.ndarray) -> None:
        cur = getattr(self, name)
        setattr(self, name, values if cur is None else np.concatenate([cur, values]))

    def count(self, batch: pa.RecordBatch, n_users: int, n_cold: int, n: int) -> None:
        """Add one output batch of ``n_users`` users (``n_cold`` of them on fallback lists)."""
        self.users += n_users
        self.cold += n_cold
        self.rows += batch.num_rows
        rank = batch.column(RANK).to_numpy()
        src = batch.column(SOURCE).to_numpy(zero_copy_only=False)
        first = int((rank == 1).sum())
        self.users_with_list += first
        self.short_lists += first - int((rank == n).sum())  # users with a list but no N-th row
        for name, sel in (("rows_by_source", slice(None)), ("users_by_source", rank == 1)):
            vals, cnt = np.unique(src[sel].astype(str), return_counts=True)
            d = getattr(self, name) or {}
            setattr(self, name, {**d, **{v: d.get(v, 0) + int(c) for v, c in zip(vals, cnt)}})

    def add_counts(self, name: str, counts: dict) -> None:
        d = getattr(self, name) or {}
        setattr(self, name, {k: d.get(k, 0) + counts.get(k, 0) for k in {*d, *counts}})

    def cover(self, video_idx: np.ndarray, n_videos: int) -> None:
        if self.videos is None:
            self.videos = np.zeros(n_videos, bool)
        self.videos[video_idx] = True


class TallyParam(AccumulatorParam):
    def zero(self, value: Tally) -> Tally:
        return Tally()

    def addInPlace(self, a: Tally, b: Tally) -> Tally:
        return a.add(b)


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
    u = model.query_vector(batch_from_numpy(cols, serving=True))
    return CandidateModel.fold_user(u).numpy().astype(np.float32, copy=False)


def usable_history(cols: dict) -> np.ndarray:
    """[B] bool: a watched video or a search token in the vocabulary (idx >= 2)."""
    return (cols[S.CAND_WATCH_HIST] >= 2).any(axis=1) | (cols[S.CAND_SEARCH_HIST] >= 2).any(axis=1)


class _Clock:
    """Adds the seconds since the last mark to a step of a :class:`Tally` (no-op without one)."""

    def __init__(self, tally: Tally | None):
        self.tally, self.t = tally, time.perf_counter()

    def mark(self, step: str) -> None:
        if self.tally is not None:
            now = time.perf_counter()
            sec = self.tally.seconds if self.tally.seconds is not None else {}
            sec[step] = sec.get(step, 0.0) + now - self.t
            self.tally.seconds, self.t = sec, now


def score_users(cols: dict, model: CandidateModel, index, run: RunData,
                ranker: Reranker | None = None, covisit: CoVisitation | None = None,
                table: np.ndarray | None = None, tally: Tally | None = None) -> pa.RecordBatch:
    """Top-N rows (SCORED_SCHEMA) of the users in ``cols`` (:func:`~ytspark.score.features.serving_columns`).

    With ``covisit`` (and the folded video ``table``) the retrieval is the fused score's exact top K
    (:func:`ytspark.models.covisit.merge_topk`). ``tally``: counts and step seconds are added to it.
    """
    clock = _Clock(tally)
    users = cols[S.USER_ID]
    usable = usable_history(cols)
    out_user, out_rank, out_vid, out_score, out_ret, out_src = [], [], [], [], [], []
    rows = np.flatnonzero(usable)
    if len(rows):
        q = user_vectors(model, _take(cols, rows))
        seen = _csr_rows(cols[SEEN], rows)
        rules = run.rules
        # the ranker reorders all K, and rules fill N from past the top N; otherwise the top N is enough
        depth = run.k if ranker is not None or rules is not None else run.n
        if index is None:  # exact: one dense pass over the folded table, the co-visitation term included
            ret, cand = dense_topk(q, table, depth, seen, cols[S.CAND_WATCH_HIST][rows], covisit)
        else:
            ret, cand = ix.search(index, q, run.k, seen)
            if covisit is not None:
                ret, cand = merge_topk(ret, cand, q, table, cols[S.CAND_WATCH_HIST][rows], seen, covisit, depth)
        clock.mark("retrieval")
        width = cand.shape[1] if rules is not None else min(run.n, cand.shape[1])
        if ranker is not None:
            block = UserBlock(cols[S.CAND_WATCH_HIST], cols[S.RANK_USER_LANGUAGE].astype(np.int64),
                              cols[S.CAND_SINCE_LAST].astype(np.float32),
                              {g: cols[g] for g in AFFINITY_GROUPS if g in cols},
                              impressions=cols.get(IMPRESSIONS)).take(rows)
            score = ranker.score(block, cand, ret)
            order = np.argsort(-ranker.order_key(score, ret), axis=1, kind="stable")[:, :width]
            clock.mark("ranking")
        else:
            score = ret
            order = np.broadcast_to(np.arange(width), (len(rows), width))
        top_c = np.take_along_axis(cand, order, axis=1)
        top_s = np.take_along_axis(score, order, axis=1)
        if ranker is not None:  # the written score (TorchRanker: calibrated watch seconds)
            top_s = ranker.served(top_s)
        top_r = np.take_along_axis(ret, order, axis=1)
        if rules is not None:
            valid, removed, struck = rules.apply(top_c, cols["country_idx"][rows], run.n)
            if tally is not None:
                tally.add_counts("removed", removed)
                tally.add_counts("struck", struck)
        else:
            valid = top_c >= 2
        r_idx, pos = np.nonzero(valid)
        out_user.append(users[rows][r_idx])
        out_rank.append((np.cumsum(valid, axis=1)[valid]).astype(np.int32))
        out_vid.append(top_c[valid])
        out_score.append(top_s[valid])
        out_ret.append(top_r[valid])
        out_src.append(np.full(len(r_idx), SOURCE_CANDIDATE, dtype=object))
    cold = np.flatnonzero(~usable)
    if run.popular is None:  # fallback lists come after the pass, from every task's watcher counts
        if tally is not None and len(cold):
            tally.append("cold_ids", np.asarray(users[cold], dtype=object))
            tally.append("cold_groups", group_keys(cols["country_idx"][cold], cols["age_bucket_idx"][cold]))
        cold = cold[:0]
    for r in cold:
        off, vals = cols[SEEN]
        ids, sc, src = run.popular.recommend(int(cols["country_idx"][r]), int(cols["age_bucket_idx"][r]),
                                             vals[off[r]:off[r + 1]], run.n, run.rules)
        out_user.append(np.full(len(ids), users[r], dtype=object))
        out_rank.append(np.arange(1, len(ids) + 1, dtype=np.int32))
        out_vid.append(ids)
        out_score.append(sc)
        out_ret.append(sc)
        out_src.append(np.asarray(src, dtype=object))
    if not out_user:
        return pa.RecordBatch.from_pylist([], schema=ARROW_SCHEMA)
    vid = np.concatenate(out_vid).astype(np.int64)
    out = pa.RecordBatch.from_arrays([
        pa.array(np.concatenate(out_user), pa.string()),
        pa.array(np.concatenate(out_rank), pa.int32()),
        pa.array(run.video_ids[vid], pa.string()),
        pa.array(np.concatenate(out_score).astype(np.float32), pa.float32()),
        pa.array(np.concatenate(out_ret).astype(np.float32), pa.float32()),
        pa.array(np.concatenate(out_src), pa.string()),
    ], schema=ARROW_SCHEMA)
    if tally is not None:
        tally.count(out, len(users), int((~usable).sum()), run.n)
        tally.cover(vid, run.n_videos)
    clock.mark("topn")
    return out


SCORE_TABLE_ROWS = 1 << 17  # serving events per table of whole users: a table is ~1,900 users of 70 events, so
# score_users gets full ``score.batch_size`` blocks and the per-table costs (vocabulary lookups' hash sets, the
# column build) are paid ~4x less often than at prepare's 32,768 rows


def partition_fn(model_key: str, bundle_bc, run_bc, tally_acc=None, on_build: Callable[[], None] | None = None,
                 fail_partition: int | None = None) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function: the serving events of whole users (sorted by user and ``ROW_ORDER``,
    :func:`~ytspark.score.features.serving_events`) -> SCORED_SCHEMA batches.

    Each table of whole users gets its columns built once (:func:`~ytspark.score.features.serving_columns`),
    then is scored ``batch_size`` users at a time. ``tally_acc``: a Spark accumulator of :class:`Tally`
    (one update per task). ``fail_partition``: raise :class:`InjectedFailure` after that partition's rows
    have all been produced (tests of the atomic write; never in production).
    """

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        from ytspark.features.grouping import iter_user_tables

        data: RunData = run_bc.value
        models = worker_models(model_key, lambda: bundle_bc.value, data.threads, on_build)
        ranker = None
        if models.ranker is not None:
            ranker = TorchRanker(models.ranker, data.video_meta, data.as_of, data.source_idx, data.order,
                                 calibration=data.ranker_calibration)
        tally = Tally()
        for table in iter_user_tables(batches, SCORE_TABLE_ROWS):
            clock = _Clock(tally)
            cols = serving_columns(table, data.as_of, data.history_length, data.encoder, data.affinity,
                                   data.impressions)
            if data.popular is None:
                keys, counts = watcher_counts(group_keys(cols["country_idx"], cols["age_bucket_idx"]), cols[SEEN],
                                              data.n_videos)
                tally.append("watch_keys", keys)
                tally.append("watch_counts", counts)
            clock.mark("features")
            n_users = len(cols[S.USER_ID])
            for a in range(0, n_users, data.batch_size):
                out = score_users(slice_users(cols, a, min(n_users, a + data.batch_size)), models.candidate,
                                  models.index, data, ranker, models.covisit, models.table, tally)
                if out.num_rows:
                    yield out
        if tally_acc is not None:
            if tally.watch_keys is not None:  # one (group, video) entry per task, not per batch
                tally.watch_keys, inv = np.unique(tally.watch_keys, return_inverse=True)
                tally.watch_counts = np.bincount(inv, weights=tally.watch_counts).astype(np.int64)
            tally_acc.add(tally)
        ctx = TaskContext.get()
        if fail_partition is not None and ctx is not None and ctx.partitionId() == fail_partition:
            raise InjectedFailure(f"injected failure after partition {fail_partition} was scored")

    return run
