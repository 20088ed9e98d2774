"""Behaviour: what a user does in the world, visit after visit, from the user's own RNG.

Searches carry category words and steer the next watch; watches follow
interests, the last watch's channel, trending and fresh uploads; after any
watch, autoplay may continue with the series' next episode or the video's
fixed "up next" video; home-page slates of impressions get clicks and watch time from the
true affinity and the video's duration (the click and completion models,
also used by :mod:`ytspark.generate.closed_loop`).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import types as T

from ytspark import schema as S
from ytspark.generate.constants import (
    AFF_EPS, CLICK_BIAS, CLICK_DURATION_SLOPE, CLICK_SLOPE, COMPLETION_BIAS, COMPLETION_CONC,
    COMPLETION_DURATION_SLOPE, COMPLETION_SLOPE, DEVICES, DURATION_REF, FRESH_BOOST, FRESH_WINDOW_TAUS,
    LANGUAGES, MIN_VISITS, P_INTENT_SHOWN, P_OWN_LANGUAGE, P_SEARCH_HIT, P_SEARCH_VISIT,
    P_SEQ_ACROSS, P_SEQ_WITHIN, P_TRENDING, SLATE_SIZE, VISIT_MARGIN, _GENERIC_WORDS,
)
from ytspark.generate.world import _draw_cum, _sigmoid, _theta_at


# ------------------------------------------------------------------ watches (executors)
def _sample_group(ctx: dict[str, Any], grp: dict[str, np.ndarray], g: int, t: float, rng) -> int:
    """One video of group g uploaded at or before t, with weight pop x (1 + B exp(-(t-u)/tau)).

    Exact mixture of a "base" part (popularity over the uploaded prefix, 2) and a
    "fresh" part (the burst of recent uploads, 5). Returns -1 when nothing is uploaded yet.
    """
    p0, p1 = int(grp["ptr"][g]), int(grp["ptr"][g + 1])
    if p0 == p1:
        return -1
    up = grp["up"]
    hi = p0 + int(up[p0:p1].searchsorted(t, side="right"))
    if hi == p0:
        return -1
    cum = grp["cum"]
    base_mass = cum[hi] - cum[p0]
    fresh_mass = 0.0
    lo = p0 + int(up[p0:hi].searchsorted(t - FRESH_WINDOW_TAUS * ctx["tau"], side="left"))
    if lo < hi:
        fw = FRESH_BOOST * grp["pop"][lo:hi] * np.exp(-(t - up[lo:hi]) / ctx["tau"])
        fresh_mass = float(fw.sum())
    r = rng.random() * (base_mass + fresh_mass)
    if r < base_mass:
        j = int(cum.searchsorted(cum[p0] + r, side="right")) - 1
        j = min(max(j, p0), hi - 1)
    else:
        j = lo + int(np.searchsorted(np.cumsum(fw), r - base_mass, side="right"))
        j = min(j, hi - 1)
    return int(grp["order"][j])


def _interest_watch(ctx, prof, theta_cum, t, rng, category: int | None = None) -> int:
    """A video from an interest (or given) category, mostly in the user's language (1, 2, 5).

    ``theta_cum`` is the cumulative sum of the user's current interest vector.
    """
    c = _draw_cum(theta_cum, rng) if category is None else category
    v = -1
    if rng.random() < P_OWN_LANGUAGE:
        v = _sample_group(ctx, ctx["g_catlang"], c * len(LANGUAGES) + prof["lang_idx"], t, rng)
    if v < 0:
        v = _sample_group(ctx, ctx["g_cat"], c, t, rng)
    if v < 0:  # nothing uploaded in that category yet: anything uploaded
        v = _sample_group(ctx, ctx["g_all"], 0, t, rng)
    return v


def _behaviour_watch(ctx, prof, theta_cum, t, last: int, p_seq: float, watched: set, rng) -> int:
    """The next video the user chooses: follow the last watch's channel (4), else trending (2),
    else by interest (1, 3)."""
    for _ in range(6):  # re-draw already watched videos a few times
        v = -1
        if last >= 0 and rng.random() < p_seq:
            v = _sample_group(ctx, ctx["g_chan"], int(ctx["chan"][last]), t, rng)
        if v < 0 and rng.random() < P_TRENDING:  # trending, mostly in the user's language
            if rng.random() < P_OWN_LANGUAGE:
                v = _sample_group(ctx, ctx["g_lang"], prof["lang_idx"], t, rng)
            if v < 0:
                v = _sample_group(ctx, ctx["g_all"], 0, t, rng)
        if v < 0:
            v = _interest_watch(ctx, prof, theta_cum, t, rng)
        if v not in watched:
            return v
    return v


def _continuation(ctx, last: int, t: float, seen: tuple[set, ...], rng) -> int:
    """What autoplay plays after ``last`` at time t, or -1 (4): the series' next episode with
    ``p_binge`` (when uploaded and not yet seen), else the video's fixed up-next with ``p_autoplay``."""
    nxt = int(ctx["next_ep"][last])
    if nxt >= 0 and ctx["upload"][nxt] <= t and all(nxt not in s for s in seen) and rng.random() < ctx["p_binge"]:
        return nxt
    up = int(ctx["up_next"][last])
    if up >= 0 and all(up not in s for s in seen) and rng.random() < ctx["p_autoplay"]:
        return up
    return -1


