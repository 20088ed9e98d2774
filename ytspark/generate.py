"""Seeded synthetic video platform in the input contract (DESIGN.md "Input contract").

``generate(spark, cfg, out_dir)`` writes

* ``<out_dir>/events``  watch / search / impression rows (``schema.EVENTS_COLUMNS``)
* ``<out_dir>/users``   demographics (``schema.USERS_COLUMNS``)
* ``<out_dir>/videos``  catalogue (``schema.VIDEOS_COLUMNS``)
* ``<out_dir>/_truth/user_interest``  user_id, interest (array<float> over categories,
  at the end of the window), interest_start (at the start)
* ``<out_dir>/_truth/video_topic``    video_id, category (int index), quality, popularity
* ``<out_dir>/_truth/generate_config.json``  the GenerateConfig (the world is a function of it:
  :func:`truth_config` reads it back, :func:`true_engagement` rebuilds the truth from it)

and returns the row counts. :func:`true_affinity` turns the two truth tables into
the affinity that drives clicks and watch completion, so evaluation can measure
how well a model recovers it; :func:`interest_at` gives the exact interest vector at
any time in the window (interests move linearly from ``interest_start`` to
``interest``). The truth ``category`` is the index into ``category_names(categories)``,
the same category whose name the videos table carries.

Closed loop (a later night shown what an earlier night recommended):
:func:`true_engagement` gives the true click probability and expected watch time
of any (user, video) pairs at a time, and :func:`log_shown_lists` turns a nightly
top-N table into impression events in the ``events`` format, clicks and watch time
drawn from that same truth. Both take the ``GenerateConfig`` the world was
generated with (the world is rebuilt from its seed, exactly).

Size: about 1.7 watches, 0.25 searches and 5.3 impressions per visit, so
``visits_per_user`` 12 gives ~87 events per user (~21 watches, ~63 impressions); the
default config writes ~435k events, ``users=1_000_000`` ~87M. Home-feed impressions
are clicked ~12% of the time (a video the user came for is in the slate only with
``P_INTENT_SHOWN``; the rest of the slate is clicked with a small, affinity-driven
probability).

How it runs (so it scales): the catalogue (channels, videos) is small and built on
the driver with numpy, then broadcast. Users are ``spark.range(users)`` spread over
``cfg.partitions`` partitions; each partition simulates its users with numpy inside
``mapInPandas``. Every user has its own RNG seeded from ``(cfg.seed, user index)``,
so the output depends only on the config, never on the partitioning, and the driver
never holds an event.

The simulation is built so that each model input of the paper *matters*; every part
below says which property it serves:

1. demographics shift the Dirichlet prior of interests   -> demographic features
2. channels, category-specific title words, Zipf popularity, languages
                                                          -> video ids, language match
3. interests drift over the window                       -> recency, example age
4. next watch often from the last watch's channel / next episode
                                                          -> watch history / sequence
5. fresh uploads get a burst exp(-(t - upload)/tau); nothing is watched before upload
                                                          -> example age, video age
6. searches carry category words and steer the next watch -> search tokens
7. impression slates with clicks and watch time driven by true affinity, a home-feed
   click rate, watch time that grows far slower than duration  -> ranking, weighted LR
8. every user has >= MIN_VISITS visits, each with >= 1 watch -> temporal split exists
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import logging
import math
import time
from typing import Any, Iterator

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ytspark import schema as S
from ytspark import storage
from ytspark.config import GenerateConfig

__all__ = [
    "generate",
    "true_affinity",
    "interest_at",
    "category_names",
    "category_words",
    "build_catalog",
    "true_engagement",
    "log_shown_lists",
    "truth_config",
    "TRUTH_CONFIG",
    "EVENTS_SCHEMA",
    "USERS_SCHEMA",
    "VIDEOS_SCHEMA",
    "USER_INTEREST_SCHEMA",
    "VIDEO_TOPIC_SCHEMA",
]

log = logging.getLogger(__name__)

DAY = 86400.0

# ------------------------------------------------------------------ behaviour knobs
# Module constants rather than config keys: they define *what* the synthetic world
# is, GenerateConfig only its size and seed.
SLATE_SIZE = 8  # impressions shown per home-page visit (7)
P_INTENT_SHOWN = 0.35  # a video the user came for is in the home slate this often, else reached elsewhere (7)
P_SEARCH_VISIT = 0.3  # share of visits that start with a search (6)
P_SEARCH_HIT = 0.9  # first watch after a search is from the searched category (6)
P_SEQ_WITHIN = 0.5  # next watch in the same visit follows the last watch's channel (4)
P_SEQ_ACROSS = 0.3  # same, for the first watch of a visit (4)
P_NEXT_EPISODE = 0.6  # given "follow the channel": take the next upload of the channel (4)
P_OWN_LANGUAGE = 0.8  # interest-driven watches restricted to the user's language (2)
P_TRENDING = 0.15  # a watch picked by global popularity x freshness, whatever the interest (2)
FRESH_TAU_DAYS = 3.0  # freshness burst decay (5)
FRESH_BOOST = 10.0  # a just-uploaded video weighs (1 + FRESH_BOOST) x its popularity (5)
FRESH_WINDOW_TAUS = 5.0  # burst truncated after this many taus (exp(-5) < 1 %) (5)
ZIPF_EXPONENT = 1.2  # video popularity ~ rank^-s (2)
CHANNEL_MAIN_CATEGORY = 0.85  # a channel's videos are in its main category this often (2)
MIN_VISITS = 3  # every user gets at least this many visits, each with >= 1 watch (8)
VISIT_MARGIN = 6 * 3600.0  # visits start at least this long before the window end
DRIFT_MAX = 0.6  # interest mixes up to this far toward a second interest vector (3)
DIRICHLET_CONCENTRATION = 0.3  # alpha_0 = this * categories: < 1 per category, peaky interests (1)
# Affinity a = interest[category] * quality; x = log(categories * a + AFF_EPS) is ~0 for
# an average pair, positive for a favourite category. Click and completion are logistic in x
# and in log(duration / DURATION_REF): a long video is clicked a little less and abandoned
# sooner, so expected watch time grows far slower than duration and affinity decides (7).
AFF_EPS = 0.05
DURATION_REF = 600.0
CLICK_BIAS, CLICK_SLOPE, CLICK_DURATION_SLOPE = -3.8, 1.5, 0.4
COMPLETION_BIAS, COMPLETION_SLOPE, COMPLETION_CONC = -0.3, 0.8, 6.0
COMPLETION_DURATION_SLOPE = 0.9
MAX_DURATION = 3 * 3600.0
USERS_PER_CHUNK = 1000  # users simulated per pandas batch yielded by a partition

# ------------------------------------------------------------------ vocabularies
# Category names with disjoint word lists: titles and queries are drawn from them, so
# a search token identifies a category (6) and titles carry topical words (2).
_CATEGORY_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("music", ("song", "album", "live", "concert", "remix", "lyrics", "guitar", "piano", "cover", "band", "playlist", "acoustic")),
    ("gaming", ("gameplay", "walkthrough", "speedrun", "minecraft", "boss", "level", "multiplayer", "console", "esports", "mod", "stream", "rpg")),
    ("news", ("breaking", "election", "report", "politics", "economy", "interview", "headlines", "debate", "policy", "briefing", "crisis", "world")),
    ("sports", ("football", "goals", "highlights", "match", "basketball", "tennis", "league", "championship", "transfer", "training", "coach", "score")),
    ("comedy", ("funny", "prank", "standup", "sketch", "parody", "jokes", "bloopers", "roast", "hilarious", "skit", "meme", "laugh")),
    ("education", ("lecture", "lesson", "explained", "math", "physics", "history", "tutorial", "course", "exam", "chemistry", "biology", "learn")),
    ("cooking", ("recipe", "kitchen", "baking", "pasta", "dinner", "chicken", "dessert", "vegan", "grill", "bread", "spicy", "chef")),
    ("travel", ("trip", "travel", "city", "beach", "hotel", "flight", "hiking", "island", "backpacking", "tour", "vlog", "adventure")),
    ("tech", ("review", "unboxing", "smartphone", "laptop", "gadget", "camera", "specs", "benchmark", "android", "iphone", "pc", "build")),
    ("beauty", ("makeup", "skincare", "lipstick", "hair", "nails", "routine", "foundation", "glow", "haul", "palette", "serum", "salon")),
    ("fitness", ("workout", "yoga", "cardio", "abs", "gym", "stretching", "hiit", "squat", "running", "muscle", "pilates", "fatloss")),
    ("science", ("space", "experiment", "quantum", "universe", "planet", "rocket", "evolution", "nasa", "telescope", "atoms", "climate", "discovery")),
    ("film", ("trailer", "movie", "scene", "director", "cinema", "actor", "oscar", "sequel", "boxoffice", "screenplay", "premiere", "cast")),
    ("kids", ("cartoon", "nursery", "toys", "rhymes", "abc", "puppet", "bedtime", "colors", "animation", "story", "kindergarten", "playtime")),
    ("autos", ("car", "engine", "drift", "supercar", "motorcycle", "racing", "restoration", "electric", "truck", "horsepower", "dashcam", "garage")),
    ("pets", ("dog", "cat", "puppy", "kitten", "parrot", "aquarium", "grooming", "rescue", "cute", "hamster", "vet", "leash")),
    ("diy", ("woodworking", "craft", "repair", "renovation", "tools", "garden", "decor", "handmade", "sewing", "paint", "plumbing", "furniture")),
    ("finance", ("stocks", "investing", "crypto", "budget", "money", "trading", "retirement", "bitcoin", "taxes", "savings", "dividend", "market")),
    ("fashion", ("outfit", "style", "streetwear", "sneakers", "runway", "lookbook", "vintage", "dress", "designer", "thrift", "jewelry", "trends")),
    ("podcast", ("podcast", "conversation", "talkshow", "guest", "panel", "commentary", "opinion", "discussion", "mic", "host", "storytime", "philosophy")),
    ("anime", ("anime", "manga", "cosplay", "opening", "episode", "waifu", "shonen", "otaku", "ova", "isekai", "mecha", "studio")),
    ("asmr", ("asmr", "whisper", "tapping", "relaxing", "sleep", "triggers", "rain", "soft", "crinkle", "ambience", "calm", "tingles")),
    ("spirituality", ("meditation", "prayer", "mindfulness", "sermon", "chanting", "faith", "temple", "worship", "gospel", "zen", "scripture", "blessing")),
    ("art", ("drawing", "painting", "sketching", "watercolor", "illustration", "portrait", "sculpture", "digital", "canvas", "calligraphy", "gallery", "charcoal")),
)
# Typical durations (median seconds) per category: "completed" = half watched is a
# different bar for a song than for a podcast.
_CATEGORY_MEDIAN_SECONDS = {
    "music": 240, "gaming": 1200, "news": 300, "sports": 420, "comedy": 360, "education": 900,
    "cooking": 600, "travel": 720, "tech": 660, "beauty": 600, "fitness": 1500, "science": 780,
    "film": 150, "kids": 420, "autos": 720, "pets": 240, "diy": 900, "finance": 840, "fashion": 540,
    "podcast": 3600, "anime": 1400, "asmr": 1800, "spirituality": 1200, "art": 840,
}
_GENERIC_WORDS = ("best", "new", "top", "how", "full", "official", "2026", "ultimate", "easy", "part")
WORDS_PER_CATEGORY = 12

# Demographics (1). Countries with population shares and their languages.
COUNTRIES = ("US", "IN", "BR", "GB", "DE", "JP", "MX", "FR", "KR")
_COUNTRY_P = (0.30, 0.20, 0.12, 0.08, 0.07, 0.07, 0.07, 0.05, 0.04)
LANGUAGES = ("en", "hi", "pt", "de", "ja", "es", "fr", "ko")
_COUNTRY_LANGUAGES = {  # country -> ((language, p), ...)
    "US": (("en", 0.92), ("es", 0.08)),
    "IN": (("hi", 0.6), ("en", 0.4)),
    "BR": (("pt", 1.0),),
    "GB": (("en", 1.0),),
    "DE": (("de", 0.85), ("en", 0.15)),
    "JP": (("ja", 1.0),),
    "MX": (("es", 1.0),),
    "FR": (("fr", 0.9), ("en", 0.1)),
    "KR": (("ko", 1.0),),
}
GENDERS = ("f", "m", None)  # None: not given (3 %)
_GENDER_P = (0.485, 0.485, 0.03)
DEVICES = ("mobile", "desktop", "tv", "tablet")
# Age buckets follow schema.AGE_BUCKETS lower bounds (0, 18, 25, 35, 45, 55, 65); the
# youngest users are 13.
_AGE_RANGES = ((13, 18), (18, 25), (25, 35), (35, 45), (45, 55), (55, 65), (65, 80))
_AGE_P = (0.10, 0.22, 0.25, 0.18, 0.12, 0.08, 0.05)
_DEVICE_P_BY_AGE = (
    (0.75, 0.10, 0.05, 0.10),
    (0.72, 0.18, 0.05, 0.05),
    (0.62, 0.23, 0.10, 0.05),
    (0.55, 0.25, 0.13, 0.07),
    (0.48, 0.27, 0.17, 0.08),
    (0.42, 0.28, 0.20, 0.10),
    (0.35, 0.30, 0.25, 0.10),
)
# Std-dev of the log-shifts of the interest prior per demographic value (1).
SHIFT_SD_AGE, SHIFT_SD_GENDER, SHIFT_SD_COUNTRY = 1.0, 0.6, 0.5
P_NO_AGE = 0.05  # these users give birth_year instead of age (contract: "age or birth_year")


# ------------------------------------------------------------------ output schemas
def _struct(columns: dict[str, T.DataType]) -> T.StructType:
    return T.StructType([T.StructField(n, t, True) for n, t in columns.items()])


EVENTS_SCHEMA = _struct(S.EVENTS_COLUMNS)
USERS_SCHEMA = _struct(S.USERS_COLUMNS)
VIDEOS_SCHEMA = _struct(S.VIDEOS_COLUMNS)
INTEREST = "interest"
INTEREST_START = "interest_start"
QUALITY = "quality"
POPULARITY = "popularity"
USER_INTEREST_SCHEMA = T.StructType(
    [
        T.StructField(S.USER_ID, T.StringType(), False),
        T.StructField(INTEREST, T.ArrayType(T.FloatType(), False), False),
        T.StructField(INTEREST_START, T.ArrayType(T.FloatType(), False), False),
    ]
)
VIDEO_TOPIC_SCHEMA = T.StructType(
    [
        T.StructField(S.VIDEO_ID, T.StringType(), False),
        T.StructField(S.CATEGORY, T.IntegerType(), False),
        T.StructField(QUALITY, T.DoubleType(), False),
        T.StructField(POPULARITY, T.DoubleType(), False),
    ]
)
_USERS_WITH_TRUTH = T.StructType(USERS_SCHEMA.fields + USER_INTEREST_SCHEMA.fields[1:])
_VIDEOS_WITH_TRUTH = T.StructType(
    VIDEOS_SCHEMA.fields + [T.StructField("topic_" + f.name, f.dataType, True) for f in VIDEO_TOPIC_SCHEMA.fields[1:]]
)


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

    # Next episode: the next upload of the same channel (4).
    by_channel = np.lexsort((np.arange(m), upload, chan))
    next_ep = np.full(m, -1, dtype=np.int32)
    same = chan[by_channel[:-1]] == chan[by_channel[1:]]
    next_ep[by_channel[:-1][same]] = by_channel[1:][same]

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
        "next_ep": next_ep,
        "g_cat": _groups(cat, K, upload, pop),
        "g_catlang": _groups(cat * L + lang, K * L, upload, pop),
        "g_chan": _groups(chan, n_ch, upload, pop),
        "g_lang": _groups(lang, L, upload, pop),
    }


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


def _draw_cum(c: np.ndarray, rng) -> int:
    """Index drawn with probability proportional to the increments of the cumulative sum c."""
    return min(int(c.searchsorted(rng.random() * c[-1], side="right")), len(c) - 1)


def _draw_category(p, rng) -> int:
    """Index drawn with probability proportional to p (faster than rng.choice for one draw)."""
    return _draw_cum(np.cumsum(p), rng)


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
            nxt = int(ctx["next_ep"][last])
            if rng.random() < P_NEXT_EPISODE and nxt >= 0 and ctx["upload"][nxt] <= t and nxt not in watched:
                return nxt
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
        busy_until = max(busy_until, t)
        for k, v in enumerate(slate):
            if not in_slate[k]:
                continue
            ws = ws_of.get(k)
            rows.add(
                t0 + float(pos[k]), uid, "impression", f"v{v:0{vw}d}", None, ws, float(dur[v]),
                1 if ws is not None else 0, device, country,
            )


def _chunks(ids: np.ndarray, n: int) -> Iterator[np.ndarray]:
    for i in range(0, len(ids), n):
        yield ids[i : i + n]


def _events_partition(ctx: dict[str, Any], batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        for ids in _chunks(batch["id"].to_numpy(), USERS_PER_CHUNK):
            rows = _Rows()
            for uidx in ids:
                _simulate_user(ctx, _user_profile(ctx, int(uidx)), rows)
            if len(rows):
                yield rows.frame()


def _users_partition(ctx: dict[str, Any], batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        for ids in _chunks(batch["id"].to_numpy(), USERS_PER_CHUNK):
            profs = [_user_profile(ctx, int(u)) for u in ids]
            yield pd.DataFrame(
                {
                    S.USER_ID: pd.Series([p["user_id"] for p in profs], dtype="object"),
                    S.GENDER: pd.Series([p["gender"] for p in profs], dtype="object"),
                    S.AGE: pd.Series([p["age"] for p in profs], dtype="float64"),
                    S.BIRTH_YEAR: pd.Series([p["birth_year"] for p in profs], dtype="object"),
                    S.COUNTRY: pd.Series([p["country"] for p in profs], dtype="object"),
                    S.LANGUAGE: pd.Series([p["language"] for p in profs], dtype="object"),
                    S.DEVICE: pd.Series([p["device"] for p in profs], dtype="object"),
                    INTEREST: [_theta_at(ctx, p, ctx["end"]).astype(np.float32) for p in profs],
                    INTEREST_START: [p["theta0"].astype(np.float32) for p in profs],
                }
            )


def _videos_partition(ctx: dict[str, Any], batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    vw, cw = ctx["video_w"], ctx["channel_w"]
    for batch in batches:
        i = batch["id"].to_numpy()
        yield pd.DataFrame(
            {
                S.VIDEO_ID: [f"v{k:0{vw}d}" for k in i],
                S.UPLOAD_TS: ctx["upload"][i],
                S.DURATION_SECONDS: ctx["duration"][i],
                S.LANGUAGE: [LANGUAGES[k] for k in ctx["lang"][i]],
                S.CHANNEL_ID: [f"c{k:0{cw}d}" for k in ctx["chan"][i]],
                S.CATEGORY: [ctx["cat_names"][k] for k in ctx["cat"][i]],
                S.TITLE: [ctx["titles"][k] for k in i],
                "topic_" + S.CATEGORY: ctx["cat"][i].astype(np.int32),
                "topic_" + QUALITY: ctx["quality"][i],
                "topic_" + POPULARITY: ctx["pop"][i],
            }
        )


# ------------------------------------------------------------------ Spark entry point
def _context(cfg: GenerateConfig, cat: dict[str, Any]) -> dict[str, Any]:
    """What executors need (broadcast once): catalogue arrays, priors, knobs."""
    m = len(cat["upload"])
    ctx = dict(cat)
    ctx["g_all"] = _groups(np.zeros(m, dtype=np.int64), 1, cat["upload"], cat["pop"])
    ctx["seed"] = int(cfg.seed)
    ctx["visits"] = float(cfg.visits_per_user)
    ctx["tau"] = FRESH_TAU_DAYS * DAY
    ctx["prior"] = _demographic_prior(cfg)
    ctx["user_w"] = _width(cfg.users, 6)
    ctx["start_year"] = _dt.datetime.fromtimestamp(cat["start"], _dt.timezone.utc).year
    return ctx


TRUTH_CONFIG = "_truth/generate_config.json"  # under the output: the GenerateConfig the world was built from


def truth_config(spark: SparkSession, events_path: str) -> GenerateConfig | None:
    """The GenerateConfig of the world whose events table is ``events_path`` (``<out>/events``), read from
    ``<out>/_truth/generate_config.json``; None for any other input (real logs, MovieLens)."""
    root = events_path.rstrip("/")
    if not root.endswith("/events") and root != "events":
        return None
    path = f"{root[:-len('events')].rstrip('/') or '.'}/{TRUTH_CONFIG}"
    if not storage.exists(spark, path):
        return None
    fields = {f.name for f in dataclasses.fields(GenerateConfig)}
    return GenerateConfig(**{k: v for k, v in storage.read_json(spark, path).items() if k in fields})


def _write(spark: SparkSession, df: DataFrame, path: str) -> None:
    t = time.time()
    with storage.atomic_dir(spark, path) as tmp:
        df.write.mode("overwrite").parquet(tmp)
    log.info("generate: wrote %s in %.1fs", path, time.time() - t)


def generate(spark: SparkSession, cfg: GenerateConfig, out_dir: str) -> dict[str, int]:
    """Write the synthetic platform under ``out_dir``; return row counts per table and event type."""
    t0 = time.time()
    out = out_dir.rstrip("/")
    cat = build_catalog(cfg)
    ctx = _context(cfg, cat)
    bc = spark.sparkContext.broadcast(ctx)

    # Videos are built on the driver but written through executors (Arrow, any size).
    vids = spark.range(0, len(cat["upload"]), numPartitions=max(1, min(cfg.partitions, cfg.videos // 20_000 + 1)))

    def videos_fn(batches):
        return _videos_partition(bc.value, batches)

    videos_all = vids.mapInPandas(videos_fn, _VIDEOS_WITH_TRUTH)
    _write(spark, videos_all.select(*S.VIDEOS_COLUMNS), f"{out}/videos")
    topic = videos_all.select(S.VIDEO_ID, *[F.col("topic_" + f).alias(f) for f in VIDEO_TOPIC_SCHEMA.fieldNames()[1:]])
    _write(spark, topic, f"{out}/_truth/video_topic")

    ids = spark.range(0, cfg.users, numPartitions=max(1, cfg.partitions))

    def users_fn(batches):
        return _users_partition(bc.value, batches)

    def events_fn(batches):
        return _events_partition(bc.value, batches)

    # Profiles are simulated once and feed two tables (users, truth).
    users_all = ids.mapInPandas(users_fn, _USERS_WITH_TRUTH).persist(StorageLevel.MEMORY_AND_DISK)
    _write(spark, users_all.select(*S.USERS_COLUMNS), f"{out}/users")
    _write(spark, users_all.select(S.USER_ID, INTEREST, INTEREST_START), f"{out}/_truth/user_interest")
    users_all.unpersist()
    _write(spark, ids.mapInPandas(events_fn, EVENTS_SCHEMA), f"{out}/events")
    bc.unpersist()
    # the world is a function of its config: evaluation rebuilds the truth from it (true_engagement)
    storage.write_json(spark, f"{out}/{TRUTH_CONFIG}", dataclasses.asdict(cfg))
    log.info("generate: %d users, %d videos in %.1fs", cfg.users, cfg.videos, time.time() - t0)

    # Event counts from what was written (users and videos are one row per id by construction).
    by_type = {
        r[S.EVENT_TYPE]: r["count"]
        for r in spark.read.parquet(f"{out}/events").groupBy(S.EVENT_TYPE).count().collect()
    }
    counts = {"users": int(cfg.users), "videos": int(cfg.videos), "events": int(sum(by_type.values()))}
    for et in S.EVENT_TYPES:
        counts[et] = int(by_type.get(et, 0))
    return counts


# ------------------------------------------------------------------ closed loop (driver)
# A benchmark of two consecutive nights: night 1's top-N table is shown to the users,
# the generator's truth decides what they click and watch, and night 2 is scored with
# those impressions in the log. The world is rebuilt from the config (exact and
# cheap: the catalogue on the driver, one profile per user asked for), which also
# gives what the ``_truth`` tables do not hold (duration, upload time, device, country).
SHOWN_RANK = "rank"  # the nightly table's 1-based position column
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
    shown: pd.DataFrame, cfg: GenerateConfig, ts: float, seed: int, *, watches: bool = False
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
    its watch time plus 3-30 s later, in rank order, same watch_seconds.

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
            ets = []
            for w in ws[clicked]:
                ets.append(t)
                t += math.ceil(w) + float(rng.integers(3, 30))
            k = int(clicked.sum())
            add(k, np.array(ets), prof["user_id"], "watch", v[clicked], ws[clicked], [None] * k, device,
                prof["country"])

    flat = {c: (np.concatenate(x) if x and isinstance(x[0], np.ndarray) else [y for part in x for y in part])
            for c, x in cols.items()}
    out = _events_frame(flat)
    return out.sort_values([S.USER_ID, S.EVENT_TS], kind="stable").reset_index(drop=True)
