"""FAISS inner-product indexes over the exported video table, search with exclusion, recall.

The video table is ``[V, D]`` with row = video vocab index; rows 0 (pad) and
1 (OOV) must never be returned, so the index holds rows ``first_id..V-1`` under
their own row numbers (``faiss.IndexIDMap``): search returns vocab indices
directly, ``-1`` where fewer than ``k`` results exist.

Kinds: ``flat`` (exact, ``IndexFlatIP``), ``ivf`` (``IndexIVFFlat``, inner
product, ``nprobe`` cells searched) and ``hnsw`` (``IndexHNSWFlat``, inner
product). Approximate kinds are judged by :func:`measure_recall` against a flat
index of the same vectors.

Exclusion (already-watched videos): :func:`search` over-fetches ``k + s`` for
a user with ``s`` excluded ids and drops them, so each user still gets ``k``
results when the corpus allows. Users are grouped by fetch depth (``k`` + ``s``
rounded up to a multiple of 32), so one heavy user does not make a whole batch
fetch deep.
"""
from __future__ import annotations

import faiss
import numpy as np

KINDS = ("flat", "ivf", "hnsw")
FETCH_STEP = 32  # over-fetch depths are k + a multiple of this: few search calls, little wasted depth
# Flat search takes FAISS's BLAS path (one sgemm per block) only above this many queries x dims; the
# default (128000) sends a 1024-user batch of 65-dim vectors to the scalar path, measured 4x the CPU
# per query (measured with the former bench/score.py). Lowered for our searches; results are the same inner products.
BLAS_THRESHOLD = 20
MIN_POINTS_PER_CENTROID = 39  # FAISS warns below this many training points per IVF cell


