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
