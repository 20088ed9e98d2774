"""Shared fixtures: one local[2] SparkSession for the whole suite, small shuffles, temp dirs."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ML_SMALL = ROOT.parent / "shared" / "data" / "ml-latest-small"


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    local_dir = tmp_path_factory.mktemp("spark-local")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("ytspark-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.local.dir", str(local_dir))
        .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("spark-warehouse")))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "3g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def ml_small() -> Path:
    if not (ML_SMALL / "ratings.csv").exists():
        pytest.skip(f"MovieLens not found at {ML_SMALL}")
    return ML_SMALL


# Marks from what a test uses, so that `-m` selections are right without hand-kept decorators:
# spark (any test that gets the session fixture, directly or through another fixture), cluster
# (test_cluster.py: a standalone master and workers), fuzz (test_fuzz.py); horovod, slow and movielens
# stay explicit.
_FILE_MARKS = {"test_cluster.py": "cluster", "test_fuzz.py": "fuzz"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)
        mark = _FILE_MARKS.get(item.path.name)
        if mark:
            item.add_marker(getattr(pytest.mark, mark))


# The scoring world (tests/score_world.py): built once per session, shared by test_score*.py,
# test_evaluate_world.py and test_ranker_world.py.
@pytest.fixture(scope="session")
def world(spark, tmp_path_factory):
    from score_world import make_world

    return make_world(spark, tmp_path_factory.mktemp("score"))


@pytest.fixture(scope="session")
def scored(spark, world):
    from score_world import make_scored

    return make_scored(spark, world)


@pytest.fixture(scope="session")
def fused(world):
    from score_world import make_fused

    return make_fused(world)
