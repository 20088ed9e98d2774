"""What the candidate and ranking networks share: the config <-> MODEL.json dict, the model built from a
config and prepare's quantile boundaries, and the ReLU tower.

- :class:`ModelConfig`: ``to_dict`` / ``from_dict`` for the frozen config dataclasses (lists back to
  tuples; an unknown key is a model directory from another ytspark version).
- :class:`QuantileModel`: ``self.config`` and ``self.norm`` (the
  :class:`~ytspark.models.features.QuantileNormalizer` of ``config.quantile_features()``).
- :func:`relu_tower`: Linear-ReLU(-Dropout) layers over ``hidden``, then a Linear to ``out``.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Mapping, Sequence

from torch import nn

from ytspark.models.features import QuantileNormalizer


class ModelConfig:
    """Mixin for a model's frozen config dataclass: the dict MODEL.json stores, and back."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping):
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise KeyError(f"{cls.__name__}: unknown key(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}. "
                           "The model directory is from another ytspark version: retrain it")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class QuantileModel(nn.Module):
    """A network over ``config``'s inputs whose continuous features are normalised by prepare's boundaries
    (``quantiles``: {feature: boundaries}, the ``table`` section of quantiles.json)."""

    def __init__(self, config, quantiles: Mapping[str, Sequence[float]], table: str):
        super().__init__()
        self.config = config
        self.norm = QuantileNormalizer.of(config.quantile_features(), quantiles, type(self).__name__, table)


def relu_tower(width: int, hidden: Sequence[int], dropout: float, out: int) -> nn.Sequential:
    """[width] -> hidden layers (Linear, ReLU, Dropout when dropout > 0) -> Linear to [out]."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)
