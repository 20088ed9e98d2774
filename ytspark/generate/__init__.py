"""Seeded synthetic video platform in the input contract (DESIGN.md "Input contract").

Modules: :mod:`~ytspark.generate.constants` (what the world is: behaviour knobs,
vocabularies, demographics), :mod:`~ytspark.generate.world` (catalogue and users),
:mod:`~ytspark.generate.behaviour` (visits, searches, watches, impressions, watch
time), :mod:`~ytspark.generate.driver` (output schemas, Spark partitions,
:func:`generate`), :mod:`~ytspark.generate.closed_loop` (truth of shown lists).
Every name below is importable from ``ytspark.generate``.

``generate(spark, cfg, out_dir)`` writes

* ``<out_dir>/events``  watch / search / impression rows (``schema.EVENTS_COLUMNS``)
* ``<out_dir>/users``   demographics (``schema.USERS_COLUMNS``)
* ``<out_dir>/videos``  catalogue (``schema.VIDEOS_COLUMNS``)
* ``<out_dir>/_truth/user_interest``  user_id, interest (array<float> over categories,
  at the end of the window), interest_start (at the start)
* ``<out_dir>/_truth/video_topic``    video_id, category (int index), quality, popularity,
  series_id and episode (null: not in a series), up_next (the video autoplay continues with)
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

Size: about 2.1 watches (1.7 chosen, 0.4 autoplay continuations), 0.25 searches and
5.3 impressions per visit, so ``visits_per_user`` 12 gives ~93 events per user (~27
watches, ~63 impressions); the default config writes ~465k events, ``users=1_000_000``
~93M. Home-feed impressions
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
4. next watch often from the last watch's channel; series (a channel's uploads 1..n)
   binged in order and autoplay's fixed "up next": the next watch a function of the last
                                                          -> watch history / sequence
5. fresh uploads get a burst exp(-(t - upload)/tau); nothing is watched before upload
                                                          -> example age, video age
6. searches carry category words and steer the next watch -> search tokens
7. impression slates with clicks and watch time driven by true affinity, a home-feed
   click rate, watch time that grows far slower than duration  -> ranking, weighted LR
8. every user has >= MIN_VISITS visits, each with >= 1 watch -> temporal split exists
"""
from __future__ import annotations

# Re-exports: the public API (__all__) and the parts that tests and benchmarks reach into.
from ytspark.generate.behaviour import _affinity_x, _Rows, _simulate_user  # noqa: F401
from ytspark.generate.closed_loop import SHOWN_RANK, SHOWN_SLOT_SECONDS, log_shown_lists, true_engagement  # noqa: F401
from ytspark.generate.constants import (  # noqa: F401
    AFF_EPS, CLICK_BIAS, CLICK_DURATION_SLOPE, CLICK_SLOPE, COMPLETION_BIAS, COMPLETION_CONC,
    COMPLETION_DURATION_SLOPE, COMPLETION_SLOPE, COUNTRIES, DAY, DEVICES, DURATION_REF, GENDERS, LANGUAGES,
    _GENERIC_WORDS,
)
from ytspark.generate.driver import (  # noqa: F401
    EPISODE, EVENTS_SCHEMA, INTEREST, INTEREST_START, POPULARITY, QUALITY, SERIES_ID, TRUTH_CONFIG, UP_NEXT,
    USER_INTEREST_SCHEMA, USERS_SCHEMA, VIDEO_TOPIC_SCHEMA, VIDEOS_SCHEMA, generate, truth_config,
)
from ytspark.generate.world import (  # noqa: F401
    _context, _theta_at, _user_profile, _width, _window, build_catalog, category_names, category_words, interest_at,
    true_affinity,
)

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
