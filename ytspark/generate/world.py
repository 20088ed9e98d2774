"""The world: the catalogue (channels, videos) and the users (demographics, interests and their drift).

The catalogue is built on the driver with numpy (:func:`build_catalog`) and
broadcast in the context (:func:`_context`); a user's profile depends only on
``(seed, user index)`` (:func:`_user_profile`). :func:`true_affinity` and
:func:`interest_at` give the truth that evaluation measures models against.
"""
from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np

from ytspark.config import GenerateConfig
from ytspark.generate.constants import (
    CHANNEL_MAIN_CATEGORY, COUNTRIES, DEVICES, DIRICHLET_CONCENTRATION, DRIFT_MAX, FRESH_TAU_DAYS, GENDERS,
    LANGUAGES, MAX_DURATION, P_NO_AGE, SERIES_EXTRA_MEAN, SERIES_MIN_LENGTH, SHIFT_SD_AGE, SHIFT_SD_COUNTRY,
    SHIFT_SD_GENDER, WORDS_PER_CATEGORY, ZIPF_EXPONENT, _AGE_P, _AGE_RANGES, _CATEGORY_MEDIAN_SECONDS,
    _CATEGORY_WORDS, _COUNTRY_LANGUAGES, _COUNTRY_P, _DEVICE_P_BY_AGE, _GENDER_P, _GENERIC_WORDS,
)
from ytspark.schema import DAY


# ------------------------------------------------------------------ public helpers
def category_names(n: int) -> list[str]:
    """Names of the first ``n`` categories (named ones first, then ``topicNN``)."""
    return [_CATEGORY_WORDS[c][0] if c < len(_CATEGORY_WORDS) else f"topic{c:02d}" for c in range(n)]


def category_words(n: int) -> list[list[str]]:
    """Word list of each of the first ``n`` categories; lists are disjoint."""
    out = []
    for c in range(n):
        if c < len(_CATEGORY_WORDS):
            out.append(list(_CATEGORY_WORDS[c][1]))
        else:
            out.append([f"t{c:02d}w{j:02d}" for j in range(WORDS_PER_CATEGORY)])
    return out


def true_affinity(
    user_interest: np.ndarray,
    video_category: np.ndarray,
    video_quality: np.ndarray,
    paired: bool = False,
) -> np.ndarray:
    """True affinity = interest[category] x quality, the quantity that drives clicks and completion.

    ``user_interest`` (K,) -> (m,) for the m videos; (n, K) -> (n, m) matrix.
    With ``paired=True`` the inputs are n (user, video) pairs: (n, K), (n,), (n,) -> (n,).
    """
    interest = np.asarray(user_interest, dtype=np.float64)
    cat = np.asarray(video_category, dtype=np.int64)
    q = np.asarray(video_quality, dtype=np.float64)
    if paired:
        return np.take_along_axis(interest, cat[:, None], axis=1)[:, 0] * q
    return interest[..., cat] * q


def interest_at(
    interest_start: np.ndarray, interest_end: np.ndarray, t: np.ndarray | float, cfg: GenerateConfig
) -> np.ndarray:
    """The user's true interest at time(s) t (epoch seconds) from the two truth vectors (3).

    Exact for the generator: interests mix linearly over the window, so
    theta(t) = start + (end - start) * (t - window_start) / window_length.
    ``interest_*`` (K,) or (n, K); ``t`` scalar or (n,).
    """
    start, end = _window(cfg)
    frac = np.clip((np.asarray(t, dtype=np.float64) - start) / (end - start), 0.0, 1.0)
    a = np.asarray(interest_start, dtype=np.float64)
    b = np.asarray(interest_end, dtype=np.float64)
    return a + (b - a) * (frac[..., None] if np.ndim(frac) else frac)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _window(cfg: GenerateConfig) -> tuple[float, float]:
    d = _dt.datetime.fromisoformat(cfg.start_date)
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    start = float(int(d.timestamp()))
    return start, start + cfg.days * DAY


def _width(n: int, minimum: int) -> int:
    return max(minimum, len(str(max(n - 1, 0))))



