"""Prepared row folders read with Petastorm, from a local path or any URL: the readers the stages share.

:func:`open_reader` opens one shard of a folder of Parquet rows (Petastorm
splits it between ranks by whole row groups, ``cur_shard=rank,
shard_count=size``; prepare writes balanced row groups, a multiple of its
``target_shards``), with :func:`dataset_url` and :func:`petastorm_filesystem`
for local paths, ``file://``, HDFS and S3. :func:`read_split` reads every row
of a shard at once (validation rows, evaluation's targets) and
:func:`candidate_split` a split's candidate rows as the candidate network
reads them. Training's endless shuffled batches are
:class:`ytspark.train.data.ShardBatches`, on the same reader.
"""
from __future__ import annotations

import warnings
from typing import Sequence
from urllib.parse import urlparse

import numpy as np

from ytspark import schema as S
from ytspark import storage
from ytspark.models.features import CANDIDATE_FIELDS

# Petastorm 0.12 on pyarrow 14 warns of pyarrow's legacy dataset API from its reader threads on every row group
# (FutureWarning, a line pair each: ~90 of them in one `make run`); they say nothing about the user's data.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm(\.|$)")


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


def open_reader(path: str, fields: Sequence[str], rank: int, size: int, *, num_epochs, seed: int,
                workers: int, shuffle: bool):
    """A Petastorm batch reader of shard ``rank`` of ``size`` of the folder ``path`` (local path or URL), reading
    ``fields``; ``num_epochs=None`` reads forever, ``shuffle`` shuffles row groups (seeded by ``seed``)."""
    from petastorm import make_batch_reader

    url = dataset_url(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # petastorm 0.12 on pyarrow 14: legacy dataset API warnings
        return make_batch_reader(url, schema_fields=list(fields), cur_shard=rank, shard_count=size,
                                 num_epochs=num_epochs, shuffle_row_groups=shuffle, seed=seed,
                                 workers_count=max(1, workers), reader_pool_type="thread",
                                 hdfs_driver="libhdfs", filesystem=petastorm_filesystem(url))


def batch_columns(batch, fields: Sequence[str]) -> dict[str, np.ndarray]:
    """``fields`` of one Petastorm batch as numpy arrays (a list column stacked to [rows, length])."""
    d = batch._asdict()
    out = {}
    for f in fields:
        a = d[f]
        if a.dtype == object:  # list column as an object array of arrays
            a = np.stack(a) if len(a) else np.zeros((0, 0))
        out[f] = a
    return out


def read_split(path: str, fields: Sequence[str], *, rank: int = 0, size: int = 1) -> dict[str, np.ndarray]:
    """Every row of one shard (all rows when ``size=1``) as numpy columns, read once with Petastorm."""
    chunks: list[dict[str, np.ndarray]] = []
    with open_reader(path, fields, rank, size, num_epochs=1, seed=0, workers=1, shuffle=False) as r:
        for batch in r:
            chunks.append(batch_columns(batch, fields))
    if not chunks:
        raise ValueError(f"no rows in {path} (shard {rank} of {size}); did prepare write this split?")
    return {f: np.concatenate([c[f] for c in chunks]) for f in fields}


def candidate_split(prepared: str, split: str) -> dict[str, np.ndarray]:
    """Every candidate row of ``split`` (val, test) of the prepared directory ``prepared`` as numpy columns:
    the candidate network's inputs and label (:data:`~ytspark.models.features.CANDIDATE_FIELDS`) and ``user_id``."""
    return read_split(f"{prepared.rstrip('/')}/candidates/{split}", CANDIDATE_FIELDS + [S.USER_ID])
