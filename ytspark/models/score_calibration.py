"""Calibration of the ranker's serving score to expected watch seconds per impression.

The weighted logistic regression's odds exp(logit) estimate E[T] / (1 - P(click))
(:mod:`ytspark.models.ranker`): the paper's "≈ E[T]" needs a small click
probability, and on validation the odds overstate E[T] 2-5x in most deciles of
the embedded default. Serving keeps the network's order and writes, as
``score``, a calibrated value: a strictly increasing map from the logit to the
mean observed watch seconds per impression (0 for unclicked rows), fitted on
the validation rows at export and stored in the ranker's MODEL.json
``calibration`` (:func:`fit`, :func:`apply`). Every map is piecewise log-linear:
knots (logit, watch seconds), log(score) linear in the logit between them and
beyond them with slopes in [``TIE_SLOPE``, 1] (1: the score grows like
exp(logit) itself, as E[T] = odds x (1 - P(click)) can at most; ``TIE_SLOPE``:
a tiny strictly increasing tie-break, never a flat run). Two candidates:

* ``isotonic-loglinear``, flexible:
  1. bins by quantile of the logit, grown from the lowest logit until each holds
     ``min_clicks`` clicked rows and ``n / max_bins`` rows, never splitting equal
     logits (low logits are rarely clicked, so their bins are wider);
  2. per bin the mean observed watch seconds, made strictly increasing by
     pooling adjacent violators *and ties* (weighted by rows); each pooled block
     is a knot at its mean watch seconds;
  3. the knot's logit is where the local log-linear law averages to that mean
     (a power mean of the block's logits, :func:`_power_mean_logit`, not the
     plain mean: exp is convex and the lowest blocks are wide);
  4. the end slopes are the end segments', clipped.
* ``power-law``, two parameters: score = exp(a + b logit), b in [TIE_SLOPE, 1],
  by Poisson likelihood (log link).

``fit(method="auto")``, the export's, keeps the one with the lower Poisson
deviance cross-fitted over two halves of the validation users (stored as
``cv_deviance``). On the embedded default's ~10,600 validation impressions
(~460 clicked; per-decile means rest on 8-135 clicks) the two are within 0.5%
of each other, over 60 random user splits as on the stored one; isotonic with
fewer clicks per bin, or the old equal-size bins, lost 0.5-1.8% there. More
validation clicks favour the isotonic map, fewer the power law.

Distinct logits never share a score, so a decile cut of the served score is the
cut of the logit, never an arbitrary split of a tie (the old map's flat end bins
did that), and the order of the written score is the ranker's order.

Honest check (:func:`cross_fit`, :func:`decile_table`; ``ytspark evaluate``'s
report): each half of the validation users (:func:`user_fold`) is scored by the
map fitted, as at export, on the other half, and the table per decile of the
logit compares mean exp(logit), mean served score and mean observed watch
seconds (with the observed mean's standard error) on those out-of-fold rows.

Maps of older rankers (``method`` "binned-isotonic": linear interpolation in
watch seconds between equal-size bins, flat ends) are still applied as they
were written.
"""
from __future__ import annotations

import hashlib

import numpy as np

ISOTONIC = "isotonic-loglinear"
POWER = "power-law"
METHODS = (ISOTONIC, POWER)
OLD_METHOD = "binned-isotonic"
TIE_SLOPE = 1e-3  # d log(score) / d logit at least this beyond the end knots: no ties
MIN_CLICKS = 80  # clicked rows per bin before pooling
MAX_BINS = 50  # bins of at least n / MAX_BINS rows
KNOT_ROUNDS = 3  # refinements of the knots' logits (_power_mean_logit)


def _pool_adjacent_violators(y: np.ndarray, w: np.ndarray) -> list[list[int]]:
    """Blocks (lists of indices, in order) of the weighted least-squares fit of ``y`` that is strictly
    increasing across blocks: adjacent means are pooled while the earlier one is >= the later one."""
    vals: list[float] = []
    wts: list[float] = []
    blocks: list[list[int]] = []
    for i, (v, c) in enumerate(zip(y.tolist(), w.tolist())):
        vals.append(v)
        wts.append(c)
        blocks.append([i])
        while len(vals) > 1 and vals[-2] >= vals[-1]:
            tw = wts[-2] + wts[-1]
            vals[-2] = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / tw
            wts[-2] = tw
            blocks[-2] += blocks[-1]
            vals.pop(), wts.pop(), blocks.pop()
    return blocks


