"""Quantile normalisation of continuous features (paper section 4.1: x -> CDF(x) in [0, 1]).

Fit: :func:`fit_quantiles` computes boundaries with Spark's ``approxQuantile``.
Apply: :func:`cdf` maps values to their interpolated quantile, so boundary i of
n maps to i / (n - 1); values outside the range clip to 0 or 1.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pyspark.sql import DataFrame


def fit_quantiles(df: DataFrame, columns: Sequence[str], n: int = 20, rel_error: float = 0.001) -> dict[str, list[float]]:
    """Return {column: sorted unique boundaries} at n evenly spaced probabilities in [0, 1]."""
    probs = [i / (n - 1) for i in range(n)]
    values = df.approxQuantile(list(columns), probs, rel_error)
    return {c: sorted(set(float(x) for x in v)) for c, v in zip(columns, values)}


def cdf(x: np.ndarray, boundaries: Sequence[float]) -> np.ndarray:
    """Piecewise-linear empirical CDF of ``x`` given boundaries -> float32 in [0, 1] (same shape as x)."""
    b = np.asarray(boundaries, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if len(b) == 0:
        return np.zeros(x.shape, np.float32)
    if len(b) == 1:
        return (x >= b[0]).astype(np.float32)
    return np.interp(x, b, np.linspace(0.0, 1.0, len(b))).astype(np.float32)
