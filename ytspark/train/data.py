"""Petastorm readers for training: one shard per rank, fixed-size shuffled batches, fixed steps per epoch.

Petastorm splits a dataset between ranks by whole row groups
(``cur_shard=rank, shard_count=size``); prepare writes balanced row groups
(a multiple of its ``target_shards``). Every rank reads its shard forever
(``num_epochs=None``) and the loop runs the same :func:`steps_per_epoch` on
every rank, so no rank stops early and leaves the others waiting in an
allreduce. :class:`ShardBatches` mixes rows of several row groups in a
shuffle buffer before cutting batches of exactly ``batch_size`` rows.
"""
from __future__ import annotations

import logging
import warnings
from typing import Iterator, Sequence
from urllib.parse import urlparse

import numpy as np

from ytspark import storage

log = logging.getLogger(__name__)


def dataset_url(path: str) -> str:
    """The Petastorm URL of a local path or a URL: ``file://`` for local paths, ``s3a://`` read as ``s3://``
    (Petastorm opens S3 through s3fs, HDFS through pyarrow's libhdfs)."""
    url = storage.to_url(path)
    return url if urlparse(url).scheme else "file://" + url


def petastorm_filesystem(url: str):
    """The filesystem Petastorm should read ``url`` with: None for local, ``file://`` and ``hdfs://`` (Petastorm's own
    resolver: pyarrow's local filesystem and libhdfs), else the fsspec filesystem of :mod:`ytspark.storage` (s3fs for
    ``s3://``/``s3a://``) in pyarrow's legacy wrapper, which is what Petastorm 0.12's legacy ParquetDataset takes."""
    scheme = urlparse(url).scheme
    if scheme in ("", "file", "hdfs", "viewfs"):
        return None
    import pyarrow.filesystem as legacy

    class FsspecForPetastorm(legacy.DaskFileSystem):
        """pyarrow's legacy wrapper of an fsspec filesystem, with the isdir/isfile it leaves unimplemented
        (its S3FSWrapper calls s3fs internals that are coroutines in current s3fs)."""

        def isdir(self, path):
            return self.fs.isdir(str(path))

        def isfile(self, path):
            return self.fs.isfile(str(path))

    fs, _ = storage.filesystem(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyarrow.filesystem is deprecated, and the only kind Petastorm 0.12 reads
        return FsspecForPetastorm(fs)


def read_json(path: str):
    """Read a JSON file (manifest, vocabulary, quantiles) from a local path or URL (:mod:`ytspark.storage`)."""
    return storage.load_json(path)


def steps_per_epoch(n_rows: int, batch_size: int, size: int) -> int:
    """Steps every rank runs per epoch: one pass over the rows by all ranks together (at least 1)."""
    if batch_size < 1 or size < 1:
        raise ValueError(f"batch_size and size must be >= 1, got {batch_size}, {size}")
    return max(1, n_rows // (batch_size * size))


def _reader(path: str, fields: Sequence[str], rank: int, size: int, *, num_epochs, seed: int,
            workers: int, shuffle: bool):
    from petastorm import make_batch_reader

    url = dataset_url(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # petastorm 0.12 on pyarrow 14: legacy dataset API warnings
        return make_batch_reader(url, schema_fields=list(fields), cur_shard=rank, shard_count=size,
                                 num_epochs=num_epochs, shuffle_row_groups=shuffle, seed=seed,
                                 workers_count=max(1, workers), reader_pool_type="thread",
                                 hdfs_driver="libhdfs", filesystem=petastorm_filesystem(url))


def _columns(batch, fields: Sequence[str]) -> dict[str, np.ndarray]:
    d = batch._asdict()
    out = {}
    for f in fields:
        a = d[f]
        if a.dtype == object:  # list column as an object array of arrays
            a = np.stack(a) if len(a) else np.zeros((0, 0))
        out[f] = a
    return out


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
        self._reader = _reader(path, self.fields, rank, size, num_epochs=None, seed=seed, workers=workers,
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
                self._add(_columns(next(self._reader), self.fields))
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


def read_split(path: str, fields: Sequence[str], *, rank: int = 0, size: int = 1) -> dict[str, np.ndarray]:
    """Every row of one shard (all rows when ``size=1``) as numpy columns, read once with Petastorm."""
    chunks: list[dict[str, np.ndarray]] = []
    with _reader(path, fields, rank, size, num_epochs=1, seed=0, workers=1, shuffle=False) as r:
        for batch in r:
            chunks.append(_columns(batch, fields))
    if not chunks:
        raise ValueError(f"no rows in {path} (shard {rank} of {size}); did prepare write this split?")
    return {f: np.concatenate([c[f] for c in chunks]) for f in fields}