# ------------------------------------------------------------------ catalogue (driver)
def _groups(keys: np.ndarray, n_groups: int, upload: np.ndarray, pop: np.ndarray) -> dict[str, np.ndarray]:
    """CSR layout of videos grouped by ``keys``, sorted by upload time inside each group.

    ``cum`` is the running popularity sum over the concatenated order with a leading 0,
    so the popularity mass of the first n videos of group g is
    ``cum[ptr[g] + n] - cum[ptr[g]]`` and sampling among the videos already uploaded
    at time t is one searchsorted (videos before their upload_ts are never eligible, 5).
    """
    order = np.lexsort((np.arange(len(keys)), upload, keys)).astype(np.int32)
    counts = np.bincount(keys, minlength=n_groups)
    ptr = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    cum = np.zeros(len(order) + 1)
    np.cumsum(pop[order], out=cum[1:])
    return {"order": order, "ptr": ptr, "up": upload[order], "cum": cum, "pop": pop[order]}


def build_catalog(cfg: GenerateConfig) -> dict[str, Any]:
    """Channels and videos as numpy arrays (driver side, deterministic in ``cfg.seed``)."""
    if cfg.users < 1 or cfg.videos < 1 or cfg.channels < 1 or cfg.categories < 1 or cfg.days < 1:
        raise ValueError("generate: users, videos, channels, categories and days must all be >= 1")
    if cfg.seed < 0:
        raise ValueError(f"generate.seed must be >= 0, got {cfg.seed}")
    rng = np.random.default_rng([cfg.seed, 0xCA7A])
    K, L = cfg.categories, len(LANGUAGES)
    start, end = _window(cfg)

    # Global category popularity (some topics are bigger than others) (1, 2).
    cat_weight = 1.0 / np.arange(1, K + 1) ** 0.7
    cat_weight = cat_weight[rng.permutation(K)]
    cat_weight /= cat_weight.sum()

    # Channels: a main category, a language tied to a country, and Zipf-like sizes (2).
    n_ch = cfg.channels
    ch_cat = rng.choice(K, size=n_ch, p=cat_weight)
    ch_country = rng.choice(len(COUNTRIES), size=n_ch, p=_COUNTRY_P)
    ch_lang = np.empty(n_ch, dtype=np.int64)
    for i in range(n_ch):
        langs = _COUNTRY_LANGUAGES[COUNTRIES[ch_country[i]]]
        names = [x[0] for x in langs]
        p = np.array([x[1] for x in langs])
        ch_lang[i] = LANGUAGES.index(names[rng.choice(len(names), p=p)])
    ch_size = 1.0 / np.arange(1, n_ch + 1) ** 0.8
    ch_size = ch_size[rng.permutation(n_ch)]
    ch_size /= ch_size.sum()

    # Videos (2).
    m = cfg.videos
    chan = rng.choice(n_ch, size=m, p=ch_size)
    if m >= n_ch:  # every channel posts at least once
        chan[rng.permutation(m)[:n_ch]] = np.arange(n_ch)
    own_cat = rng.random(m) < CHANNEL_MAIN_CATEGORY
    cat = np.where(own_cat, ch_cat[chan], rng.choice(K, size=m, p=cat_weight))
    lang = np.where(rng.random(m) < 0.95, ch_lang[chan], LANGUAGES.index("en"))
    # Uploads spread over the window and as long before it; the oldest video is
    # always available, so every visit can watch something (5, 8).
    upload = np.floor(rng.uniform(start - cfg.days * DAY, end - 3600.0, size=m))
    upload[int(np.argmin(upload))] = start - cfg.days * DAY
    names = category_names(K)
    med = np.array([_CATEGORY_MEDIAN_SECONDS.get(n, 480) for n in names], dtype=np.float64)
    duration = np.clip(np.round(med[cat] * np.exp(rng.normal(0.0, 0.6, size=m))), 15.0, MAX_DURATION)
    # Zipf popularity over a random ranking; quality correlated with popularity (2, 7).
    rank = rng.permutation(m) + 1
    pop = 1.0 / rank.astype(np.float64) ** ZIPF_EXPONENT
    z = np.log(pop)
    z = (z - z.mean()) / (z.std() + 1e-9)
    quality = _sigmoid(0.7 * z + rng.normal(0.0, 1.0, size=m))
    # Titles: topical words of the video's category, Zipf within the list, and sometimes
    # a generic word (2).
    words = category_words(K)
    word_p = 1.0 / np.arange(1, WORDS_PER_CATEGORY + 1)
    word_p /= word_p.sum()
    titles = []
    for i in range(m):
        n_w = int(rng.integers(2, 6))
        ws = [words[cat[i]][j] for j in rng.choice(len(words[cat[i]]), size=n_w, replace=False, p=word_p)]
        if rng.random() < 0.3:
            ws.insert(0, _GENERIC_WORDS[rng.integers(len(_GENERIC_WORDS))])
        titles.append(" ".join(ws))

    series, episode, next_ep, up_next = _series_and_up_next(cfg, chan, upload)

    return {
        "start": start,
        "end": end,
        "K": K,
        "cat_weight": cat_weight,
        "cat_names": names,
        "words": words,
        "video_w": _width(m, 5),
        "channel_w": _width(n_ch, 4),
        "cat": cat.astype(np.int32),
        "chan": chan.astype(np.int32),
        "lang": lang.astype(np.int32),
        "upload": upload,
        "duration": duration,
        "pop": pop,
        "quality": quality,
        "titles": titles,
        "series": series,
        "episode": episode,
        "next_ep": next_ep,
        "up_next": up_next,
        "g_cat": _groups(cat, K, upload, pop),
        "g_catlang": _groups(cat * L + lang, K * L, upload, pop),
        "g_chan": _groups(chan, n_ch, upload, pop),
        "g_lang": _groups(lang, L, upload, pop),
    }