def _bins(x: np.ndarray, clicked: np.ndarray, min_clicks: int, min_rows: int) -> list[slice]:
    """Consecutive slices of rows sorted by logit ``x``, each with >= ``min_clicks`` clicked and >= ``min_rows``
    rows (the remainder joins the last one); a cut never splits equal logits, so the bins (and the map) do not
    depend on the order of the input rows."""
    cuts, lo = [], 0
    csum = np.cumsum(clicked)
    while lo < len(clicked):
        # the first end whose slice [lo, end) has enough clicks and rows, moved past the rows tied with its last
        need = (csum[lo - 1] if lo else 0) + min_clicks
        end = max(int(np.searchsorted(csum, need)) + 1, lo + min_rows)
        end = int(np.searchsorted(x, x[min(end, len(x)) - 1], side="right"))
        if end >= len(clicked) or csum[-1] - csum[end - 1] < min_clicks or len(clicked) - end < min_rows:
            end = len(clicked)  # what is left could not make a bin of its own
        cuts.append(slice(lo, end))
        lo = end
    return cuts


def _fit_isotonic(x: np.ndarray, w: np.ndarray, min_clicks: int, max_bins: int) -> dict:
    """Knots and end slopes of the isotonic map (steps 1-4 of the module's docstring) of sorted logits ``x``."""
    bins = _bins(x, (w > 0).astype(np.int64), int(min_clicks), max(1, -(-len(x) // int(max_bins))))
    sizes = np.array([b.stop - b.start for b in bins], np.float64)
    means = np.array([w[b].mean() for b in bins])
    blocks = [slice(bins[b[0]].start, bins[b[-1]].stop) for b in _pool_adjacent_violators(means, sizes)]
    knots_y = np.array([w[r].mean() for r in blocks])
    knots_x = np.array([x[r].mean() for r in blocks])
    for _ in range(KNOT_ROUNDS):  # each knot where the local log-linear law averages to its block's mean
        slope = _local_slopes(knots_x, np.log(knots_y))
        knots_x = np.array([_power_mean_logit(x[r], b) for r, b in zip(blocks, slope)])
    s_lo, s_hi = _end_slopes(knots_x, np.log(knots_y))
    return {"x_logit": knots_x.tolist(), "y_watch_s": knots_y.tolist(), "slope_below": s_lo, "slope_above": s_hi}


def _fit_power(x: np.ndarray, w: np.ndarray) -> dict:
    """The power law score = exp(a + b logit) of sorted logits ``x`` by Poisson likelihood (log link; b clipped to
    [TIE_SLOPE, 1], a then matching the mean), as two knots at the 5th and 95th percentile logits."""
    mu, sd = float(x.mean()), float(x.std())
    b = 1.0
    if sd > 0:
        z = (x - mu) / sd
        beta = np.array([np.log(w.mean()), 0.0])
        for _ in range(100):  # Newton on (intercept, slope) of the standardised logit
            m = np.exp(np.clip(beta[0] + beta[1] * z, -50.0, 50.0))
            r = w - m
            h = np.array([[m.sum(), (m * z).sum()], [(m * z).sum(), (m * z * z).sum()]])
            # least squares, not solve: when the slope runs off (the watched rows all at the top) the Hessian
            # turns singular, and b is clipped to [TIE_SLOPE, 1] below anyway
            step = np.clip(np.linalg.lstsq(h, np.array([r.sum(), (r * z).sum()]), rcond=None)[0], -5.0, 5.0)
            if not np.isfinite(step).all():
                break
            beta += step
            if np.abs(step).max() < 1e-10:
                break
        b = float(np.clip(beta[1] / sd, TIE_SLOPE, 1.0))
    xm = float(x.max())
    a = float(np.log(w.sum()) - np.log(np.exp(b * (x - xm)).sum())) - b * xm
    knots = np.unique(np.quantile(x, [0.05, 0.95]))
    return {"x_logit": knots.tolist(), "y_watch_s": np.exp(a + b * knots).tolist(), "slope_below": b, "slope_above": b}


def _fit_method(method: str, x: np.ndarray, w: np.ndarray, min_clicks: int, max_bins: int) -> dict:
    return _fit_isotonic(x, w, min_clicks, max_bins) if method == ISOTONIC else _fit_power(x, w)


def _deviance(w: np.ndarray, m: np.ndarray) -> float:
    """Mean Poisson deviance of watch seconds ``w`` against scores ``m`` (> 0): lower is better."""
    return float(2.0 * np.mean(np.where(w > 0, w * np.log(np.maximum(w, 1e-12) / m), 0.0) - (w - m)))


def fit(pred_watch, watch_seconds, user_ids=None, method: str = "auto", min_clicks: int = MIN_CLICKS,
        max_bins: int = MAX_BINS) -> dict:
    """The calibration map (a JSON-able dict) of predictions ``pred_watch`` [N] (exp(logit), > 0) against the
    observed ``watch_seconds`` [N] (0 when not clicked; a row with watch > 0 counts as clicked).

    ``method``: ``"isotonic-loglinear"``, ``"power-law"`` or ``"auto"``: the one of the two with the lower
    Poisson deviance cross-fitted over two halves of the users (``user_ids`` [N], :func:`user_fold` salted
    "select"; halves of the rows without them), stored as ``cv_deviance``. Rows whose prediction is not
    finite and positive are left out. Without any watched row the map is empty (``apply`` then serves
    exp(logit) as it is)."""
    p = np.asarray(pred_watch, np.float64)
    w = np.asarray(watch_seconds, np.float64)
    if p.shape != w.shape or p.ndim != 1:
        raise ValueError(f"calibration.fit: pred_watch and watch_seconds must be [N] alike, got {p.shape}, {w.shape}")
    if user_ids is not None and len(user_ids) != len(p):
        raise ValueError(f"calibration.fit: user_ids must be [N] like pred_watch, got {len(user_ids)} for {len(p)}")
    if min_clicks < 1 or max_bins < 1:
        raise ValueError(f"calibration.fit: min_clicks and max_bins must be >= 1, got {min_clicks}, {max_bins}")
    if method not in ("auto", *METHODS):
        raise ValueError(f"calibration.fit: method must be 'auto' or one of {METHODS}, got {method!r}")
    ok = np.isfinite(p) & (p > 0) & np.isfinite(w)
    order = np.argsort(np.log(p[ok]), kind="stable")
    x, w = np.log(p[ok])[order], np.maximum(w[ok], 0.0)[order]
    folds = (user_fold(np.asarray(user_ids)[ok][order], salt="select") if user_ids is not None
             else np.arange(len(x)) % 2)
    settings = {"choice": method, "min_clicks": int(min_clicks), "max_bins": int(max_bins),
                "n": int(len(x)), "n_clicked": int((w > 0).sum())}
    if not (w > 0).any():
        return {"method": ISOTONIC, "x_logit": [], "y_watch_s": [], **settings}
    chosen, dev = method, None
    if method == "auto":
        chosen = ISOTONIC  # unless both halves have watched rows to compare on
        if all((w[folds == f] > 0).any() for f in (0, 1)):
            dev = {}
            for m in METHODS:
                oof = np.empty(len(x))
                for f in (0, 1):
                    part = folds != f
                    oof[~part] = _apply_loglinear(_fit_method(m, x[part], w[part], min_clicks, max_bins), x[~part])
                dev[m] = round(_deviance(w, oof), 6)
            chosen = min(METHODS, key=lambda m: dev[m])
    return {"method": chosen, **_fit_method(chosen, x, w, min_clicks, max_bins), **settings,
            **({"cv_deviance": dev} if dev else {})}


def _power_mean_logit(x: np.ndarray, b: float) -> float:
    """The logit x* with exp(b x*) = mean(exp(b x)): where a score growing like exp(b logit) takes its mean
    over the rows ``x`` (the plain mean as b -> 0)."""
    m = float(x.max())
    return m + float(np.log(np.mean(np.exp(b * (x - m))))) / b


def _local_slopes(x: np.ndarray, ly: np.ndarray) -> np.ndarray:
    """d log(score) / d logit at each knot: the mean of its segments' slopes, clipped to [TIE_SLOPE, 1]."""
    if len(x) < 2:
        return np.ones(len(x))
    seg = np.diff(ly) / np.diff(x)
    both = np.concatenate([[seg[0]], (seg[:-1] + seg[1:]) / 2, [seg[-1]]])
    return np.clip(both, TIE_SLOPE, 1.0)


def _end_slopes(x: np.ndarray, ly: np.ndarray) -> tuple[float, float]:
    """d log(score) / d logit below the first and above the last knot (1 with a single knot)."""
    if len(x) < 2:
        return 1.0, 1.0
    lo = (ly[1] - ly[0]) / (x[1] - x[0])
    hi = (ly[-1] - ly[-2]) / (x[-1] - x[-2])
    return float(np.clip(lo, TIE_SLOPE, 1.0)), float(np.clip(hi, TIE_SLOPE, 1.0))


def _apply_loglinear(cal: dict, logit: np.ndarray) -> np.ndarray:
    x = np.asarray(cal["x_logit"], np.float64)
    ly = np.log(np.asarray(cal["y_watch_s"], np.float64))
    s_lo, s_hi = float(cal["slope_below"]), float(cal["slope_above"])
    out = np.interp(logit, x, ly)
    out = np.where(logit < x[0], ly[0] + s_lo * (logit - x[0]), out)
    out = np.where(logit > x[-1], ly[-1] + s_hi * (logit - x[-1]), out)
    return np.exp(out)


def apply(cal: dict | None, pred_watch) -> np.ndarray:
    """Calibrated expected watch seconds of predictions ``pred_watch`` (exp(logit), any shape; values that are
    not finite and positive, e.g. -inf pads or 0, stay as they are); the predictions themselves when ``cal``
    is None or empty (rankers exported before calibration, or no watched validation row)."""
    p = np.asarray(pred_watch)
    knots = (cal or {}).get("x_logit") or (cal or {}).get("x_log_pred")
    if not knots:
        return p
    out = p.astype(np.float64, copy=True)
    ok = np.isfinite(out) & (out > 0)
    logit = np.log(out[ok])
    if cal.get("method", OLD_METHOD) == OLD_METHOD:
        out[ok] = np.interp(logit, np.asarray(cal["x_log_pred"], np.float64), np.asarray(cal["y_watch_s"], np.float64))
    else:
        out[ok] = _apply_loglinear(cal, logit)
    return out.astype(p.dtype if np.issubdtype(p.dtype, np.floating) else np.float64)


def user_fold(user_ids, n_folds: int = 2, salt: str = "") -> np.ndarray:
    """A stable fold per row from its user id [N] int: blake2b of ``salt`` + the id (UTF-8), mod ``n_folds``
    (a keyed hash, so each salt splits the users independently; crc32's low bit would not)."""
    uniq, inv = np.unique(np.asarray([str(u) for u in user_ids], dtype=object), return_inverse=True)
    h = [int.from_bytes(hashlib.blake2b(f"{salt}{u}".encode("utf-8"), digest_size=8).digest(), "little") % n_folds
         for u in uniq]
    return np.asarray(h, np.int64)[inv].reshape(-1) if len(uniq) else np.zeros(0, np.int64)


def cross_fit(pred_watch, watch_seconds, user_ids, cal: dict | None = None, n_folds: int = 2) -> np.ndarray:
    """Out-of-fold served scores [N]: the rows of each fold of users (:func:`user_fold`) through the map
    :func:`fit` on the other folds (with ``cal``'s ``min_clicks`` / ``max_bins`` when given)."""
    p = np.asarray(pred_watch, np.float64)
    w = np.asarray(watch_seconds, np.float64)
    u = np.asarray(user_ids)
    kw = {k: cal[k] for k in ("min_clicks", "max_bins") if cal and k in cal}
    choice = (cal or {}).get("choice", (cal or {}).get("method"))
    kw["method"] = choice if choice in METHODS else "auto"
    fold = user_fold(u, n_folds)
    out = np.empty_like(p)
    for f in range(n_folds):
        held = fold == f
        out[held] = apply(fit(p[~held], w[~held], u[~held], **kw), p[held])
    return out


def decile_table(pred_watch, served, watch_seconds, n_bins: int = 10) -> list[tuple]:
    """Per bin of the prediction's order (rows sorted by ``pred_watch`` [N] = exp(logit), cut into ``n_bins``
    of equal size, bin 0 lowest): (bin, mean served [N], mean observed watch seconds [N], rows, mean
    exp(logit), standard error of the observed mean, served / observed, exp(logit) / observed).

    The served score is a monotone map of the prediction, so the bins are also its own order's bins."""
    p = np.asarray(pred_watch, np.float64)
    s = np.asarray(served, np.float64)
    w = np.asarray(watch_seconds, np.float64)
    if not p.shape == s.shape == w.shape or p.ndim != 1:
        raise ValueError(f"decile_table: pred_watch, served and watch_seconds must be [N] alike, got "
                         f"{p.shape}, {s.shape}, {w.shape}")
    order = np.argsort(p, kind="stable")
    rows = []
    for b, idx in enumerate(np.array_split(order, n_bins)):
        if not len(idx):
            continue
        obs = float(w[idx].mean())
        se = float(w[idx].std(ddof=1) / np.sqrt(len(idx))) if len(idx) > 1 else float("nan")
        ratio = (lambda v: v / obs if obs > 0 else float("nan"))
        rows.append((b, float(s[idx].mean()), obs, int(len(idx)), float(p[idx].mean()), se,
                     ratio(float(s[idx].mean())), ratio(float(p[idx].mean()))))
    return rows


TABLE_COLUMNS = ("decile", "mean served score, s", "mean observed watch time, s", "n", "mean exp(logit), s",
                 "observed s.e., s", "served / observed", "exp(logit) / observed")
