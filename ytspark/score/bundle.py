"""Models shipped to Spark executors as plain bytes, rebuilt once per Python worker.

The driver reads the model directories (any URL, through :mod:`ytspark.storage`) and packs
what a worker needs into a :class:`Bundle` of bytes, arrays and JSON-like dicts:
the candidate tower's state dict (``torch.save`` bytes), the serialised FAISS
index of the folded video table (approximate kinds; the exact ``flat`` kind
scores the whole folded table in dense blocks instead), the co-visitation arrays when the candidate
model fuses them, and the ranker's state dict when there is one. The job broadcasts the bundle, so executors never read the model paths
and a cluster works the same as ``local[*]``.

On a worker, :func:`worker_models` rebuilds the models and the index the first
time a key is seen and keeps them in a module-level dict: Python workers are
reused across tasks (``spark.python.worker.reuse``, on by default), so a
worker builds them once, whatever the number of partitions and batches.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import faiss
import numpy as np
import torch

from ytspark.models.candidate import CandidateConfig, CandidateModel
from ytspark.models.covisit import CoVisitation
from ytspark.models.export import ModelDir, read_model_dir
from ytspark.score import index as ix
from ytspark.vocab import Vocab

_CACHE: dict[str, "WorkerModels"] = {}
_MAX_CACHED = 2  # keep the current and the previous key; older models are dropped


@dataclass
class Bundle:
    """Everything a worker needs to rebuild the models; picklable, no paths."""

    key: str  # changes whenever any model or the index changes
    candidate_config: dict
    candidate_quantiles: dict
    candidate_weights: bytes
    index: bytes  # the serialised FAISS index; empty for the flat kind (exact dense retrieval over the table)
    index_kind: str
    ranker_config: dict | None = None
    ranker_quantiles: dict | None = None
    ranker_weights: bytes | None = None
    ranker_version: str | None = None
    covisit_arrays: dict | None = None  # the fused co-visitation source (ytspark.models.covisit), or None
    covisit_meta: dict | None = None


@dataclass
class WorkerModels:
    """What :func:`worker_models` builds: the tower in eval mode, the index, the ranker (or None), and for a
    model with a fused co-visitation source that table and the folded video table (logits of its neighbours)."""

    candidate: CandidateModel
    index: faiss.Index | None  # None for the exact (flat) kind: a dense pass over ``table`` instead
    ranker: torch.nn.Module | None = None
    covisit: CoVisitation | None = None
    table: np.ndarray | None = None


def model_vocabs(md: ModelDir) -> dict[str, Vocab]:
    """The vocabularies saved with a model directory (``vocab/<name>.json``), by name."""
    out = {}
    for name in md.names("vocab"):
        if not name.endswith(".json"):
            continue
        d = md.json(f"vocab/{name}")
        out[name[:-len(".json")]] = Vocab(name=d["name"], values=list(d["values"]), counts=list(d.get("counts", [])))
    return out


def state_bytes(md: ModelDir) -> bytes:
    """The model directory's ``weights.pt`` as bytes (loaded later with ``weights_only=True``)."""
    return md.weights_bytes()


def _state_dict(data: bytes) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _flat_quantiles(q: dict, section: str) -> dict:
    """A model's ``quantiles.json``: either the prepare section itself or the whole prepare file."""
    return q[section] if section in q and isinstance(q[section], dict) else q


def read_ranker(path: str):
    """(ModelDir, config dict, quantiles dict) of a ranker model directory."""
    md = read_model_dir(path, "ranker")
    return md, dict(md.meta["model_config"]), _flat_quantiles(md.json("quantiles.json"), "ranking")


def build_ranker(config: dict, quantiles: dict, weights: bytes) -> torch.nn.Module:
    """A :class:`~ytspark.models.ranker.RankerModel` in eval mode from bundle parts."""
    from ytspark.models.ranker import RankerConfig, RankerModel

    model = RankerModel(RankerConfig.from_dict(config), quantiles)
    model.load_state_dict(_state_dict(weights))
    return model.eval()


def build_candidate(config: dict, quantiles: dict, weights: bytes) -> CandidateModel:
    """A :class:`CandidateModel` in eval mode from bundle parts."""
    model = CandidateModel(CandidateConfig.from_dict(config), _flat_quantiles(quantiles, "candidates"))
    model.load_state_dict(_state_dict(weights))
    return model.eval()


def worker_models(key: str, get_bundle: Callable[[], Bundle], threads: int = 1,
                  on_build: Callable[[], None] | None = None) -> WorkerModels:
    """The models of ``key``, built from ``get_bundle()`` the first time this process sees the key.

    ``get_bundle`` is only called on a miss (reading a broadcast's value costs
    an unpickle). ``threads`` sets torch and FAISS threads for this process;
    ``on_build`` is called once per build (e.g. a Spark accumulator += 1).
    """
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    torch.set_num_threads(max(1, threads))
    faiss.omp_set_num_threads(max(1, threads))
    b = get_bundle()
    cv = CoVisitation.from_arrays(b.covisit_arrays, b.covisit_meta) if b.covisit_arrays is not None else None
    models = WorkerModels(
        candidate=build_candidate(b.candidate_config, b.candidate_quantiles, b.candidate_weights),
        index=None if b.index_kind == "flat" else ix.deserialize(b.index),
        ranker=None if b.ranker_weights is None else build_ranker(b.ranker_config, b.ranker_quantiles,
                                                                  b.ranker_weights),
        covisit=cv,
    )
    if cv is not None or models.index is None:
        models.table = folded_table(models.candidate)
    while len(_CACHE) >= _MAX_CACHED:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = models
    if on_build is not None:
        on_build()
    return models


def folded_table(model: CandidateModel) -> np.ndarray:
    """[V, D+1] float32 [v, b] (rows 0 and 1 zero): inner product with ``fold_user(u)`` = exact logits."""
    return np.ascontiguousarray(model.video_embeddings(fold_bias=True).numpy(), dtype=np.float32)
