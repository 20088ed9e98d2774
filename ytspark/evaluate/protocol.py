"""The next-watch protocol (DESIGN.md "Evaluation"): targets, what a system may learn from, what it must not recommend.

The targets are prepare's: per user, ``candidates/test`` holds the last
watch and ``candidates/val`` the one before (prepare's order, including its
tie-break between watches of the same second); earlier watches are
training. This module never re-derives that order: it removes target watch
instances (user, time, video) from the user's watches. For a target split:

* the *fit watches* are all watches except that split's targets and the
  later split's (val: training watches only; test: training + validation
  watches; users without targets contribute every watch), as
  :func:`fit_watches` (Spark) and ``EvalSet.item_counts`` (numpy);
* the *seen* set of a target user is the distinct videos of their own fit
  watches: never recommendable (a re-watched target is unreachable and
  counts as a miss, as in ``ytspark.models.metrics``);
* the catalogue is the video vocabulary (index >= 2); pad (0) and OOV (1)
  are never recommended, and an OOV target counts as a miss.

A target that is not a watch in ``events`` raises (mixed prepare outputs).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ytspark import schema as S
from ytspark import storage
from ytspark.schema import N_SPECIAL
from ytspark.vocab import Vocab, apply_vocab

EVAL_SPLITS = ("val", "test")
COUNT = "count"
_DUP = "__dup"


@dataclass(frozen=True)
class EvalSet:
    """One split's targets, collected to numpy (row b = ``user_ids[b]``, sorted by user id).

    Attributes:
        split: ``"val"`` or ``"test"``.
        user_ids: object array [B] of user ids.
        labels: int64 [B], video index of the target watch (1 = OOV).
        seen_indptr, seen_indices: CSR [B+1] / [nnz] int64 of the distinct
            seen video indices of each user (sorted within a row).
        n_train_watches: int64 [B], number of fit watches of each user
            (watches before the target, repeats and OOV included).
        item_counts: int64 [n_items], fit watches per video index over all
            users (pad and OOV entries are 0): the popularity the split may use.
        n_items: video vocabulary size (pad and OOV included).
    """

    split: str
    user_ids: np.ndarray
    labels: np.ndarray
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    n_train_watches: np.ndarray
    item_counts: np.ndarray
    n_items: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_catalogue(self) -> int:
        """Recommendable videos: the vocabulary without pad and OOV."""
        return self.n_items - N_SPECIAL

    def seen(self, b: int) -> np.ndarray:
        """Seen video indices of row ``b``."""
        return self.seen_indices[self.seen_indptr[b]:self.seen_indptr[b + 1]]

    def align(self, user_ids, rows: np.ndarray) -> np.ndarray:
        """Reorder ``rows`` (one per entry of ``user_ids``) into this set's user order.

        Raises ValueError naming a missing user; extra users are ignored.
        """
        pos = {u: i for i, u in enumerate(user_ids)}
        missing = [u for u in self.user_ids if u not in pos]
        if missing:
            raise ValueError(f"align: {len(missing)} {self.split} users have no row, e.g. '{missing[0]}'; "
                             "produce a list for every user of the evaluation set")
        return np.asarray(rows)[np.fromiter((pos[u] for u in self.user_ids), np.int64, len(self.user_ids))]


def _check_split(split: str) -> None:
    if split not in EVAL_SPLITS:
        raise ValueError(f"evaluation split must be one of {EVAL_SPLITS}, got '{split}'")


def load_video_vocab(spark: SparkSession, prepared_dir: str) -> Vocab:
    """The video vocabulary written by ``prepare`` (``<prepared>/vocab/video.json``)."""
    path = f"{prepared_dir}/vocab/video.json"
    if not storage.exists(spark, path):
        raise FileNotFoundError(f"'{path}' not found: '{prepared_dir}' is not a prepare output; run `ytspark prepare`")
    return Vocab.load(spark, path)


def indexed_watches(spark: SparkSession, prepared_dir: str, vocab: Vocab | None = None) -> DataFrame:
    """Watches of ``<prepared>/events``: user_id, ts, video_idx and ``__dup`` (1 for the first of equal rows)."""
    vocab = vocab or load_video_vocab(spark, prepared_dir)
    ev = spark.read.parquet(f"{prepared_dir}/events")
    for c in (S.USER_ID, S.EVENT_TS, S.EVENT_TYPE, S.VIDEO_ID):
        if c not in ev.columns:
            raise ValueError(f"'{prepared_dir}/events' has no column '{c}'; rerun `ytspark prepare`")
    w = ev.where(F.col(S.EVENT_TYPE) == "watch").select(S.USER_ID, F.col(S.EVENT_TS).alias(S.TS), S.VIDEO_ID)
    w = apply_vocab(w, vocab, S.VIDEO_ID, S.VIDEO_IDX).drop(S.VIDEO_ID)
    same = Window.partitionBy(S.USER_ID, S.TS, S.VIDEO_IDX).orderBy(S.USER_ID)
    return w.withColumn(_DUP, F.row_number().over(same))


def target_rows(spark: SparkSession, prepared_dir: str, split: str) -> DataFrame:
    """(user_id, label, label_ts) of ``<prepared>/candidates/<split>``: one target watch per user."""
    path = f"{prepared_dir}/candidates/{split}"
    if not storage.exists(spark, path):
        raise FileNotFoundError(f"'{path}' not found: '{prepared_dir}' is not a prepare output; run `ytspark prepare`")
    return spark.read.parquet(path).select(
        S.USER_ID, F.col(S.CAND_LABEL).cast("int").alias(S.CAND_LABEL), S.CAND_LABEL_TS)


def _held_out(spark: SparkSession, prepared_dir: str, split: str) -> DataFrame:
    """The watch instances a ``split`` system must not fit: its targets and every later split's targets."""
    later = EVAL_SPLITS[EVAL_SPLITS.index(split):]
    rows = None
    for s in later:
        t = target_rows(spark, prepared_dir, s)
        rows = t if rows is None else rows.unionByName(t)
    return rows.select(S.USER_ID, F.col(S.CAND_LABEL_TS).alias(S.TS), F.col(S.CAND_LABEL).alias(S.VIDEO_IDX),
                       F.lit(1).alias(_DUP))


