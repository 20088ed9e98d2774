"""The serving order of ranked candidates, by the serving objective (``ranker.objective``).

Three objectives, one key each (higher first), read from the configuration where the order is made
(the nightly ``score`` job and evaluate's "candidate + ranking"), so one trained pair of models serves any
of them:

* ``watch_time``: the ranker's logit alone, i.e. expected watch time per impression (the paper's order);
* ``next_watch``: the candidate model's retrieval logit alone (u·v + b, plus its fused co-visitation term),
  the order of the network trained for the next watch. The ranker is not retrained for clicks: on logged
  impressions its label is a click weighted by watch time on what was shown, not the next watch over the
  catalogue, and the candidate model already is the next-watch model; the ranker still computes the
  written ``score`` (calibrated expected watch seconds) of each listed video;
* ``blend``: ranker logit + w * retrieval logit, with w = ``ranker.blend_weight`` when >= 0, else the
  weight the ranker's export chose on its validation rows (below, MODEL.json ``blend``).

The paper serves by the ranker's expected watch time alone (w = 0). That is
right when the ranker's label (clicks weighted by watch time on logged
impressions) is what the list should maximise, and the ranker has seen
serving-like retrieval scores. Where neither is sure (logs without
impressions, e.g. MovieLens, where the ranker learns from the candidate
model's own retrievals of labels it was trained on, so its retrieval scores
look more trustworthy in training than at serving) the candidate model's
logit is still the strongest single signal of the next watch, and the ranker
should only move what it has evidence for. The export chooses one weight per
(candidate model, ranker) pair on held-out rows, among ``ranker.blend_weights``:

    key = log E[watch time] + w * (u·v + b)      (w = 0: the paper's exp(logit))

i.e. expected watch time times P(next watch)^w. Criteria, by how the ranker's
rows were made (``rank_rows_mode``):

* ``candidate_negatives``: each validation target's *full* retrieved slate
  (every unseen video of the candidate model's top ``score.k``, the target
  clicked): NDCG@10 of the target within its slate, exactly the next-watch
  NDCG@10 of reranking the top ``score.k`` (targets the model did not
  retrieve are misses for every w, so they do not change the choice);
* ``impressions``: the paper's weighted per-user loss on the validation
  impressions (lower is better).

Ties go to the smaller weight (the ranker's own order).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ytspark.metrics import list_metrics, slate_ranks
from ytspark.models.rank_metrics import weighted_per_user_loss

OBJECTIVES = ("watch_time", "next_watch", "blend")
AUTO = -1.0  # ranker.blend_weight: the weight chosen on validation (MODEL.json "blend")
CRITERIA = {"candidate_negatives": "ndcg@10", "impressions": "weighted_per_user_loss"}


def check_objective(objective: str, blend_weight: float, weights: Sequence[float]) -> None:
    """Raise ValueError naming the config key when ``ranker.objective`` / ``blend_weight`` / ``blend_weights``
    are unusable."""
    if objective not in OBJECTIVES:
        raise ValueError(f"ranker.objective must be one of {OBJECTIVES}, got '{objective}'")
    if not (blend_weight == AUTO or (np.isfinite(blend_weight) and blend_weight >= 0)):
        raise ValueError(f"ranker.blend_weight must be {AUTO:g} (chosen on validation) or a finite weight >= 0, "
                         f"got {blend_weight}")
    auto = objective == "blend" and blend_weight == AUTO
    if (auto and not weights) or any(not np.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"ranker.blend_weights must be a{' non-empty' if auto else ''} list of finite weights >= 0 "
                         f"(objective 'blend' with blend_weight {AUTO:g} chooses among them), got {list(weights)}")


@dataclass(frozen=True)
class ServingOrder:
    """How ranked candidates are ordered: an objective of :data:`OBJECTIVES` and, for "blend", its weight."""

    objective: str = "watch_time"
    weight: float = 0.0

    def key(self, ranker_logit: np.ndarray, retrieval: np.ndarray) -> np.ndarray:
        """The order key (higher first) of candidates with these ranker and retrieval logits."""
        if self.objective == "next_watch":
            return np.asarray(retrieval, np.float64)
        return blend_key(ranker_logit, retrieval, self.weight if self.objective == "blend" else 0.0)


def serving_order(objective: str, blend_weight: float, meta: dict | None) -> ServingOrder:
    """The :class:`ServingOrder` of ``ranker.objective`` and ``ranker.blend_weight`` for a ranker whose MODEL.json
    meta is ``meta`` (its validation choice is the "blend" weight when ``blend_weight`` is :data:`AUTO`)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"ranker.objective must be one of {OBJECTIVES}, got '{objective}'")
    if objective != "blend":
        return ServingOrder(objective, 0.0)
    return ServingOrder("blend", float(blend_weight) if blend_weight >= 0 else retrieval_weight(meta or {}))


