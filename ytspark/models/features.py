"""Candidate rows to tensors, and the quantile-CDF normalisation of continuous features.

:func:`batch_from_numpy` takes one batch of :data:`ytspark.schema.CANDIDATE_SCHEMA`
rows as a dict of column arrays (a Petastorm ``make_batch_reader`` row's
``_asdict()``, a pandas frame's columns, or torch tensors) and returns a
:class:`CandidateBatch`. Array columns may be 2-D arrays or 1-D object arrays
of equal-length 1-D arrays (what pyarrow/Petastorm give for list columns).

:class:`QuantileNormalizer` maps a continuous feature to its empirical CDF in
[0, 1] from the boundaries ``prepare`` wrote to ``quantiles.json``
(``["candidates"]``); it is the torch twin of
:func:`ytspark.prepare.quantiles.cdf` (np.interp onto linspace(0, 1, n)).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ytspark import schema as S

HIST_COLUMNS = (S.CAND_WATCH_HIST, S.CAND_WATCH_AGE, S.CAND_SEARCH_HIST)
CONTINUOUS_COLUMNS = (S.USER_AGE, S.CAND_EXAMPLE_AGE, S.CAND_SINCE_LAST, S.CAND_N_WATCHES)
# The candidate-row columns the network reads (label first): what training and evaluation read of a split.
CANDIDATE_FIELDS = [S.CAND_LABEL, *HIST_COLUMNS, S.USER_AGE, S.CAND_SINCE_LAST, S.CAND_N_WATCHES, S.CAND_EXAMPLE_AGE,
                    *S.DEMOGRAPHIC_COLUMNS]


@dataclass
class CandidateBatch:
    """One batch of candidate rows as tensors (B rows, H history slots, most recent first).

    watch_hist [B, H] int64 video idx (0 = pad); watch_hist_age [B, H] float32 days
    from each watch to the label (0 for pad); search_hist [B, H'] int64 token idx;
    demographics [B, 5] int64 in :data:`ytspark.schema.DEMOGRAPHIC_COLUMNS` order;
    user_age, example_age_days, since_last_watch_days, n_prior_watches [B] float32
    (raw values: the model normalises them); label [B] int64, or None at serving.
    """

    watch_hist: torch.Tensor
    watch_hist_age: torch.Tensor
    search_hist: torch.Tensor
    demographics: torch.Tensor
    user_age: torch.Tensor
    example_age_days: torch.Tensor
    since_last_watch_days: torch.Tensor
    n_prior_watches: torch.Tensor
    label: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.watch_hist.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "CandidateBatch":
        """A copy with every tensor on ``device``."""
        return CandidateBatch(**{
            f.name: (None if getattr(self, f.name) is None
                     else getattr(self, f.name).to(device, non_blocking=non_blocking))
            for f in fields(self)
        })


def _numpy(x, name: str, what: str = "candidate batch") -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "to_numpy"):  # pandas Series
        return x.to_numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: column '{name}' is not array-like ({type(x).__name__})") from e


def _matrix(x, name: str, dtype, what: str = "candidate batch") -> np.ndarray:
    """A [B, H] array from a 2-D array or a 1-D object array (or list) of equal-length 1-D arrays.
    ``what`` names the batch in errors."""
    a = _numpy(x, name, what)
    if a.ndim == 1 and (a.dtype == object or len(a) == 0):
        if len(a) == 0:
            return np.zeros((0, 0), dtype)
        lengths = {len(r) for r in a}
        if len(lengths) != 1:
            raise ValueError(f"{what}: rows of array column '{name}' have different lengths "
                             f"{sorted(lengths)}; prepare pads them to history_length, check the input")
        a = np.stack([np.asarray(r) for r in a])
    if a.ndim != 2:
        raise ValueError(f"{what}: column '{name}' must be [B, H] or B arrays, got shape {a.shape}")
    return a.astype(dtype, copy=False)


def _vector(x, name: str, dtype) -> np.ndarray:
    a = _numpy(x, name)
    if a.ndim != 1:
        raise ValueError(f"candidate batch: column '{name}' must be 1-D [B], got shape {a.shape}")
    return a.astype(dtype, copy=False)


def _tensor(a: np.ndarray) -> torch.Tensor:
    """Zero-copy where possible; Petastorm's arrays are read-only, which torch cannot share."""
    if not (a.flags.writeable and a.flags.c_contiguous):
        a = np.array(a, order="C")
    return torch.from_numpy(a)


def batch_from_numpy(d: Mapping[str, object], serving: bool = False) -> CandidateBatch:
    """Candidate rows (dict of column -> array over B rows) -> :class:`CandidateBatch` (CPU tensors).

    Needs the :data:`~ytspark.schema.CANDIDATE_SCHEMA` input columns; other
    columns (user_id, split, label_ts) are ignored. With ``serving=True`` the
    label is optional and ``example_age_days`` is forced to 0 (paper 3.3: the
    model is asked about "now"), whether or not the column is present.
    Arrays already of the target dtype are shared with the tensors, not copied.
    """
    need = [*HIST_COLUMNS, S.USER_AGE, S.CAND_SINCE_LAST, S.CAND_N_WATCHES, *S.DEMOGRAPHIC_COLUMNS]
    if not serving:
        need += [S.CAND_EXAMPLE_AGE, S.CAND_LABEL]
    missing = [c for c in need if c not in d]
    if missing:
        raise KeyError(f"candidate batch: missing column(s) {missing}; expected the columns of "
                       f"ytspark.schema.CANDIDATE_SCHEMA (got {sorted(d)})")
    watch = _matrix(d[S.CAND_WATCH_HIST], S.CAND_WATCH_HIST, np.int64)
    ages = _matrix(d[S.CAND_WATCH_AGE], S.CAND_WATCH_AGE, np.float32)
    if ages.shape != watch.shape:
        raise ValueError(f"candidate batch: '{S.CAND_WATCH_AGE}' has shape {ages.shape} but "
                         f"'{S.CAND_WATCH_HIST}' has {watch.shape}; they must align slot by slot")
    search = _matrix(d[S.CAND_SEARCH_HIST], S.CAND_SEARCH_HIST, np.int64)
    B = watch.shape[0]
    demo = np.stack([_vector(d[c], c, np.int64) for c in S.DEMOGRAPHIC_COLUMNS], axis=1) \
        if B else np.zeros((0, len(S.DEMOGRAPHIC_COLUMNS)), np.int64)
    cont = {c: _vector(d[c], c, np.float32) for c in (S.USER_AGE, S.CAND_SINCE_LAST, S.CAND_N_WATCHES)}
    cont[S.CAND_EXAMPLE_AGE] = (np.zeros(B, np.float32) if serving
                                else _vector(d[S.CAND_EXAMPLE_AGE], S.CAND_EXAMPLE_AGE, np.float32))
    label = d.get(S.CAND_LABEL)
    label = None if label is None else _tensor(_vector(label, S.CAND_LABEL, np.int64))
    for name, a in [(S.CAND_SEARCH_HIST, search), *((c, demo[:, i]) for i, c in enumerate(S.DEMOGRAPHIC_COLUMNS)),
                    *cont.items()]:
        if a.shape[0] != B:
            raise ValueError(f"candidate batch: column '{name}' has {a.shape[0]} rows, '{S.CAND_WATCH_HIST}' has {B}")
    t = _tensor
    return CandidateBatch(
        watch_hist=t(watch), watch_hist_age=t(ages), search_hist=t(search), demographics=t(demo),
        user_age=t(cont[S.USER_AGE]), example_age_days=t(cont[S.CAND_EXAMPLE_AGE]),
        since_last_watch_days=t(cont[S.CAND_SINCE_LAST]), n_prior_watches=t(cont[S.CAND_N_WATCHES]),
        label=label,
    )


class QuantileNormalizer(nn.Module):
    """x -> empirical CDF in [0, 1]: boundary i of n maps to i / (n - 1), linear in between, clipped.

    Same numbers as ``np.interp(x, b, np.linspace(0, 1, n))`` (and
    :func:`ytspark.prepare.quantiles.cdf`, including its degenerate cases:
    no boundary -> 0, one boundary b -> 1[x >= b]). Boundaries are buffers, so
    they follow ``.to(device)`` and are part of the ``state_dict``.
    """

    @classmethod
    def of(cls, features: Sequence[str], quantiles: Mapping[str, Sequence[float]], model: str,
           table: str) -> "QuantileNormalizer":
        """The normaliser of ``features`` from prepare's boundaries; KeyError naming the missing features and the
        quantiles.json section (``table``) to pass to ``model``."""
        missing = [f for f in features if f not in quantiles]
        if missing:
            raise KeyError(f"{model}: no quantile boundaries for {missing}; pass "
                           f"quantiles.json ['{table}'] from prepare")
        return cls({f: quantiles[f] for f in features})

    def __init__(self, boundaries: Mapping[str, Sequence[float]]):
        super().__init__()
        self.names: list[str] = list(boundaries)
        for i, name in enumerate(self.names):
            b = np.asarray(list(boundaries[name]), np.float64)
            if b.ndim != 1 or np.any(np.diff(b) <= 0) or not np.all(np.isfinite(b)):
                raise ValueError(f"quantile boundaries of '{name}' must be finite and strictly increasing, got {b}")
            self.register_buffer(f"b{i}", torch.from_numpy(b))

    def boundaries(self, name: str) -> torch.Tensor:
        if name not in self.names:
            raise KeyError(f"no quantile boundaries for '{name}' (have {self.names}); "
                           "they come from quantiles.json ['candidates'] written by prepare")
        return getattr(self, f"b{self.names.index(name)}")

    def forward(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """x [...] -> float32 [...] in [0, 1]."""
        b = self.boundaries(name)
        n = b.numel()
        x64 = x.to(b.device, torch.float64)
        if n == 0:
            return torch.zeros_like(x64, dtype=torch.float32)
        if n == 1:
            return (x64 >= b[0]).to(torch.float32)
        hi = torch.searchsorted(b, x64.contiguous(), right=True).clamp(1, n - 1)
        lo = hi - 1
        t = ((x64 - b[lo]) / (b[hi] - b[lo])).clamp(0.0, 1.0)
        return ((lo.to(torch.float64) + t) / (n - 1)).to(torch.float32)

    def powers(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """x [B] -> [B, 3] = (x̃, x̃², √x̃) with x̃ the CDF (paper 4.1)."""
        q = self(name, x)
        return torch.stack([q, q * q, q.sqrt()], dim=-1)

    def to_dict(self) -> dict[str, list[float]]:
        return {n: self.boundaries(n).tolist() for n in self.names}