def _fit_rows(spark: SparkSession, prepared_dir: str, watches: DataFrame, split: str) -> DataFrame:
    """Rows of ``indexed_watches`` a system may learn from for ``split`` targets (held-out instances removed)."""
    return watches.join(_held_out(spark, prepared_dir, split), [S.USER_ID, S.TS, S.VIDEO_IDX, _DUP], "left_anti")


def fit_watches(spark: SparkSession, prepared_dir: str, split: str, watches: DataFrame | None = None) -> DataFrame:
    """(user_id, video_idx, count) of the watches a baseline may fit for ``split`` targets, OOV dropped.

    ``val``: every user's training watches. ``test``: training + validation
    watches. Never a target of the split nor of a later split.
    """
    _check_split(split)
    watches = watches if watches is not None else indexed_watches(spark, prepared_dir)
    rows = _fit_rows(spark, prepared_dir, watches, split).where(F.col(S.VIDEO_IDX) >= N_SPECIAL)
    return rows.groupBy(S.USER_ID, S.VIDEO_IDX).agg(F.count(F.lit(1)).cast("long").alias(COUNT))


def _csr(lists: list, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(x) for x in lists), np.int64, n_rows)
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    flat = np.concatenate([np.asarray(x, np.int64) for x in lists]) if indptr[-1] else np.zeros(0, np.int64)
    return indptr, flat


def load_targets(spark: SparkSession, prepared_dir: str, split: str) -> EvalSet:
    """Collect the ``split`` targets of a prepared directory with their seen sets and the split's popularity.

    Raises ValueError when a target row of ``candidates/<split>`` does not sit
    where the protocol puts it in ``events`` (prepare and evaluation disagree).
    """
    return load_eval_sets(spark, prepared_dir, (split,))[split]


def load_eval_sets(spark: SparkSession, prepared_dir: str, splits=EVAL_SPLITS) -> dict[str, EvalSet]:
    """:func:`load_targets` for several splits, reading and ordering the events once."""
    for split in splits:
        _check_split(split)
    vocab = load_video_vocab(spark, prepared_dir)
    watches = indexed_watches(spark, prepared_dir, vocab).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return {split: _collect(spark, prepared_dir, split, vocab, watches) for split in splits}
    finally:
        watches.unpersist()


def _collect(spark: SparkSession, prepared_dir: str, split: str, vocab: Vocab, watches: DataFrame) -> EvalSet:
    cand = target_rows(spark, prepared_dir, split)
    fit = _fit_rows(spark, prepared_dir, watches, split)
    seen = fit.groupBy(S.USER_ID).agg(
        F.sort_array(F.collect_set(F.when(F.col(S.VIDEO_IDX) >= N_SPECIAL, F.col(S.VIDEO_IDX)))).alias("seen"),
        F.count(F.lit(1)).alias("n_fit"))
    found = watches.where(F.col(_DUP) == 1).select(S.USER_ID, F.col(S.TS).alias(S.CAND_LABEL_TS),
                                                   F.col(S.VIDEO_IDX).alias(S.CAND_LABEL), F.lit(True).alias("__found"))
    rows = (cand.join(found, [S.USER_ID, S.CAND_LABEL_TS, S.CAND_LABEL], "left").join(seen, S.USER_ID, "left")
            .orderBy(S.USER_ID).toPandas())
    bad = rows[rows["__found"].isna()]
    if len(bad):
        r = bad.iloc[0]
        raise ValueError(
            f"{len(bad)} targets of '{prepared_dir}/candidates/{split}' are not watches in '{prepared_dir}/events' "
            f"(e.g. user '{r[S.USER_ID]}': video index {r[S.CAND_LABEL]} at {r[S.CAND_LABEL_TS]}); "
            "the folder mixes two prepare runs: rerun `ytspark prepare`")
    if rows[S.USER_ID].duplicated().any():
        raise ValueError(f"'{prepared_dir}/candidates/{split}' has several rows for user "
                         f"'{rows[S.USER_ID][rows[S.USER_ID].duplicated()].iloc[0]}'; expected one target per user")
    n = len(rows)
    seen_lists = [x if x is not None else [] for x in rows["seen"]]
    indptr, indices = _csr(seen_lists, n)
    counts = np.zeros(len(vocab), np.int64)
    for r in fit.where(F.col(S.VIDEO_IDX) >= N_SPECIAL).groupBy(S.VIDEO_IDX).count().collect():
        counts[r[S.VIDEO_IDX]] = r[COUNT]
    return EvalSet(
        split=split,
        user_ids=rows[S.USER_ID].to_numpy(object),
        labels=rows[S.CAND_LABEL].to_numpy(np.int64),
        seen_indptr=indptr,
        seen_indices=indices,
        n_train_watches=rows["n_fit"].fillna(0).to_numpy(np.int64),
        item_counts=counts,
        n_items=len(vocab),
    )