def blend_key(ranker_logit: np.ndarray, retrieval: np.ndarray, weight: float) -> np.ndarray:
    """The serving order key (higher first): ranker logit + weight * retrieval logit."""
    return np.asarray(ranker_logit, np.float64) + float(weight) * np.asarray(retrieval, np.float64)


def slate_metrics(user_ids, key: np.ndarray, clicked: np.ndarray, k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k of the clicked rows, each ranked among the unclicked rows of its user's slate.

    One slate per user (all of that user's rows). A clicked row's rank is the
    number of the user's unclicked rows with a key above it, plus half of those
    tied with it (rounded down): ties are neither a free win nor a loss
    (:func:`ytspark.metrics.slate_ranks`). Users without a clicked row are
    skipped; ``n`` counts clicked rows.
    """
    ranks = slate_ranks(user_ids, key, clicked)
    return {**list_metrics(ranks, [k], mrr=False), "n": int(len(ranks))}


def paper_blend(rows: int = 0) -> dict:
    """The blend of the paper's serving order (w = 0, nothing tried)."""
    return {"retrieval_weight": 0.0, "criterion": None, "by_weight": {}, "rows": int(rows)}


def choose_weight(rows_mode: str, weights: Sequence[float], user_ids, ranker_logit: np.ndarray,
                  retrieval: np.ndarray, clicked: np.ndarray, watch_seconds: np.ndarray) -> dict:
    """The blend of one ranker: {"retrieval_weight", "criterion", "by_weight": {w: value}, "rows"}.

    No weights, no rows, or rows without real retrieval scores give w = 0 untried.
    """
    if any(not np.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"ranker.blend_weights must be a list of finite weights >= 0, got {list(weights)}")
    n = len(ranker_logit)
    if not len(weights) or n == 0 or rows_mode not in CRITERIA:
        return paper_blend(n)
    criterion = CRITERIA[rows_mode]
    by_weight: dict[float, float] = {}
    for w in sorted({float(x) for x in weights}):
        key = blend_key(ranker_logit, retrieval, w)
        if criterion == "ndcg@10":
            by_weight[w] = slate_metrics(user_ids, key, clicked, 10)["ndcg@10"]
        else:
            by_weight[w] = weighted_per_user_loss(user_ids, key, clicked, watch_seconds)["weighted_per_user_loss"]
    sign = 1.0 if criterion == "ndcg@10" else -1.0
    finite = [w for w, v in by_weight.items() if np.isfinite(v)]
    best = max(finite, key=lambda w: (sign * by_weight[w], -w)) if finite else 0.0
    return {"retrieval_weight": best, "criterion": criterion, "by_weight": {str(w): v for w, v in by_weight.items()},
            "rows": int(n)}


def retrieval_weight(meta: dict) -> float:
    """The chosen weight stored in a ranker's MODEL.json (0 for rankers exported before blends existed)."""
    return float((meta.get("blend") or {}).get("retrieval_weight", 0.0))
