"""Quantile normalisation: boundaries map to i/(n-1), values between them interpolate."""
import numpy as np
import pytest

from ytspark.prepare.quantiles import cdf, fit_quantiles


def test_boundaries_map_to_expected_values():
    b = [0.0, 1.0, 3.0, 10.0]
    assert cdf(np.array(b), b) == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert cdf(np.array([2.0, -5.0, 50.0]), b) == pytest.approx([0.5, 0.0, 1.0])


def test_degenerate_boundaries():
    assert list(cdf(np.array([1.0, 2.0]), [])) == [0.0, 0.0]
    assert list(cdf(np.array([1.0, 2.0]), [1.5])) == [0.0, 1.0]


@pytest.mark.spark
def test_fit_on_uniform_data(spark):
    df = spark.createDataFrame([(float(i),) for i in range(1001)], "x double")
    q = fit_quantiles(df, ["x"], n=11, rel_error=0.0)["x"]
    assert q == pytest.approx([100.0 * i for i in range(11)])
    assert cdf(np.array(q), q) == pytest.approx(np.linspace(0, 1, 11))
