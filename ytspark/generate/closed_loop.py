"""Closed loop: the generator's truth for pairs shown by a nightly table, and their impression events.

:func:`true_engagement` and :func:`log_shown_lists` rebuild the world from the
``GenerateConfig`` (exact: the catalogue on the driver, one profile per user
asked for) and use the click and completion models of
:mod:`ytspark.generate.behaviour`.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pandas as pd

from ytspark import schema as S
from ytspark.config import GenerateConfig
from ytspark.generate.behaviour import (_autoplay_chain, _click_probability, _completion_mean, _events_frame,
                                        _watch_from_completion)
from ytspark.generate.constants import AFF_EPS, COMPLETION_CONC, DAY, DEVICES
from ytspark.generate.world import _context, _theta_at, _user_profile, build_catalog


# ------------------------------------------------------------------ closed loop (driver)
# A benchmark of two consecutive nights: night 1's top-N table is shown to the users,
# the generator's truth decides what they click and watch, and night 2 is scored with
# those impressions in the log. The world is rebuilt from the config (exact and
# cheap: the catalogue on the driver, one profile per user asked for), which also
# gives what the ``_truth`` tables do not hold (duration, upload time, device, country).
SHOWN_RANK = S.RANK  # the nightly table's 1-based position column
SHOWN_SLOT_SECONDS = 1.0  # rank r is logged at ts + (r - 1) x this, as the generator's slots are


@functools.lru_cache(maxsize=4)
def _world(cfg: GenerateConfig) -> dict[str, Any]:
    return _context(cfg, build_catalog(cfg))


def _parse_ids(ids, prefix: str, width: int, n: int, what: str) -> np.ndarray:
    """Generator indices of ids written as f"{prefix}{index:0{width}d}"; ValueError for any other id."""
    s = pd.Series(np.asarray(ids, dtype=object), dtype=object)
    ok = s.map(lambda x: isinstance(x, str) and len(x) == width + 1 and x[:1] == prefix and x[1:].isdigit())
    idx = np.full(len(s), -1, dtype=np.int64)
    if ok.any():
        idx[ok.to_numpy()] = s[ok].str[1:].astype(np.int64).to_numpy()
    bad = (idx < 0) | (idx >= n)
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} ids are not in this generated world, e.g. {s[bad].iloc[0]!r}")
    return idx


def _pair_truth(ctx: dict[str, Any], uidx: np.ndarray, vidx: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """Truth of pairs (uidx[i], vidx[i]) at t[i], plus the profile of every user asked for."""
    key = pd.MultiIndex.from_arrays([uidx, t])
    codes, uniq = pd.factorize(key)
    profs = {int(u): _user_profile(ctx, int(u)) for u in np.unique(uidx)}
    theta = np.zeros((len(uniq), ctx["K"]))
    for i, (u, x) in enumerate(uniq):
        theta[i] = _theta_at(ctx, profs[int(u)], float(x))
    cat = ctx["cat"][vidx]
    x = np.log(ctx["K"] * theta[codes, cat] * ctx["quality"][vidx] + AFF_EPS)
    available = ctx["upload"][vidx] <= t  # nothing is watched before its upload (5)
    duration = ctx["duration"][vidx].astype(np.float64)
    p_click = np.where(available, _click_probability(x, duration), 0.0)
    completion = np.where(available, _completion_mean(x, duration), 0.0)
    return {"p_click": p_click, "completion": completion, "duration": duration, "available": available,
            "profiles": profs}


def true_engagement(cfg: GenerateConfig, user_ids, video_ids, ts) -> pd.DataFrame:
    """The generator's truth for showing video ``video_ids[i]`` to user ``user_ids[i]`` at ``ts`` (epoch s).

    ``ts`` is a scalar or one time per pair; interests are the exact ones at that time
    (:func:`interest_at`; frozen at the window's ends outside it). One row per pair, in
    input order:

    * ``p_click``: probability that the shown video is clicked, the click model of
      the generator's recommended slate entries, sigmoid(CLICK_BIAS + CLICK_SLOPE x
      - CLICK_DURATION_SLOPE log(duration / DURATION_REF)) with x = log(K x true affinity
      + AFF_EPS). It has no position effect.
    * ``completion``: mean of the Beta completion (watch_seconds / duration) once clicked,
      sigmoid(COMPLETION_BIAS + COMPLETION_SLOPE x - COMPLETION_DURATION_SLOPE log(duration / DURATION_REF)).
    * ``duration``: the video's duration in seconds.
    * ``expected_watch_seconds``: p_click x completion x duration, the expected watch
      time of the impression (the 0.1 s rounding and the 1 s floor of drawn watches aside).
    * ``available``: uploaded at or before ts; where False the first, second and
      fourth columns are 0 (nobody can watch a video before its upload).

    Ids must be the generator's (``u000042``, ``v00042``); others raise ValueError.
    """
    ctx = _world(cfg)
    uidx = _parse_ids(user_ids, "u", ctx["user_w"], cfg.users, "user_id")
    vidx = _parse_ids(video_ids, "v", ctx["video_w"], cfg.videos, "video_id")
    if len(uidx) != len(vidx):
        raise ValueError(f"true_engagement: {len(uidx)} user ids but {len(vidx)} video ids")
    t = np.broadcast_to(np.asarray(ts, dtype=np.float64), uidx.shape)
    tr = _pair_truth(ctx, uidx, vidx, t)
    return pd.DataFrame(
        {
            "p_click": tr["p_click"],
            "completion": tr["completion"],
            "duration": tr["duration"],
            "expected_watch_seconds": tr["p_click"] * tr["completion"] * tr["duration"],
            "available": tr["available"],
        }
    )


def log_shown_lists(
    shown: pd.DataFrame, cfg: GenerateConfig, ts: float, seed: int, *, watches: bool = False, autoplay: bool = True
) -> pd.DataFrame:
    """Impression events for the (user_id, video_id, rank) rows of a nightly table shown at ``ts``.

    Each user's rows are one home-page visit, as a generator slate is: one
    ``impression`` row per shown row, in the ``events`` format the generator
    writes (``schema.EVENTS_COLUMNS``, doubles float64, the rest object), with

    * ``event_ts`` = ts + (rank - 1) x SHOWN_SLOT_SECONDS (the generator logs slot k
      of a slate at visit start + k seconds);
    * ``clicked`` 1 with probability ``true_engagement(...).p_click`` at ts (no
      position effect: the generator has none, rank only orders the rows), else 0;
      a video not uploaded by ts is never clicked;
    * ``watch_seconds`` for a clicked row drawn as the generator draws a watch
      (duration x Beta completion with mean ``completion``, 0.1 s, >= 1 s, <= duration);
      null for an unclicked row, as the generator writes it (readers take it as 0);
    * ``video_seconds`` the duration, ``query`` null, ``country`` the user's, ``device``
      the user's usual one (another, uniformly, 15 % of visits, as in the generator).

    With ``watches=True`` the clicked videos also get the ``watch`` rows the generator
    writes after a slate: the first ``2-20`` s after the last slot, each following one
    its watch time plus 3-30 s later, in rank order, same watch_seconds. With ``autoplay`` (the default),
    each clicked watch is followed by the generator's autoplay chain, as after a watch of a generated visit
    (:func:`~ytspark.generate.behaviour._autoplay_chain`: the series' next episode with ``p_binge``, else the
    video's fixed up-next with ``p_autoplay``, until one is declined; a video this visit already played is
    not continued with; watch time drawn as above, at the continuation's start): what a recommended episode
    of a series leads to on the next night.

    Seeded: the draws of a user depend only on (cfg.seed, seed, user) and the user's
    rows (sorted by rank, then video_id), never on other users or the input order,
    so the same inputs and seed give the same frame. Use another seed for each night.
    Rows come back sorted by user_id, then event_ts. Other columns of ``shown`` are
    ignored; ids must be the generator's (ValueError otherwise).
    """
    if int(seed) < 0:
        raise ValueError(f"log_shown_lists: seed must be >= 0, got {seed}")
    missing = [c for c in (S.USER_ID, S.VIDEO_ID, SHOWN_RANK) if c not in shown.columns]
    if missing:
        raise ValueError(f"log_shown_lists: shown lacks columns {missing}")
    ctx = _world(cfg)
    uidx = _parse_ids(shown[S.USER_ID], "u", ctx["user_w"], cfg.users, "user_id")
    vidx = _parse_ids(shown[S.VIDEO_ID], "v", ctx["video_w"], cfg.videos, "video_id")
    rank = shown[SHOWN_RANK].to_numpy()
    if pd.isna(rank).any() or (np.asarray(rank, dtype=np.float64) < 1).any():
        raise ValueError("log_shown_lists: rank must be >= 1 (1-based) and not null")
    rank = np.asarray(rank, dtype=np.int64)
    order = np.lexsort((vidx, rank, uidx))
    uidx, vidx, rank = uidx[order], vidx[order], rank[order]
    ts = float(ts)
    tr = _pair_truth(ctx, uidx, vidx, np.full(len(uidx), ts))
    vw = ctx["video_w"]
    dur = tr["duration"]
    cols: dict[str, list] = {c: [] for c in S.EVENTS_COLUMNS}

    def add(n, ets, uid, etype, v, ws, clicked, device, country):
        cols[S.EVENT_TS].append(ets)
        cols[S.USER_ID].append([uid] * n)
        cols[S.EVENT_TYPE].append([etype] * n)
        cols[S.VIDEO_ID].append([f"v{k:0{vw}d}" for k in v])
        cols[S.QUERY].append([None] * n)
        cols[S.WATCH_SECONDS].append(ws)
        cols[S.VIDEO_SECONDS].append(dur_of[v])
        cols[S.CLICKED].append(clicked)
        cols[S.DEVICE].append([device] * n)
        cols[S.COUNTRY].append([country] * n)

    dur_of = ctx["duration"].astype(np.float64)
    bounds = np.flatnonzero(np.diff(uidx)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(uidx)]):
        if lo == hi:
            continue
        u = int(uidx[lo])
        prof = tr["profiles"][u]
        rng = np.random.default_rng([ctx["seed"], int(seed), u, 0x5E0])
        device = prof["device"] if rng.random() < 0.85 else DEVICES[int(rng.integers(len(DEVICES)))]
        n = hi - lo
        clicked = rng.random(n) < tr["p_click"][lo:hi]
        mean = tr["completion"][lo:hi][clicked]
        comp = rng.beta(mean * COMPLETION_CONC, (1.0 - mean) * COMPLETION_CONC)
        ws = np.full(n, np.nan)
        ws[clicked] = _watch_from_completion(dur[lo:hi][clicked], comp)
        v = vidx[lo:hi]
        r = rank[lo:hi]
        add(n, ts + (r - 1) * SHOWN_SLOT_SECONDS, prof["user_id"], "impression", v, ws,
            [int(c) for c in clicked], device, prof["country"])
        if watches and clicked.any():
            t = ts + float(r.max()) * SHOWN_SLOT_SECONDS + float(rng.integers(2, 20))
            wv, ets, wws = [], [], []

            def watch(c: int, at: float) -> float:
                """An autoplay continuation c watched from ``at``: its row, and its watch seconds."""
                tc = _pair_truth(ctx, np.array([u]), np.array([c]), np.array([at]))
                m = float(tc["completion"][0])
                sec = float(_watch_from_completion(tc["duration"][:1], np.array(
                    [rng.beta(m * COMPLETION_CONC, (1.0 - m) * COMPLETION_CONC)]))[0])
                wv.append(c)
                ets.append(at)
                wws.append(sec)
                return sec

            played = {int(c) for c in v[clicked]}
            for c, w in zip(v[clicked], ws[clicked]):
                wv.append(int(c))
                ets.append(t)
                wws.append(w)
                t += math.ceil(w) + float(rng.integers(3, 30))
                if autoplay:
                    _, t = _autoplay_chain(ctx, int(c), t, ts + DAY, (played,), watch, rng)
            k = len(wv)
            add(k, np.array(ets), prof["user_id"], "watch", np.array(wv, np.int64), np.array(wws), [None] * k,
                device, prof["country"])

    flat = {c: (np.concatenate(x) if x and isinstance(x[0], np.ndarray) else [y for part in x for y in part])
            for c, x in cols.items()}
    out = _events_frame(flat)
    return out.sort_values([S.USER_ID, S.EVENT_TS], kind="stable").reset_index(drop=True)
