"""``candidate.encoder = auto``: train the bag and the sequence encoder, publish the one that wins on validation.

Each encoder trains as its own run (own checkpoints, own model directory
under ``<models_root>/candidate/_auto/<encoder>``). The figure compared is
what serving retrieves with: the validation HR@eval_k of the network fused
with co-visitation at its chosen weight (the best of the export's
``covisit["val_hr@k"]`` table; the network alone when co-visitation is off);
ties go to bag. The winner is republished unchanged under
``<models_root>/candidate`` (so ``LATEST`` points at it) with
``encoder_choice`` in MODEL.json: the chosen encoder and both encoders'
figures, network alone and fused.
"""
from __future__ import annotations

import logging
from typing import Callable

from ytspark import storage
from ytspark.config import Config
from ytspark.models.export import ModelDir, read_model_dir, write_model_dir

log = logging.getLogger(__name__)

ENCODERS = ("bag", "sequence")
_WRITTEN_BY_EXPORT = ("format", "format_version", "kind", "version", "created", "arrays")


def validation_figures(md: ModelDir) -> dict:
    """{"network": best validation monitor, "fused": best of the co-visitation weight table} of a model directory."""
    monitor = md.meta["monitor"]
    network = float((md.json("metrics.json").get("best") or {}).get(monitor, 0.0))
    table = (md.meta.get("covisit") or {}).get(f"val_{monitor}") or {}
    return {"monitor": monitor, "network": network, "fused": max([network, *map(float, table.values())])}


def republish(md: ModelDir, models_root: str, extra_meta: dict) -> str:
    """Publish a copy of ``md`` under ``models_root`` with ``extra_meta`` added to its MODEL.json."""
    meta = {k: v for k, v in md.meta.items() if k not in _WRITTEN_BY_EXPORT}
    files = {rel: md.json(rel) for rel in storage.list_files(md.path)
             if rel.endswith(".json") and rel != "MODEL.json"}
    return write_model_dir(models_root, "candidate", state_dict=md.state_dict(), meta={**meta, **extra_meta},
                           arrays={name: md.array(name) for name in md.meta.get("arrays", [])}, json_files=files)


def train_auto(cfg: Config, models_root: str, train_one: Callable[[str, str], dict]) -> dict:
    """Train both encoders with ``train_one(encoder, models_root)``; rank 0's result of the published winner."""
    results, figures = {}, {}
    for encoder in ENCODERS:
        root = storage.join(models_root, "candidate", "_auto", encoder)
        results[encoder] = train_one(encoder, root)
        figures[encoder] = validation_figures(read_model_dir(results[encoder]["model_dir"], "candidate"))
        log.info("candidate.encoder=auto: %s validation %s", encoder, figures[encoder])
    chosen = max(ENCODERS, key=lambda e: (figures[e]["fused"], e == "bag"))
    choice = {"chosen": chosen, "rule": "higher fused validation figure, ties to bag",
              "validation": figures}
    path = republish(read_model_dir(results[chosen]["model_dir"], "candidate"), models_root,
                     {"encoder_choice": choice})
    log.info("candidate.encoder=auto: published %s (%s)", chosen, path)
    return {**results[chosen], "model_dir": str(path), "encoder_choice": choice}
