"""Versioned model directories: what training exports and scoring loads.

Layout (one directory per trained model, never modified after publishing)::

    <models_root>/<kind>/<version>/        kind = candidate | ranker
      MODEL.json            format, format_version, kind, version, created, model_config,
                            train_config, prepared (input path), vocab_sizes, monitor
      weights.pt            state dict of tensors only (load: torch.load(weights_only=True))
      <name>.npy            exported arrays (candidate: video_embeddings [V, D] float32,
                            row = video vocab index, rows 0/1 zero; video_bias [V])
      vocab/<name>.json     the vocabularies the model was trained with
      quantiles.json        quantile boundaries of its continuous features
      metrics.json          per-epoch history and final metrics
      _SUCCESS
    <models_root>/<kind>/LATEST            text: the newest published version

``models_root`` is a local path or any URL :mod:`ytspark.storage` opens
(``file://``, ``hdfs://``, ``s3://``, ``s3a://``): every read and write goes
through it. Publishing is atomic: everything is written to
``<kind>/.tmp-<version>`` and published as ``<kind>/<version>`` by
:func:`ytspark.storage.staged_dir` (a rename, or on S3 a copy with
``_SUCCESS`` written last), then ``LATEST`` is replaced in one atomic write;
a killed export leaves only a ``.tmp-*`` directory or a version without
``_SUCCESS``, which no reader accepts. Loading never unpickles: weights go
through ``torch.load(weights_only=True)``, arrays through
``np.load(allow_pickle=False)``, everything else is JSON.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from ytspark import storage

FORMAT = "ytspark-model"
FORMAT_VERSION = 1
KINDS = ("candidate", "ranker")


class ModelDirError(ValueError):
    """A model directory is missing, incomplete or from another format version; the message says what to do."""


def new_version() -> str:
    """A sortable, unique version name: UTC time + a short random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def write_model_dir(models_root: str | os.PathLike, kind: str, *, state_dict: Mapping[str, torch.Tensor],
                    meta: dict, arrays: Mapping[str, np.ndarray] | None = None,
                    json_files: Mapping[str, object] | None = None, version: str | None = None) -> str:
    """Publish a model directory under ``models_root/kind/<version>`` and point ``LATEST`` at it.

    ``json_files`` maps relative paths (``"vocab/video.json"``, ``"metrics.json"``)
    to JSON-serialisable objects. Returns the published directory.
    """
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {KINDS}, got '{kind}'")
    version = version or new_version()
    base = storage.join(models_root, kind)
    tmp, final = storage.join(base, f".tmp-{version}"), storage.join(base, version)
    if storage.path_exists(final):
        raise ModelDirError(f"model version {final} already exists; versions are immutable")
    with storage.staged_dir(final, tmp=tmp) as d:
        storage.save_torch(storage.join(d, "weights.pt"),
                           {k: v.detach().cpu().contiguous() for k, v in state_dict.items()})
        for name, arr in (arrays or {}).items():
            storage.save_npy(storage.join(d, f"{name}.npy"), arr)
        for rel, obj in (json_files or {}).items():
            storage.save_json(storage.join(d, rel), obj)
        storage.save_json(storage.join(d, "MODEL.json"),
                          {**meta, "format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                           "version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "arrays": sorted((arrays or {}).keys())})
    storage.save_text(storage.join(base, "LATEST"), version + "\n")
    return final


def resolve_model_dir(path: str | os.PathLike, kind: str) -> str:
    """A published model directory from either the directory itself, ``<root>/<kind>`` or ``<root>``.

    The latter two follow ``LATEST``. Paths are local paths or URLs (returned as given, joined with '/').
    """
    p = os.fspath(path).rstrip("/")
    if storage.path_exists(storage.join(p, "MODEL.json")):
        return p
    for base in (p, storage.join(p, kind)):
        latest = storage.join(base, "LATEST")
        if storage.path_exists(latest):
            target = storage.join(base, storage.load_text(latest).strip())
            if storage.path_exists(storage.join(target, "MODEL.json")):
                return target
            raise ModelDirError(f"{latest} points at {target}, which is not a model directory; "
                                f"retrain with `ytspark train-{'candidates' if kind == 'candidate' else 'ranker'}`")
    raise ModelDirError(f"no {kind} model at {p} (no MODEL.json, no LATEST); train one first with "
                        f"`ytspark train-{'candidates' if kind == 'candidate' else 'ranker'}` or pass --model DIR")


@dataclass
class ModelDir:
    """A loaded model directory: metadata, tensor state dict and exported arrays (loaded on first use)."""

    path: str  # local path or URL
    meta: dict
    _arrays: dict = field(default_factory=dict, repr=False)

    @property
    def version(self) -> str:
        return self.meta["version"]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return storage.load_torch(self.file("weights.pt"))

    def weights_bytes(self) -> bytes:
        """``weights.pt`` as bytes (to ship to executors; load with ``torch.load(weights_only=True)``)."""
        return storage.load_bytes(self.file("weights.pt"))

    def file(self, rel: str) -> str:
        """The URL of ``rel`` inside this model directory."""
        return storage.join(self.path, rel)

    def names(self, rel: str = "") -> list[str]:
        """File names inside ``rel`` (e.g. ``"vocab"``) of this model directory."""
        return storage.list_names(self.file(rel)) if rel else storage.list_names(self.path)

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            f = self.file(f"{name}.npy")
            if not storage.path_exists(f):
                raise ModelDirError(f"model directory {self.path} has no array '{name}' ({f} missing)")
            self._arrays[name] = storage.load_npy(f)
        return self._arrays[name]

    def json(self, rel: str):
        f = self.file(rel)
        if not storage.path_exists(f):
            raise ModelDirError(f"model directory {self.path} has no {rel}")
        return storage.load_json(f)


def read_model_dir(path: str | os.PathLike, kind: str) -> ModelDir:
    """Open a published model directory of ``kind``, checking its format and version."""
    p = resolve_model_dir(path, kind)
    if not storage.is_published(p):
        raise ModelDirError(f"model directory {p} is incomplete (no _SUCCESS); retrain or pick another version")
    meta = storage.load_json(storage.join(p, "MODEL.json"))
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(f"model directory {p} has format {meta.get('format')!r} version "
                            f"{meta.get('format_version')!r}; this ytspark reads {FORMAT!r} version {FORMAT_VERSION}: "
                            "retrain the model with this version")
    if meta.get("kind") != kind:
        raise ModelDirError(f"model directory {p} holds a '{meta.get('kind')}' model, expected '{kind}'")
    return ModelDir(p, meta)


def load_candidate(path: str | os.PathLike):
    """(CandidateModel in eval mode, ModelDir) from a candidate model directory."""
    from ytspark.models.candidate import CandidateConfig, CandidateModel

    md = read_model_dir(path, "candidate")
    model = CandidateModel(CandidateConfig.from_dict(md.meta["model_config"]), md.json("quantiles.json"))
    model.load_state_dict(md.state_dict())
    return model.eval(), md


def load_ranker(path: str | os.PathLike):
    """(RankerModel in eval mode, ModelDir) from a ranker model directory."""
    from ytspark.models.ranker import RankerConfig, RankerModel

    md = read_model_dir(path, "ranker")
    model = RankerModel(RankerConfig.from_dict(md.meta["model_config"]), md.json("quantiles.json"))
    model.load_state_dict(md.state_dict())
    return model.eval(), md