def _series_and_up_next(
    cfg: GenerateConfig, chan: np.ndarray, upload: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Series and the fixed "up next" video of every video (4); own RNG stream, the rest of the catalogue unchanged.

    A series is a run of consecutive uploads of one channel (episodes 1..n in upload order,
    n = SERIES_MIN_LENGTH + Poisson); runs start so that about ``cfg.series_share`` of the
    videos are episodes. ``up_next[v]`` is an earlier upload of v's channel drawn once (so it
    is available whenever v is; -1 for a channel's first upload). Returns series id (-1: none),
    episode number (0: none), next episode (-1: none) and up next, all by video index.
    """
    rng = np.random.default_rng([cfg.seed, 0x5E41E5])
    m = len(chan)
    by_channel = np.lexsort((np.arange(m), upload, chan))
    ch_sorted = chan[by_channel]
    first = np.r_[True, ch_sorted[1:] != ch_sorted[:-1]]
    pos = np.arange(m) - np.maximum.accumulate(np.where(first, np.arange(m), 0))  # rank of the upload in its channel
    up_next = np.full(m, -1, dtype=np.int32)
    has = pos > 0
    back = np.floor(rng.random(m) * pos).astype(np.int64)  # uniform over the channel's earlier uploads
    up_next[by_channel[has]] = by_channel[(np.arange(m) - pos + back)[has]]

    series = np.full(m, -1, dtype=np.int32)
    episode = np.zeros(m, dtype=np.int32)
    next_ep = np.full(m, -1, dtype=np.int32)
    s, mu = float(cfg.series_share), SERIES_MIN_LENGTH + SERIES_EXTRA_MEAN
    p_start = s / (mu * (1.0 - s) + s) if s < 1.0 else 1.0  # a run of mean mu starts at this rate: share ~ s
    end_of_channel = np.r_[ch_sorted[1:] != ch_sorted[:-1], True]
    i, sid = 0, 0
    while i < m:
        if s > 0.0 and rng.random() < p_start:
            n = SERIES_MIN_LENGTH + int(rng.poisson(SERIES_EXTRA_MEAN))
            j = i
            while j - i < n:  # the run stops at the end of the channel
                series[by_channel[j]], episode[by_channel[j]] = sid, j - i + 1
                if j > i:
                    next_ep[by_channel[j - 1]] = by_channel[j]
                j += 1
                if end_of_channel[j - 1]:
                    break
            if j - i == 1:  # a one-video run is no series
                series[by_channel[i]], episode[by_channel[i]] = -1, 0
            else:
                sid += 1
            i = j
        else:
            i += 1
    return series, episode, next_ep, up_next


def _demographic_prior(cfg: GenerateConfig) -> dict[str, np.ndarray]:
    """Log-shifts of the interest prior per age bucket, gender and country (1).

    The base (demand) is Zipf-like over categories, drawn independently of the
    catalogue's category sizes (supply): some big categories are less watched per video.
    """
    rng = np.random.default_rng([cfg.seed, 0xDE30])
    K = cfg.categories
    base = 1.0 / np.arange(1, K + 1) ** 0.7
    return {
        "base": np.log(base[rng.permutation(K)] / base.sum()),
        "age": rng.normal(0.0, SHIFT_SD_AGE, size=(len(_AGE_RANGES), K)),
        "gender": rng.normal(0.0, SHIFT_SD_GENDER, size=(len(GENDERS), K)),
        "country": rng.normal(0.0, SHIFT_SD_COUNTRY, size=(len(COUNTRIES), K)),
    }


# ------------------------------------------------------------------ users (executors)
def _user_profile(ctx: dict[str, Any], uidx: int) -> dict[str, Any]:
    """Demographics and interests of user ``uidx``: depends only on (seed, uidx) (1, 3)."""
    rng = np.random.default_rng([ctx["seed"], int(uidx), 0])
    K = ctx["K"]
    prior = ctx["prior"]
    b = _draw_category(_AGE_P, rng)
    lo, hi = _AGE_RANGES[b]
    age = float(rng.integers(lo, hi))
    g = _draw_category(_GENDER_P, rng)
    c = _draw_category(_COUNTRY_P, rng)
    langs = _COUNTRY_LANGUAGES[COUNTRIES[c]]
    lang = langs[_draw_category([x[1] for x in langs], rng)][0]
    device = _draw_category(_DEVICE_P_BY_AGE[b], rng)
    # Interests: Dirichlet around a prior shifted by age bucket, gender and country (1);
    # a second vector the user drifts toward linearly over the window (3).
    logit = prior["base"] + prior["age"][b] + prior["gender"][g] + prior["country"][c]
    p = np.exp(logit - logit.max())
    alpha = np.maximum(DIRICHLET_CONCENTRATION * K * p / p.sum(), 0.02)
    theta0 = rng.dirichlet(alpha)
    theta1 = rng.dirichlet(alpha)
    drift = float(rng.uniform(0.0, DRIFT_MAX))
    activity = float(rng.gamma(2.0, 0.5))  # heavy and light users, mean 1
    no_age = rng.random() < P_NO_AGE
    start_year = ctx["start_year"]
    return {
        "uidx": int(uidx),
        "user_id": f"u{int(uidx):0{ctx['user_w']}d}",
        "age": None if no_age else age,
        "birth_year": int(start_year - age) if no_age else None,
        "gender": GENDERS[g],
        "country": COUNTRIES[c],
        "language": lang,
        "lang_idx": LANGUAGES.index(lang),
        "device": DEVICES[device],
        "theta0": theta0,
        "theta1": theta1,
        "drift": drift,
        "activity": activity,
    }


def _theta_at(ctx: dict[str, Any], prof: dict[str, Any], t: float) -> np.ndarray:
    """Interest at time t: linear mix from theta0 toward theta1 over the window (3).

    Frozen outside the window (as :func:`interest_at`): after the window end it stays
    the truth table's ``interest``.
    """
    t = min(max(t, ctx["start"]), ctx["end"])
    w = prof["drift"] * (t - ctx["start"]) / (ctx["end"] - ctx["start"])
    return (1.0 - w) * prof["theta0"] + w * prof["theta1"]



# ------------------------------------------------------------------ draws
def _draw_cum(c: np.ndarray, rng) -> int:
    """Index drawn with probability proportional to the increments of the cumulative sum c."""
    return min(int(c.searchsorted(rng.random() * c[-1], side="right")), len(c) - 1)


def _draw_category(p, rng) -> int:
    """Index drawn with probability proportional to p (faster than rng.choice for one draw)."""
    return _draw_cum(np.cumsum(p), rng)



# ------------------------------------------------------------------ Spark entry point
def _context(cfg: GenerateConfig, cat: dict[str, Any]) -> dict[str, Any]:
    """What executors need (broadcast once): catalogue arrays, priors, knobs."""
    m = len(cat["upload"])
    ctx = dict(cat)
    ctx["g_all"] = _groups(np.zeros(m, dtype=np.int64), 1, cat["upload"], cat["pop"])
    ctx["seed"] = int(cfg.seed)
    ctx["visits"] = float(cfg.visits_per_user)
    ctx["p_binge"] = float(cfg.p_binge)
    ctx["p_autoplay"] = float(cfg.p_autoplay)
    ctx["tau"] = FRESH_TAU_DAYS * DAY
    ctx["prior"] = _demographic_prior(cfg)
    ctx["user_w"] = _width(cfg.users, 6)
    ctx["start_year"] = _dt.datetime.fromtimestamp(cat["start"], _dt.timezone.utc).year
    return ctx
