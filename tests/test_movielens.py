"""Optional check on the real ml-latest-small (skipped when ../shared/data is absent)."""
import pytest
from helpers import make_config

from ytspark.movielens import read_movielens
from ytspark.prepare import run_prepare

pytestmark = [pytest.mark.spark, pytest.mark.movielens, pytest.mark.slow]


def test_prepare_counts_match_the_input(spark, ml_small, tmp_path):
    cfg = make_config()
    m = run_prepare(spark, cfg, read_movielens(spark, str(ml_small)), str(tmp_path / "ml"))
    ev = m["tables"]["events"]
    assert ev["input"] == 100_836 + 3_683
    assert ev["input"] == ev["accepted"] + ev["rejected"]
    assert m["events_by_type"]["watch"] == 100_836  # every rating became a watch
    assert m["events_by_type"]["search"] + ev["reasons"].get("duplicate_event", 0) == 3_683
    assert m["tables"]["videos"]["input"] == 9_742
    assert m["candidates"]["test"] == 610 and m["candidates"]["val"] == 610  # every user has >= 3 ratings


def test_burst_subset_collapses_each_session_to_its_first_second():
    """bench/dense_subset.py --bursts: a gap over the limit starts a session; a session takes its first
    timestamp; nothing else changes (hand-built log, two users)."""
    import importlib.util
    from pathlib import Path

    import pandas as pd

    spec = importlib.util.spec_from_file_location(
        "dense_subset", Path(__file__).resolve().parents[1] / "bench" / "dense_subset.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = pd.DataFrame({"userId": [1, 1, 1, 1, 2, 2], "movieId": [10, 11, 12, 13, 10, 14],
                      "rating": [4.0] * 6, "timestamp": [100, 150, 260, 5000, 120, 120 + 61]})
    got = mod.as_bursts(r, 60).sort_values(["userId", "movieId"])
    assert got["timestamp"].tolist() == [100, 100, 260, 5000, 120, 181]
    assert sorted(map(tuple, got[["userId", "movieId", "rating"]].to_numpy().tolist())) == \
        sorted(map(tuple, r[["userId", "movieId", "rating"]].to_numpy().tolist()))
