"""Scripts of bench/ that other checks rely on (no Spark): known answers on hand-built logs and worlds."""
import importlib.util
from pathlib import Path

import pandas as pd


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_burst_subset_collapses_each_session_to_its_first_second():
    """bench/dense_subset.py --bursts: a gap over the limit starts a session; a session takes its first
    timestamp; nothing else changes (hand-built log, two users)."""
    r = pd.DataFrame({"userId": [1, 1, 1, 1, 2, 2], "movieId": [10, 11, 12, 13, 10, 14],
                      "rating": [4.0] * 6, "timestamp": [100, 150, 260, 5000, 120, 120 + 61]})
    got = _bench("dense_subset").as_bursts(r, 60).sort_values(["userId", "movieId"])
    assert got["timestamp"].tolist() == [100, 100, 260, 5000, 120, 181]
    assert sorted(map(tuple, got[["userId", "movieId", "rating"]].to_numpy().tolist())) == \
        sorted(map(tuple, r[["userId", "movieId", "rating"]].to_numpy().tolist()))


def test_markov_check_follows_the_last_watch():
    """Three users watch 1 -> 2 -> 3 (3 held out): the chain recommends 3 after 2 at rank 1. A fourth user's
    input ends on 3, never followed: popularity fills the list, and the held-out 9 (never in the input, so
    never recommended) is a miss. HR@10 = 3/4, NDCG@10 = 3/4 (every hit at rank 1)."""
    rows = [(u, m, t) for u in (1, 2, 3) for m, t in ((1, 10), (2, 20), (3, 30))]
    rows += [(4, 2, 10), (4, 3, 20), (4, 9, 30)]
    r = pd.DataFrame(rows, columns=["userId", "movieId", "timestamp"])
    got = _bench("dense_subset").markov_check(r)
    assert got == {"markov_hr@10": 0.75, "markov_ndcg@10": 0.75}


def test_markov_check_ranks_the_follower_above_more_popular_videos():
    """As above, plus two users of 20 -> 21 -> 22 (22 held out), so 20 and 21 are more popular than 3 in the
    input: at k = 1 the chain still puts 3 first after 2 (a popularity list would put 20 there). Hits: users
    1-3; misses: user 4 (9 unseen), users 5 and 6 (22 unseen). HR@1 = NDCG@1 = 3/6."""
    rows = [(u, m, t) for u in (1, 2, 3) for m, t in ((1, 10), (2, 20), (3, 30))]
    rows += [(4, 2, 10), (4, 3, 20), (4, 9, 30)]
    rows += [(u, m, t) for u in (5, 6) for m, t in ((20, 10), (21, 20), (22, 30))]
    r = pd.DataFrame(rows, columns=["userId", "movieId", "timestamp"])
    assert _bench("dense_subset").markov_check(r, k=1) == {"markov_hr@1": 0.5, "markov_ndcg@1": 0.5}


def test_nightly_floor_counts_the_rankers_serving_path_and_the_sequence_encoders_positions(tmp_path, monkeypatch):
    """bench/nightly.py's compute floor: the ranker's FLOPs per pair as serving computes them (a failure there
    used to fall back silently to another count), and the sequence encoder's tower at every history position."""
    import argparse

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))  # its `import results`
    nightly = _bench("nightly")
    towers = {}
    for encoder in ("bag", "sequence"):
        args = argparse.Namespace(watches=5.0, impressions=5.0, covisit_weight=1.0, dim=16, encoder=encoder)
        w = nightly.make_world(tmp_path / encoder, 200, 100, args, seed=3)
        f = nightly.flops_per_user(w["model"], w["ranker"], 20)
        pair = f["ranker_pair"]
        assert "serving_error" not in pair and pair["serving"] == 2 * pair["serving_macs"]["factorised"] > 0
        assert f["per_user"]["serving"] == f["user_tower"] + f["search"] + 20 * pair["serving"]
        towers[encoder] = f["user_tower"]
    assert towers["sequence"] > 50 * towers["bag"]  # 50 positions of attention layers against one tower pass
