"""Calibration of the ranker's serving score to expected watch seconds per impression.

The weighted logistic regression's odds exp(logit) estimate E[T] / (1 - P(click))
(:mod:`ytspark.models.ranker`): the paper's "≈ E[T]" needs a small click
probability, and logged impressions are clicked far more often (on the embedded
default the top decile predicted ~10x the observed watch time). Serving keeps
the network's order and reports, as ``score``, a calibrated value: a monotone
map from log exp(logit) to the mean observed watch seconds per impression,
fitted on the validation rows at export (stored in the ranker's MODEL.json
``calibration``):

1. the rows are sorted by prediction and cut into ``n_bins`` bins of equal size;
2. per bin: the mean log prediction (x) and the mean observed watch seconds,
   0 for unclicked rows (y);
3. y is made non-decreasing in x by pooling adjacent violators, weighted by the
   bins' sizes (isotonic regression on the bins);
4. ``apply`` interpolates linearly in log prediction between the bins' x, and
   holds the end values outside them.

Binned isotonic rather than a click head times a watch-time head: it needs no
second network or retraining, cannot change the order the ranker was chosen
for (it is applied to the reported score only; equal x never reorder), and is
measured per decile on validation like the report's calibration table.
"""
from __future__ import annotations

import numpy as np

METHOD = "binned-isotonic"


def _pool_adjacent_violators(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The weighted least-squares non-decreasing fit of ``y`` (PAV)."""
    vals, wts, sizes = [], [], []
    for v, c in zip(y.tolist(), w.tolist()):
        vals.append(v)
        wts.append(c)
        sizes.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            tw = wts[-2] + wts[-1]
            vals[-2] = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / tw
            wts[-2] = tw
            sizes[-2] += sizes[-1]
            vals.pop(), wts.pop(), sizes.pop()
    return np.repeat(np.asarray(vals, np.float64), sizes)


def fit(pred_watch, watch_seconds, n_bins: int = 20) -> dict:
    """The calibration map (a JSON-able dict) of predictions ``pred_watch`` [N] (exp(logit), > 0) against the
    observed ``watch_seconds`` [N] (0 when not clicked)."""
    p = np.asarray(pred_watch, np.float64)
    w = np.asarray(watch_seconds, np.float64)
    if p.shape != w.shape or p.ndim != 1:
        raise ValueError(f"calibration.fit: pred_watch and watch_seconds must be [N] alike, got {p.shape}, {w.shape}")
    ok = np.isfinite(p) & (p > 0) & np.isfinite(w)
    p, w = p[ok], w[ok]
    if not len(p):
        return {"method": METHOD, "x_log_pred": [], "y_watch_s": [], "n": 0}
    order = np.argsort(p, kind="stable")
    bins = [b for b in np.array_split(order, min(int(n_bins), len(p))) if len(b)]
    x = np.array([np.log(p[b]).mean() for b in bins])
    y = np.array([w[b].mean() for b in bins])
    y = _pool_adjacent_violators(y, np.array([len(b) for b in bins], np.float64))
    return {"method": METHOD, "x_log_pred": [round(float(v), 6) for v in x],
            "y_watch_s": [round(float(v), 4) for v in y], "n": int(len(p))}


def apply(cal: dict | None, pred_watch) -> np.ndarray:
    """Calibrated expected watch seconds of predictions ``pred_watch`` (any shape; -inf / 0 stay as they are);
    the predictions themselves when ``cal`` is None or empty (rankers exported before calibration)."""
    p = np.asarray(pred_watch)
    if not cal or not cal.get("x_log_pred"):
        return p
    x = np.asarray(cal["x_log_pred"], np.float64)
    y = np.asarray(cal["y_watch_s"], np.float64)
    out = p.astype(np.float64, copy=True)
    ok = np.isfinite(p) & (p > 0)
    out[ok] = np.interp(np.log(p[ok].astype(np.float64)), x, y)
    return out.astype(p.dtype if np.issubdtype(p.dtype, np.floating) else np.float64)
