"""Vocabularies: fit once on training data, apply anywhere, saved with the data.

Index 0 is padding, index 1 is the out-of-vocabulary (OOV) bucket, real
entries start at 2 ordered by count descending then by value ascending, so the
same input always yields the same ids. Search queries become unigram and
bigram tokens (:func:`tokens_column`, :func:`tokenize` for Python callers).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ytspark import schema as S
from ytspark import storage

_SPLIT_RE = r"[^\p{L}\p{N}]+"
_PY_TOKEN_RE = re.compile(r"[^\W_]+")


@dataclass
class Vocab:
    """An ordered list of values; ``index(v)`` is its position + 2, unknown values map to OOV (1)."""

    name: str
    values: list[str]
    counts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index = {v: i + 2 for i, v in enumerate(self.values)}
        self._frames: dict = {}  # to_df results by (session, column names): one small table per job, not per join

    def __len__(self) -> int:
        """Embedding table size: padding + OOV + entries."""
        return len(self.values) + 2

    def index(self, value: str | None) -> int:
        if value is None:
            return S.OOV
        return self._index.get(value, S.OOV)

    def lookup(self, values) -> np.ndarray:
        """Vectorised :meth:`index` over an iterable of values -> int32 array."""
        return np.fromiter((self.index(v) for v in values), dtype=np.int32)

    def value(self, idx: int) -> str | None:
        return self.values[idx - 2] if idx >= 2 else None

    def to_dict(self) -> dict:
        return {"name": self.name, "pad": S.PAD, "oov": S.OOV, "values": self.values, "counts": self.counts}

    def save(self, spark: SparkSession, path: str) -> None:
        storage.write_json(spark, path, self.to_dict())

    @classmethod
    def load(cls, spark: SparkSession, path: str) -> "Vocab":
        d = storage.read_json(spark, path)
        return cls(name=d["name"], values=list(d["values"]), counts=list(d.get("counts", [])))

    def to_df(self, spark: SparkSession, key: str, idx_col: str) -> DataFrame:
        """(``key`` value, ``idx_col`` index) rows, built once per session and column names."""
        memo = (id(spark), key, idx_col)
        if memo not in self._frames:
            schema = T.StructType([T.StructField(key, T.StringType(), False),
                                   T.StructField(idx_col, T.IntegerType(), False)])
            self._frames[memo] = spark.createDataFrame([(v, i + 2) for i, v in enumerate(self.values)], schema)
        return self._frames[memo]


def fit_vocab(df: DataFrame, column: str, name: str, min_count: int = 1, top_k: int | None = None) -> Vocab:
    """Count the non-null values of ``column`` and keep those seen ``min_count``+ times, the ``top_k`` most frequent."""
    counted = (
        df.where(F.col(column).isNotNull())
        .groupBy(column)
        .count()
        .where(F.col("count") >= min_count)
        .orderBy(F.col("count").desc(), F.col(column).asc())
    )
    if top_k:
        counted = counted.limit(top_k)
    rows = counted.collect()
    return Vocab(name=name, values=[str(r[column]) for r in rows], counts=[int(r["count"]) for r in rows])


def apply_vocab(df: DataFrame, vocab: Vocab, column: str, out_col: str) -> DataFrame:
    """Add ``out_col`` = vocab index of ``column`` (OOV=1 for unknown and null) by a broadcast join."""
    spark = df.sparkSession
    key = f"__vocab_{vocab.name}"
    table = vocab.to_df(spark, key, out_col)
    joined = df.join(F.broadcast(table), df[column] == table[key], "left").drop(key)
    return joined.withColumn(out_col, F.coalesce(F.col(out_col), F.lit(S.OOV)).cast("int"))


def tokens_column(query: Column) -> Column:
    """Spark expression: lower-cased unigrams then bigrams ("a b") of a query string, as array<string>."""
    uni = F.filter(F.split(F.lower(query), _SPLIT_RE), lambda x: x != "")
    n = F.size(uni)
    bi = F.when(
        n > 1,
        F.zip_with(F.slice(uni, 1, n - 1), F.slice(uni, 2, n - 1), lambda a, b: F.concat(a, F.lit(" "), b)),
    ).otherwise(F.array().cast("array<string>"))
    return F.when(query.isNull(), F.array().cast("array<string>")).otherwise(F.concat(uni, bi))


def tokenize(query: str | None) -> list[str]:
    """Python twin of :func:`tokens_column` for single queries (serving, tests)."""
    if not query:
        return []
    uni = _PY_TOKEN_RE.findall(query.lower())
    return uni + [f"{a} {b}" for a, b in zip(uni, uni[1:])]
