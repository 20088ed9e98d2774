"""Ranking rows to tensors: one batch of :data:`ytspark.schema.RANKING_SCHEMA` rows -> :class:`RankBatch`.

:func:`rank_batch_from_numpy` takes a dict of column arrays over B rows (a
Petastorm ``make_batch_reader`` row's ``_asdict()``, a pandas frame's columns,
or torch tensors). ``watch_hist`` may be a 2-D array or a 1-D object array of
equal-length 1-D arrays (what pyarrow/Petastorm give for list columns), as in
:func:`ytspark.models.features.batch_from_numpy`. Continuous features stay raw
(the model normalises them with its quantile boundaries).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

import numpy as np
import torch

from ytspark import schema as S
from ytspark.models.features import _matrix, _numpy, _tensor

CATEGORICAL_COLUMNS = (S.RANK_USER_LANGUAGE, S.RANK_VIDEO_LANGUAGE, S.RANK_CHANNEL, S.RANK_CATEGORY, S.RANK_SOURCE)
LABEL_COLUMNS = (S.RANK_CLICKED, S.RANK_WATCH_SECONDS, S.RANK_WEIGHT)


@dataclass
class RankBatch:
    """One batch of impressions as tensors (B rows, H history slots, most recent first).

    video_idx [B] int64 impression video (0 pad, 1 OOV); watch_hist [B, H] int64
    watched video idx (0 = pad); language_idx, video_language_idx, channel_idx,
    category_idx, source_idx [B] int64; continuous [B, C] float32 raw values in
    :data:`ytspark.schema.RANK_CONTINUOUS` order. Labels (None at serving):
    clicked [B] float32 0/1, watch_seconds [B] float32 (0 when not clicked),
    weight [B] float32 (watch seconds if clicked, else 1). user_id: numpy array
    [B] of the rows' user ids (for per-user metrics), or None; ``to`` leaves it.
    """

    video_idx: torch.Tensor
    watch_hist: torch.Tensor
    language_idx: torch.Tensor
    video_language_idx: torch.Tensor
    channel_idx: torch.Tensor
    category_idx: torch.Tensor
    source_idx: torch.Tensor
    continuous: torch.Tensor
    clicked: torch.Tensor | None = None
    watch_seconds: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    user_id: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.video_idx.shape[0])

    def column(self, name: str) -> torch.Tensor:
        """The raw continuous feature ``name`` (one of RANK_CONTINUOUS) as [B] float32."""
        if name not in S.RANK_CONTINUOUS:
            raise KeyError(f"ranking batch: '{name}' is not a continuous feature; have {list(S.RANK_CONTINUOUS)}")
        return self.continuous[:, S.RANK_CONTINUOUS.index(name)]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "RankBatch":
        """A copy with every tensor on ``device`` (user_id stays a numpy array)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        return RankBatch(**out)


def _vector(x, name: str, dtype, rows: int) -> np.ndarray:
    a = _numpy(x, name, "ranking batch")
    if a.ndim != 1:
        raise ValueError(f"ranking batch: column '{name}' must be 1-D [B], got shape {a.shape}")
    if a.shape[0] != rows:
        raise ValueError(f"ranking batch: column '{name}' has {a.shape[0]} rows, '{S.RANK_VIDEO}' has {rows}")
    return a.astype(dtype, copy=False)


def rank_batch_from_numpy(d: Mapping[str, object], serving: bool = False) -> RankBatch:
    """Ranking rows (dict of column -> array over B rows) -> :class:`RankBatch` (CPU tensors).

    Needs the :data:`~ytspark.schema.RANKING_SCHEMA` feature columns and, unless
    ``serving``, ``clicked``, ``watch_seconds`` and ``weight`` (with
    ``serving=True`` labels are read when present, else None). ``user_id`` is
    kept when present; other columns (split, impression_ts) are ignored.
    Raises KeyError for missing columns, ValueError for misshapen columns,
    clicked outside {0, 1}, negative or non-finite weights.
    """
    need = [S.RANK_VIDEO, S.CAND_WATCH_HIST, *CATEGORICAL_COLUMNS, *S.RANK_CONTINUOUS]
    if not serving:
        need += list(LABEL_COLUMNS)
    missing = [c for c in need if c not in d]
    if missing:
        raise KeyError(f"ranking batch: missing column(s) {missing}; expected the columns of "
                       f"ytspark.schema.RANKING_SCHEMA (got {sorted(d)})")
    video = _numpy(d[S.RANK_VIDEO], S.RANK_VIDEO, "ranking batch")
    if video.ndim != 1:
        raise ValueError(f"ranking batch: column '{S.RANK_VIDEO}' must be 1-D [B], got shape {video.shape}")
    B = video.shape[0]
    video = video.astype(np.int64, copy=False)
    hist = _matrix(d[S.CAND_WATCH_HIST], S.CAND_WATCH_HIST, np.int64, "ranking batch")
    if hist.shape[0] != B:
        raise ValueError(f"ranking batch: column '{S.CAND_WATCH_HIST}' has {hist.shape[0]} rows, "
                         f"'{S.RANK_VIDEO}' has {B}")
    cats = {c: _vector(d[c], c, np.int64, B) for c in CATEGORICAL_COLUMNS}
    cont = np.stack([_vector(d[c], c, np.float32, B) for c in S.RANK_CONTINUOUS], axis=1) if B \
        else np.zeros((0, len(S.RANK_CONTINUOUS)), np.float32)
    labels: dict[str, torch.Tensor | None] = {}
    for c in LABEL_COLUMNS:
        labels[c] = None if d.get(c) is None else _vector(d[c], c, np.float32, B)
    clicked, weight = labels[S.RANK_CLICKED], labels[S.RANK_WEIGHT]
    if clicked is not None and not np.all((clicked == 0) | (clicked == 1)):
        raise ValueError(f"ranking batch: column '{S.RANK_CLICKED}' must be 0 or 1, got values "
                         f"{np.unique(clicked)[:10].tolist()}")
    if weight is not None and not (np.all(np.isfinite(weight)) and np.all(weight >= 0)):
        raise ValueError(f"ranking batch: column '{S.RANK_WEIGHT}' must be finite and >= 0 "
                         "(watch seconds if clicked, 1 if not); check the prepare output")
    user = d.get(S.USER_ID)
    user = None if user is None else _numpy(user, S.USER_ID, "ranking batch")
    if user is not None and user.shape != (B,):
        raise ValueError(f"ranking batch: column '{S.USER_ID}' has shape {user.shape}, expected ({B},)")
    t = _tensor
    return RankBatch(
        video_idx=t(video), watch_hist=t(hist),
        language_idx=t(cats[S.RANK_USER_LANGUAGE]), video_language_idx=t(cats[S.RANK_VIDEO_LANGUAGE]),
        channel_idx=t(cats[S.RANK_CHANNEL]), category_idx=t(cats[S.RANK_CATEGORY]),
        source_idx=t(cats[S.RANK_SOURCE]), continuous=t(cont),
        **{k: None if v is None else t(v) for k, v in labels.items()},
        user_id=user,
    )
