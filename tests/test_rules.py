"""Serving rules (ytspark/score/rules.py) on hand-built candidates, against a plain Python reference.

The reference walks each user's ranked candidates and keeps a video unless a
rule strikes it, charging the first rule that does (exclusion, then video
age, then the channel cap), until N are kept: the removals it counts are the
ones the manifest reports.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ytspark.score.fallback import PopularLists
from ytspark.score.rules import RULES, ServingRules

V = 40


def reference(cands, country, n, rules: ServingRules):
    blocked = set(np.flatnonzero(rules.blocked))
    by_country = {(int(k) // V, int(k) % V) for k in rules.country_keys}
    aged = set(np.flatnonzero(rules.too_old_or_young))
    kept, removed = [], Counter()
    per_channel = Counter()
    for v in cands:
        if len(kept) == n:
            break
        if v < 2:
            continue
        if v in blocked or (country, v) in by_country:
            removed["excluded"] += 1
            continue
        if v in aged:
            removed["video_age"] += 1
            continue
        ch = -1 if rules.channel is None else int(rules.channel[v])
        if rules.max_per_channel and ch >= 0 and per_channel[ch] >= rules.max_per_channel:
            removed["channel_cap"] += 1
            continue
        per_channel[ch] += 1
        kept.append(int(v))
    return kept, removed


def _rules(rng, max_per_channel=2, country_pairs=30, channels=6):
    blocked = rng.random(V) < 0.1
    aged = rng.random(V) < 0.1
    keys = np.unique(rng.integers(2, 5, country_pairs) * V + rng.integers(2, V, country_pairs))
    channel = rng.integers(-1, channels, V)  # -1: a video without a channel, never capped
    return ServingRules(n_videos=V, blocked=blocked, too_old_or_young=aged, country_keys=keys,
                        channel=channel, max_per_channel=max_per_channel)


def _candidates(rng, B, K):
    cand = np.stack([rng.permutation(np.arange(2, V))[:K] for _ in range(B)])
    short = rng.random(B) < 0.2  # some users have fewer than K candidates: -1 slots at the end
    cand[short, K - 3:] = -1
    return cand


@pytest.mark.parametrize("seed,cap", [(0, 2), (1, 1), (2, 0), (3, 3)])
def test_rules_keep_what_the_reference_keeps_and_count_its_removals(seed, cap):
    rng = np.random.default_rng(seed)
    rules = _rules(rng, max_per_channel=cap)
    B, K, n = 64, 25, 8
    cand, country = _candidates(rng, B, K), rng.integers(1, 6, B)
    keep, removed, struck = rules.apply(cand, country, n)
    total = Counter()
    for b in range(B):
        want, rem = reference(list(cand[b]), int(country[b]), n, rules)
        assert list(cand[b][keep[b]]) == want, b
        total += rem
    assert removed == {r: total.get(r, 0) for r in RULES}
    assert sum(total.values()) > 20  # the rules had work to do
    assert all(struck[r] >= removed[r] for r in RULES)


def test_excluded_never_appear_the_channel_cap_holds_and_n_is_filled():
    rng = np.random.default_rng(7)
    rules = _rules(rng, max_per_channel=1, channels=30)
    cand = np.stack([rng.permutation(np.arange(2, V)) for _ in range(50)])  # every video a candidate
    country = rng.integers(2, 5, 50)
    keep, removed, _ = rules.apply(cand, country, 5)
    for b in range(50):
        got = cand[b][keep[b]]
        assert len(got) == 5  # enough allowed candidates exist, so N is filled
        assert not rules.blocked[got].any() and not rules.too_old_or_young[got].any()
        assert not np.isin(country[b] * V + got, rules.country_keys).any()
        ch = rules.channel[got]
        assert np.bincount(ch[ch >= 0]).max(initial=0) <= 1
        # and kept in the original order
        pos = {v: i for i, v in enumerate(cand[b])}
        assert [pos[v] for v in got] == sorted(pos[v] for v in got)
    assert removed["excluded"] > 0 and removed["channel_cap"] > 0


def test_a_country_exclusion_applies_to_that_country_only():
    rules = ServingRules(n_videos=V, blocked=np.zeros(V, bool), too_old_or_young=np.zeros(V, bool),
                         country_keys=np.array([3 * V + 5]))
    cand = np.array([[5, 6, 7], [5, 6, 7]])
    keep, removed, _ = rules.apply(cand, np.array([3, 4]), 2)
    assert cand[0][keep[0]].tolist() == [6, 7] and cand[1][keep[1]].tolist() == [5, 6]
    assert removed["excluded"] == 1


def test_popular_lists_go_through_the_rules():
    rng = np.random.default_rng(3)
    rules = _rules(rng, max_per_channel=1, channels=10)
    global_ids = rng.permutation(np.arange(2, V)).astype(np.int64)
    lists = PopularLists(global_ids=global_ids, global_counts=np.arange(V - 2, 0, -1, dtype=np.float32),
                         groups={(3, 2): (global_ids[::-1][:6].copy(), np.arange(6, 0, -1, dtype=np.float32))})
    seen = global_ids[:3]
    ids, _, sources = lists.recommend(3, 2, seen, 6, rules)
    order = [v for v in [*global_ids[::-1][:6], *global_ids] if v not in set(seen)]
    order = list(dict.fromkeys(order))  # a video once, where it first appears
    want, rem = reference(order, 3, 6, rules)
    assert ids.tolist() == want and len(want) == 6
    assert sources[:1] == ["demographic"]
    assert lists.removed == {r: rem.get(r, 0) for r in RULES}
    # without rules: the plain order
    plain, _, _ = PopularLists(global_ids, lists.global_counts, lists.groups).recommend(3, 2, seen, 6)
    assert plain.tolist() == order[:6]