def _autoplay_chain(ctx, last: int, t: float, end: float, seen: tuple[set, ...], watch, rng) -> tuple[int, float]:
    """Watches autoplay chains after ``last`` (starting at t) until a continuation is declined (4).

    Each watch starts after the previous one ended plus 3-29 s, so timestamps strictly increase
    along a chain. Returns the chain's last video and the time after it.
    """
    while t < end:
        c = _continuation(ctx, last, t, seen, rng)
        if c < 0:
            break
        ws = watch(c, t)
        for s in seen:
            s.add(c)
        last = c
        t += math.ceil(ws) + float(rng.integers(3, 30))
    return last, t


def _affinity_x(ctx, theta, v: int) -> float:
    """log(K x true affinity + eps): ~0 for an average pair, > 0 for a favourite category (7)."""
    return math.log(ctx["K"] * theta[ctx["cat"][v]] * ctx["quality"][v] + AFF_EPS)


def _log_duration(duration):
    return np.log(np.asarray(duration, dtype=np.float64) / DURATION_REF)


def _click_probability(x, duration):
    """P(click) of a recommended (not user-chosen) impression with log-affinity x of a video this long (7);
    no position effect."""
    return _sigmoid(CLICK_BIAS + CLICK_SLOPE * x - CLICK_DURATION_SLOPE * _log_duration(duration))


def _completion_mean(x, duration):
    """Mean of the Beta completion (watch_seconds / duration) of a watch with log-affinity x (7)."""
    return _sigmoid(COMPLETION_BIAS + COMPLETION_SLOPE * x - COMPLETION_DURATION_SLOPE * _log_duration(duration))


def _watch_from_completion(duration, comp):
    """watch_seconds = duration x completion, rounded to 0.1 s, at least 1 s, at most the duration."""
    return np.minimum(duration, np.maximum(1.0, np.round(duration * comp, 1)))


def _watch_seconds(ctx, theta, v: int, rng) -> float:
    """duration x completion, completion ~ Beta with mean rising with true affinity, falling with duration (7)."""
    mean = float(_completion_mean(_affinity_x(ctx, theta, v), ctx["duration"][v]))
    comp = rng.beta(mean * COMPLETION_CONC, (1.0 - mean) * COMPLETION_CONC)
    return float(_watch_from_completion(float(ctx["duration"][v]), comp))


def _events_frame(cols: dict[str, Any]) -> pd.DataFrame:
    """The ``events`` rows as the generator yields them: doubles float64 (None -> NaN -> null), the rest object."""
    data = {}
    for name, typ in S.EVENTS_COLUMNS.items():
        if isinstance(typ, T.DoubleType):
            data[name] = pd.Series(cols[name], dtype="float64")
        else:
            data[name] = pd.Series(cols[name], dtype="object")
    return pd.DataFrame(data)


class _Rows:
    """Column lists of event rows for one batch of users."""

    def __init__(self) -> None:
        self.cols: dict[str, list] = {c: [] for c in S.EVENTS_COLUMNS}

    def add(self, ts, uid, etype, vid=None, query=None, ws=None, vs=None, clicked=None, device=None, country=None):
        c = self.cols
        c[S.EVENT_TS].append(ts)
        c[S.USER_ID].append(uid)
        c[S.EVENT_TYPE].append(etype)
        c[S.VIDEO_ID].append(vid)
        c[S.QUERY].append(query)
        c[S.WATCH_SECONDS].append(ws)
        c[S.VIDEO_SECONDS].append(vs)
        c[S.CLICKED].append(clicked)
        c[S.DEVICE].append(device)
        c[S.COUNTRY].append(country)

    def frame(self) -> pd.DataFrame:
        return _events_frame(self.cols)

    def __len__(self) -> int:
        return len(self.cols[S.EVENT_TS])