def build_index(vectors: np.ndarray, kind: str = "flat", *, first_id: int = 2, nlist: int = 1024,
                nprobe: int = 32, hnsw_m: int = 32, ef_construction: int = 200, ef_search: int = 256,
                seed: int = 5) -> faiss.Index:
    """An inner-product index over ``vectors[first_id:]`` ([V, D] float32), ids = row numbers.

    ``ivf``: ``nlist`` is capped at (V - first_id) / 39 so k-means has enough
    points; k-means is seeded. ``hnsw``: ``hnsw_m`` links, ``ef_construction``
    and ``ef_search`` beams. Raises ValueError for an unknown kind or a table
    with no row past ``first_id``.
    """
    if kind not in KINDS:
        raise ValueError(f"score.index must be one of {KINDS}, got '{kind}'")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] <= first_id:
        raise ValueError(f"build_index: need a [V, D] table with rows past {first_id}, got shape {x.shape}")
    body, d = x[first_id:], x.shape[1]
    ids = np.arange(first_id, x.shape[0], dtype=np.int64)
    if kind == "flat":
        inner = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nl = int(max(1, min(nlist, len(body) // MIN_POINTS_PER_CENTROID)))
        quantizer = faiss.IndexFlatIP(d)
        inner = faiss.IndexIVFFlat(quantizer, d, nl, faiss.METRIC_INNER_PRODUCT)
        inner.cp.seed = seed
        inner.train(body)
        inner.nprobe = int(min(nprobe, nl))
    else:
        inner = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = ef_construction
        inner.hnsw.efSearch = ef_search
    index = faiss.IndexIDMap(inner)  # the Python wrapper keeps `inner` alive
    index.add_with_ids(body, ids)
    return index


def index_kind(index: faiss.Index) -> str:
    """``flat`` | ``ivf`` | ``hnsw`` of an index from :func:`build_index` (or its deserialised copy)."""
    inner = faiss.downcast_index(index.index if hasattr(index, "index") else index)
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVF):
        return "ivf"
    return "flat"


def serialize(index: faiss.Index) -> bytes:
    """The index as bytes (to ship to Spark executors in a broadcast)."""
    return faiss.serialize_index(index).tobytes()


def deserialize(data: bytes) -> faiss.Index:
    """Inverse of :func:`serialize`."""
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def _raw_search(index: faiss.Index, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else None
    if isinstance(inner, faiss.IndexHNSW) and inner.hnsw.efSearch < k:
        params = faiss.SearchParametersHNSW(efSearch=int(k))
        return index.search(q, k, params=params)
    return index.search(q, k)


def _as_csr(exclude, n: int) -> tuple[np.ndarray, np.ndarray]:
    indptr, indices = (exclude.indptr, exclude.indices) if hasattr(exclude, "indptr") else exclude
    indptr = np.asarray(indptr, dtype=np.int64)
    if indptr.shape != (n + 1,):
        raise ValueError(f"search: exclusion indptr must have {n + 1} entries (queries + 1), got {indptr.shape}")
    return indptr, np.asarray(indices, dtype=np.int64)


def search(index: faiss.Index, queries: np.ndarray, k: int, exclude_csr=None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` by inner product, leaving out each query's excluded ids.

    Args:
        queries: [B, D] float32.
        exclude_csr: None, or (indptr [B+1], indices) (or anything with
            ``.indptr``/``.indices``): query i excludes ``indices[indptr[i]:indptr[i+1]]``.
    Returns:
        (scores [B, k] float32, ids [B, k] int64) best first; where fewer than
        ``k`` ids remain, ids are -1 and scores -inf.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    B = q.shape[0]
    faiss.cvar.distance_compute_blas_threshold = min(faiss.cvar.distance_compute_blas_threshold, BLAS_THRESHOLD)
    scores = np.full((B, k), -np.inf, dtype=np.float32)
    ids = np.full((B, k), -1, dtype=np.int64)
    if B == 0 or k <= 0 or index.ntotal == 0:
        return scores, ids
    if exclude_csr is None:
        kk = min(k, index.ntotal)
        d, i = _raw_search(index, q, kk)
        scores[:, :kk], ids[:, :kk] = d, i
        ids[ids < 0], scores[ids < 0] = -1, -np.inf
        return scores, ids
    indptr, indices = _as_csr(exclude_csr, B)
    counts = np.diff(indptr)
    fetch = np.minimum(k + FETCH_STEP * np.ceil(counts / FETCH_STEP).astype(np.int64), index.ntotal)
    for f in np.unique(fetch):
        rows = np.flatnonzero(fetch == f)
        d, i = _raw_search(index, q[rows], int(f))
        # Mark excluded (row, id) pairs: one int64 key per pair, looked up with isin.
        span = np.int64(max(int(i.max(initial=0)), int(indices.max(initial=0))) + 1)
        ex_rows = np.repeat(np.arange(len(rows), dtype=np.int64), counts[rows])
        ex_ids = np.concatenate([indices[indptr[r]:indptr[r + 1]] for r in rows]) if len(ex_rows) else \
            np.zeros(0, np.int64)
        bad = np.isin(np.arange(len(rows), dtype=np.int64)[:, None] * span + i, ex_rows * span + ex_ids)
        bad |= i < 0
        order = np.argsort(bad, axis=1, kind="stable")[:, :k]
        take_i = np.take_along_axis(i, order, axis=1)
        take_d = np.take_along_axis(d, order, axis=1)
        take_bad = np.take_along_axis(bad, order, axis=1)
        w = take_i.shape[1]
        ids[rows, :w] = np.where(take_bad, -1, take_i)
        scores[rows, :w] = np.where(take_bad, -np.inf, take_d)
    return scores, ids


def measure_recall(index: faiss.Index, exact: faiss.Index, queries: np.ndarray, k: int) -> float:
    """Recall@k of ``index`` against ``exact`` (a flat index of the same vectors): mean |approx ∩ exact| / |exact|."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if len(q) == 0:
        return float("nan")
    _, approx = search(index, q, k)
    _, truth = search(exact, q, k)
    hits = total = 0
    for a, t in zip(approx, truth):
        t = t[t >= 0]
        hits += len(np.intersect1d(a[a >= 0], t))
        total += len(t)
    return hits / total if total else float("nan")
