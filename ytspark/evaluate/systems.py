"""Our own systems as evaluation entries: the candidate model alone, and candidate + ranking.

``candidate_topk(model_dir, prepared_dir, evalset, k)`` computes user vectors
from the split's candidate rows (the same inputs the model trained on, example
age 0 as at serving), scores the whole catalogue with the exported
``u · v + b``, excludes the user's seen videos and keeps the K best: lists in
``evalset.user_ids`` order for :func:`ytspark.evaluate.job.add_system`.
"""
from __future__ import annotations

import numpy as np
import torch

from ytspark import schema as S
from ytspark.evaluate.protocol import EvalSet
from ytspark.evaluate.retrieval import topk_excluding
from ytspark.models.export import load_candidate
from ytspark.models.features import batch_from_numpy
from ytspark.train.candidate_task import load_split


@torch.no_grad()
def candidate_user_vectors(model_dir: str, prepared_dir: str, evalset: EvalSet):
    """(model, u [B, D]) for ``evalset``'s users (rows in its order) from the split's candidate rows."""
    model, md = load_candidate(model_dir)
    if md.meta["vocab_sizes"]["video"] != evalset.n_items:
        raise ValueError(f"candidate model {md.path} has {md.meta['vocab_sizes']['video']} videos but "
                         f"{prepared_dir} has {evalset.n_items}: evaluate a model trained on this prepared data")
    cols = load_split(prepared_dir, evalset.split)
    cols = {k: evalset.align(cols[S.USER_ID], v) for k, v in cols.items()}
    parts = [model.user_vector(batch_from_numpy({k: v[lo:lo + 4096] for k, v in cols.items()}, serving=True))
             for lo in range(0, len(evalset), 4096)]
    return model, torch.cat(parts) if parts else torch.zeros(0, model.config.embed_dim)


@torch.no_grad()
def candidate_topk(model_dir: str, prepared_dir: str, evalset: EvalSet, k: int) -> np.ndarray:
    """int64 [B, k] top-K of the candidate model over the whole catalogue, seen videos excluded."""
    model, u = candidate_user_vectors(model_dir, prepared_dir, evalset)
    return topk_excluding(lambda a, b: model.logits_full(u[a:b]).numpy(), evalset, k)
