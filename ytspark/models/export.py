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

Publishing is atomic: everything is written to ``<kind>/.tmp-<version>`` and
renamed into place, then ``LATEST`` is replaced with ``os.replace``; a
killed export leaves only a ``.tmp-*`` directory that nothing reads. Loading
never unpickles: weights go through ``torch.load(weights_only=True)``, arrays
through ``np.load(allow_pickle=False)``, everything else is JSON.
Model directories live on the local (or a mounted) filesystem; scoring ships
their content to Spark executors itself.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

FORMAT = "ytspark-model"
FORMAT_VERSION = 1
KINDS = ("candidate", "ranker")


class ModelDirError(ValueError):
    """A model directory is missing, incomplete or from another format version; the message says what to do."""


def new_version() -> str:
    """A sortable, unique version name: UTC time + a short random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=float))


def write_model_dir(models_root: str | os.PathLike, kind: str, *, state_dict: Mapping[str, torch.Tensor],
                    meta: dict, arrays: Mapping[str, np.ndarray] | None = None,
                    json_files: Mapping[str, object] | None = None, version: str | None = None) -> Path:
    """Publish a model directory under ``models_root/kind/<version>`` and point ``LATEST`` at it.

    ``json_files`` maps relative paths (``"vocab/video.json"``, ``"metrics.json"``)
    to JSON-serialisable objects. Returns the published directory.
    """
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {KINDS}, got '{kind}'")
    version = version or new_version()
    base = Path(models_root) / kind
    base.mkdir(parents=True, exist_ok=True)
    tmp, final = base / f".tmp-{version}", base / version
    if final.exists():
        raise ModelDirError(f"model version {final} already exists; versions are immutable")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, tmp / "weights.pt")
        for name, arr in (arrays or {}).items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        for rel, obj in (json_files or {}).items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            _write_json(p, obj)
        _write_json(tmp / "MODEL.json", {**meta, "format": FORMAT, "format_version": FORMAT_VERSION,
                                         "kind": kind, "version": version,
                                         "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                         "arrays": sorted((arrays or {}).keys())})
        (tmp / "_SUCCESS").write_text("")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    latest_tmp = base / f".LATEST.{uuid.uuid4().hex[:6]}"
    latest_tmp.write_text(version + "\n")
    os.replace(latest_tmp, base / "LATEST")
    return final


def resolve_model_dir(path: str | os.PathLike, kind: str) -> Path:
    """A published model directory from either the directory itself, ``<root>/<kind>`` or ``<root>``.

    The latter two follow ``LATEST``.
    """
    p = Path(path)
    if (p / "MODEL.json").exists():
        return p
    for base in (p, p / kind):
        latest = base / "LATEST"
        if latest.exists():
            target = base / latest.read_text().strip()
            if (target / "MODEL.json").exists():
                return target
            raise ModelDirError(f"{latest} points at {target}, which is not a model directory; "
                                f"retrain with `ytspark train-{'candidates' if kind == 'candidate' else 'ranker'}`")
    raise ModelDirError(f"no {kind} model at {p} (no MODEL.json, no LATEST); train one first with "
                        f"`ytspark train-{'candidates' if kind == 'candidate' else 'ranker'}` or pass --model DIR")


@dataclass
class ModelDir:
    """A loaded model directory: metadata, tensor state dict and exported arrays (loaded on first use)."""

    path: Path
    meta: dict
    _arrays: dict = field(default_factory=dict, repr=False)

    @property
    def version(self) -> str:
        return self.meta["version"]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return torch.load(self.path / "weights.pt", map_location="cpu", weights_only=True)

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            f = self.path / f"{name}.npy"
            if not f.exists():
                raise ModelDirError(f"model directory {self.path} has no array '{name}' ({f} missing)")
            self._arrays[name] = np.load(f, allow_pickle=False)
        return self._arrays[name]

    def json(self, rel: str):
        f = self.path / rel
        if not f.exists():
            raise ModelDirError(f"model directory {self.path} has no {rel}")
        return json.loads(f.read_text())


def read_model_dir(path: str | os.PathLike, kind: str) -> ModelDir:
    """Open a published model directory of ``kind``, checking its format and version."""
    p = resolve_model_dir(path, kind)
    if not (p / "_SUCCESS").exists():
        raise ModelDirError(f"model directory {p} is incomplete (no _SUCCESS); retrain or pick another version")
    meta = json.loads((p / "MODEL.json").read_text())
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
