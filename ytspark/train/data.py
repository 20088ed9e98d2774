"""Petastorm readers for training: one shard per rank, fixed-size shuffled batches, fixed steps per epoch.

Petastorm splits a dataset between ranks by whole row groups
(``cur_shard=rank, shard_count=size``; the reader is
:func:`ytspark.rows.open_reader`); prepare writes balanced row groups
(a multiple of its ``target_shards``). Every rank reads its shard forever
(``num_epochs=None``) and the loop runs the same :func:`steps_per_epoch` on
every rank, so no rank stops early and leaves the others waiting in an
allreduce. :class:`ShardBatches` mixes rows of several row groups in a
shuffle buffer before cutting batches of exactly ``batch_size`` rows.
Small whole reads: :func:`ytspark.rows.read_split`, :func:`read_json`.
"""
from __future__ import annotations

import logging
from typing import Iterator, Sequence

import numpy as np

from ytspark import storage
from ytspark.rows import batch_columns, open_reader

log = logging.getLogger(__name__)


def read_json(path: str):
    """Read a JSON file (manifest, vocabulary, quantiles) from a local path or URL (:mod:`ytspark.storage`)."""
    return storage.load_json(path)


def steps_per_epoch(n_rows: int, batch_size: int, size: int) -> int:
    """Steps every rank runs per epoch: one pass over the rows by all ranks together (at least 1)."""
    if batch_size < 1 or size < 1:
        raise ValueError(f"batch_size and size must be >= 1, got {batch_size}, {size}")
    return max(1, n_rows // (batch_size * size))


class ShardBatches:
    """Endless iterator of dicts of ``batch_size``-row numpy arrays from this rank's shard.

    Rows pass through a shuffle buffer of ``shuffle_buffer`` rows (seeded by
    ``seed``) so a batch mixes several row groups. Use as a context manager
    (or call :meth:`close`) to stop the reader threads.
    """

    def __init__(self, path: str, fields: Sequence[str], *, rank: int = 0, size: int = 1, batch_size: int = 512,
                 shuffle_buffer: int = 20000, seed: int = 0, workers: int = 2):
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} is not in [0, {size})")
        self.fields, self.batch_size = list(fields), batch_size
        self.buffer = max(shuffle_buffer, 0)
        self._rng = np.random.default_rng(seed)
        self._reader = open_reader(path, self.fields, rank, size, num_epochs=None, seed=seed, workers=workers,
                                   shuffle=True)
        self._pool: dict[str, np.ndarray] | None = None

    def _pool_rows(self) -> int:
        return 0 if self._pool is None else len(self._pool[self.fields[0]])

    def _add(self, cols: dict[str, np.ndarray]) -> None:
        if self._pool is None:
            self._pool = cols
        else:
            self._pool = {f: np.concatenate([self._pool[f], cols[f]]) for f in self.fields}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        while self._pool_rows() < self.buffer + self.batch_size:
            try:
                self._add(batch_columns(next(self._reader), self.fields))
            except StopIteration:  # cannot happen with num_epochs=None, but never spin
                if self._pool_rows() >= self.batch_size:
                    break
                raise
            if self._pool_rows() >= self.buffer + self.batch_size:
                perm = self._rng.permutation(self._pool_rows())
                self._pool = {f: a[perm] for f, a in self._pool.items()}
        b = self.batch_size
        out = {f: a[:b] for f, a in self._pool.items()}
        self._pool = {f: a[b:] for f, a in self._pool.items()}
        return out

    def close(self) -> None:
        self._reader.stop()
        self._reader.join()

    def __enter__(self) -> "ShardBatches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