def _simulate_user(ctx: dict[str, Any], prof: dict[str, Any], rows: _Rows) -> None:
    """All events of one user; own RNG seeded from (seed, uidx), so partitioning never matters."""
    rng = np.random.default_rng([ctx["seed"], prof["uidx"], 1])
    start, end = ctx["start"], ctx["end"]
    uid, country = prof["user_id"], prof["country"]
    vw = ctx["video_w"]
    dur = ctx["duration"]
    n_visits = max(MIN_VISITS, int(rng.poisson(ctx["visits"] * prof["activity"])))  # (8)
    visit_ts = np.sort(np.floor(rng.uniform(start, end - VISIT_MARGIN, size=n_visits)))
    last = -1
    watched: set[int] = set()
    busy_until = start  # a visit starts after the previous one ended: one timeline per user
    for i, t0 in enumerate(visit_ts):
        t0 = float(t0)
        if t0 <= busy_until:
            pushed = busy_until + float(rng.integers(60, 3600))
            if pushed < end - VISIT_MARGIN:
                t0 = pushed
            elif i >= MIN_VISITS:
                break
            # else: overlap rather than lose one of the MIN_VISITS visits (tiny windows only)
        theta = _theta_at(ctx, prof, t0)  # interest drifts between visits (3)
        tcum = np.cumsum(theta)
        device = prof["device"] if rng.random() < 0.85 else DEVICES[int(rng.integers(len(DEVICES)))]

        def watch(v: int, t: float) -> float:
            ws = _watch_seconds(ctx, theta, v, rng)
            rows.add(t, uid, "watch", f"v{v:0{vw}d}", None, ws, float(dur[v]), None, device, country)
            return ws

        if rng.random() < P_SEARCH_VISIT:
            # (6) search for words of a current interest category, then watch from it.
            c = _draw_cum(tcum, rng)
            words = ctx["words"][c]
            n_w = int(rng.integers(1, 4))
            q = [words[j] for j in rng.choice(len(words), size=n_w, replace=False)]
            if rng.random() < 0.15:
                q.insert(0, _GENERIC_WORDS[int(rng.integers(len(_GENERIC_WORDS)))])
            rows.add(t0, uid, "search", None, " ".join(q), None, None, None, device, country)
            t = t0 + float(rng.integers(5, 40))
            n_watch = 1 + int(rng.random() < 0.4)
            for j in range(n_watch):
                if j == 0 and rng.random() < P_SEARCH_HIT:
                    v = -1
                    for _ in range(6):
                        v = _interest_watch(ctx, prof, tcum, t0, rng, category=c)
                        if v not in watched:
                            break
                else:
                    v = _behaviour_watch(ctx, prof, tcum, t0, last, P_SEQ_WITHIN if j else P_SEQ_ACROSS, watched, rng)
                if t >= end:
                    break
                ws = watch(v, t)
                watched.add(v)
                last = v
                t += math.ceil(ws) + float(rng.integers(3, 30))
                last, t = _autoplay_chain(ctx, last, t, end, (watched,), watch, rng)
            busy_until = max(busy_until, t)
            continue

        # (7) home page: a slate with what the user came for (always clicked) and what
        # an imperfect recommender adds (clicked with probability rising with affinity).
        n_intent = 1 + int(rng.binomial(2, 0.25))
        intent: list[int] = []
        taken = set(watched)
        for j in range(n_intent):
            prev = intent[-1] if intent else last
            v = _behaviour_watch(ctx, prof, tcum, t0, prev, P_SEQ_WITHIN if j else P_SEQ_ACROSS, taken, rng)
            if v in taken:
                break
            intent.append(v)
            taken.add(v)
        if not intent:  # catalogue exhausted for this user: a re-watch
            intent.append(_interest_watch(ctx, prof, tcum, t0, rng))
            taken.add(intent[0])
        # each intent is in the slate with P_INTENT_SHOWN; one not shown is still watched (from
        # a subscription or the watch page: no impression row)
        shown = [bool(rng.random() < P_INTENT_SHOWN) for _ in intent]
        fillers: list[int] = []
        mix_cum = np.cumsum(0.5 * theta + 0.5 * ctx["cat_weight"])
        for _ in range(4 * SLATE_SIZE):
            if sum(shown) + len(fillers) >= SLATE_SIZE:
                break
            c = _draw_cum(mix_cum, rng)
            v = -1
            if rng.random() < 0.5:  # the recommender knows the user's language half the time
                v = _sample_group(ctx, ctx["g_catlang"], c * len(LANGUAGES) + prof["lang_idx"], t0, rng)
            if v < 0:
                v = _sample_group(ctx, ctx["g_cat"], c, t0, rng)
            if v >= 0 and v not in taken:
                fillers.append(v)
                taken.add(v)
        clicked_fill = [rng.random() < _click_probability(_affinity_x(ctx, theta, v), dur[v]) for v in fillers]
        slate = intent + fillers  # every video of the visit; in_slate: the ones the slate showed
        in_slate = shown + [True] * len(fillers)
        pos = np.full(len(slate), -1)
        pos[np.flatnonzero(in_slate)] = rng.permutation(int(sum(in_slate)))  # slot of each shown entry
        # Watches after the slate, seconds apart: intent in order, then clicked fillers.
        order = list(range(len(intent))) + sorted(
            (len(intent) + i for i, c in enumerate(clicked_fill) if c), key=lambda k: pos[k]
        )
        ws_of: dict[int, float] = {}
        t = t0 + int(sum(in_slate)) + float(rng.integers(2, 20))
        for k in order:
            if t >= end:  # would fall outside the window: not clicked after all
                break
            v = slate[k]
            ws_of[k] = watch(v, t)
            watched.add(v)
            last = v
            t += math.ceil(ws_of[k]) + float(rng.integers(3, 30))
            last, t = _autoplay_chain(ctx, last, t, end, (watched, taken), watch, rng)  # not in this slate either
        busy_until = max(busy_until, t)
        for k, v in enumerate(slate):
            if not in_slate[k]:
                continue
            ws = ws_of.get(k)
            rows.add(
                t0 + float(pos[k]), uid, "impression", f"v{v:0{vw}d}", None, ws, float(dur[v]),
                1 if ws is not None else 0, device, country,
            )
