"""The suite's marks: a test that gets the Spark session (directly or through another fixture) is marked spark,
so ``-m "not spark"`` never starts a JVM (tests/conftest.py applies the mark from the fixtures a test uses)."""
from __future__ import annotations


def test_every_test_that_uses_spark_carries_the_spark_mark(request):
    items = request.session.items
    unmarked = [i.nodeid for i in items
                if "spark" in getattr(i, "fixturenames", ()) and i.get_closest_marker("spark") is None]
    assert not unmarked, f"tests that use the spark fixture without the spark mark: {unmarked}"


def test_the_marks_used_are_registered(request):
    registered = {m.split(":")[0].strip() for m in request.config.getini("markers")}
    assert {"spark", "slow", "horovod", "movielens", "cluster", "fuzz"} <= registered
