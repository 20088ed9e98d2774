"""The served score's calibration (ytspark.models.score_calibration): known answers, order, ties, honesty."""
from __future__ import annotations

import numpy as np
import pytest

from ytspark.models import score_calibration as C


def _world(seed: int, n: int, tie_step: float | None = None) -> dict[str, np.ndarray]:
    """Impressions with a known click probability p and mean watch time per click, like logged ones: most
    rarely clicked (mean p ~0.13, the lowest decile < 2%), E[T] = p x E[T | click] spanning ~3 orders of
    magnitude. The ranker's prediction is the odds the weighted logistic loss learns, E[T] / (1 - p), with
    noise; ``tie_step`` rounds its logit (many rows share one logit)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.3, n)
    p = 1.0 / (1.0 + np.exp(-(z - 2.3)))
    t_click = 60.0 * np.exp(0.5 * z)
    truth = p * t_click
    logit = np.log(truth / (1.0 - p)) + rng.normal(0.0, 0.25, n)
    if tie_step:
        logit = np.round(logit / tie_step) * tie_step
    clicked = rng.random(n) < p
    watch = np.where(clicked, rng.gamma(2.0, t_click / 2.0), 0.0)
    users = np.array([f"user-{i % (n // 4)}" for i in range(n)])
    return {"pred": np.exp(logit), "watch": watch, "truth": truth, "p": p, "users": users}


def _by_decile(pred: np.ndarray, *values: np.ndarray) -> list[list[float]]:
    """Means of each of ``values`` per decile of ``pred`` (lowest first)."""
    order = np.argsort(pred, kind="stable")
    return [[float(v[i].mean()) for v in values] for i in np.array_split(order, 10)]


@pytest.mark.parametrize("tie_step", [None, 0.25])
def test_served_score_tracks_expected_watch_time_within_25_percent_per_decile_on_held_out_users(tie_step):
    """Known answer: the map fitted on one half of the users turns the other half's odds into E[T] per
    impression within ±25% in every decile of the prediction, the rarely clicked lowest ones included, by the
    known E[T] and by the observed watch seconds; exp(logit) itself overstates the top deciles by > 25%."""
    w = _world(7, 120_000, tie_step)
    fold = C.user_fold(w["users"])
    fit, held = fold == 0, fold == 1
    assert 0.4 < fit.mean() < 0.6
    assert w["p"][np.argsort(w["pred"])[: len(w["p"]) // 10]].mean() < 0.02  # the lowest decile: rare clicks
    cal = C.fit(w["pred"][fit], w["watch"][fit])
    served = C.apply(cal, w["pred"][held])
    for d, (s, truth, obs) in enumerate(_by_decile(w["pred"][held], served, w["truth"][held], w["watch"][held])):
        assert abs(s / truth - 1) <= 0.25, (d, s, truth)
        assert abs(s / obs - 1) <= 0.25, (d, s, obs)
    raw = _by_decile(w["pred"][held], w["pred"][held], w["truth"][held])
    assert max(abs(s / t - 1) for s, t in raw) > 0.25  # it was off: the test can fail
    # the same check through the report's table (rows by the prediction's deciles, both columns)
    table = C.decile_table(w["pred"][held], served, w["watch"][held])
    assert [r[0] for r in table] == list(range(10)) and sum(r[3] for r in table) == held.sum()
    assert all(abs(r[6] - 1) <= 0.25 for r in table) and max(abs(r[7] - 1) for r in table) > 0.25


def test_cross_fit_scores_each_user_half_by_the_map_of_the_other():
    """Out of fold: a row's cross-fitted score does not move when its own watch seconds do, and equals the map
    fitted on the other half of the users; the cross-fitted table tracks E[T] within ±25% per decile."""
    w = _world(11, 60_000)
    cf = C.cross_fit(w["pred"], w["watch"], w["users"])
    fold = C.user_fold(w["users"])
    f0 = fold == 0
    np.testing.assert_allclose(cf[fold == 1], C.apply(C.fit(w["pred"][f0], w["watch"][f0], w["users"][f0]),
                                                      w["pred"][fold == 1]))
    moved = w["watch"].copy()
    moved[fold == 1] *= 3.0
    np.testing.assert_allclose(C.cross_fit(w["pred"], moved, w["users"])[fold == 1], cf[fold == 1])
    for d, (s, truth) in enumerate(_by_decile(w["pred"], cf, w["truth"])):
        assert abs(s / truth - 1) <= 0.25, (d, s, truth)
    # the map's settings travel: a map with other settings gives other out-of-fold scores
    other = C.cross_fit(w["pred"], w["watch"], w["users"], {"choice": C.ISOTONIC, "min_clicks": 900, "max_bins": 3})
    assert not np.allclose(other, cf)


def test_user_fold_is_a_stable_salted_hash_of_the_user_id():
    ids = ["a", "b", "c", "d", "u1", "u2", "a"]
    assert C.user_fold(ids).tolist() == [0, 0, 1, 1, 0, 0, 0]  # blake2b, 8 bytes little-endian, mod 2
    assert C.user_fold(ids, salt="select").tolist() == [1, 1, 0, 1, 0, 1, 1]
    many = [f"u{i}" for i in range(2000)]
    a, b = C.user_fold(many), C.user_fold(many, salt="select")
    assert 0.45 < a.mean() < 0.55 and 0.4 < ((a == 0) & (b == 0)).sum() / (a == 0).sum() < 0.6  # independent


@pytest.mark.parametrize("method", [*C.METHODS, "auto"])
def test_map_is_strictly_increasing_in_the_logit_so_the_order_is_kept(method):
    """Distinct logits -> distinct, increasingly ordered scores, also far beyond the fitted knots; so sorting by the
    served score is sorting by the ranker's own score (its criterion cannot change)."""
    w = _world(5, 20_000)
    cal = C.fit(w["pred"], w["watch"], w["users"], method=method)
    assert cal["method"] in C.METHODS and len(cal["x_logit"]) >= (5 if cal["method"] == C.ISOTONIC else 2)
    logits = np.linspace(-30.0, 30.0, 200_001)
    served = C.apply(cal, np.exp(logits))
    assert np.all(np.diff(served) > 0) and np.all(np.isfinite(served)) and served.min() > 0
    # beyond the last knot the score never grows faster than exp(logit) itself
    top = logits > cal["x_logit"][-1]
    assert np.all(np.diff(np.log(served[top])) <= np.diff(logits[top]) * (1 + 1e-9))
    rng = np.random.default_rng(0)
    pred = w["pred"][rng.permutation(len(w["pred"]))]
    np.testing.assert_array_equal(np.argsort(C.apply(cal, pred), kind="stable"), np.argsort(pred, kind="stable"))


def test_ties_and_pooled_bins_give_no_flat_runs_and_no_dependence_on_row_order():
    """Where the observed watch time does not rise with the logit (the lowest 40% of rows all clicked alike),
    pooling adjacent violators merges those bins into one knot, yet every distinct logit keeps its own score
    (no flat run whose decile cut would be arbitrary); many rows sharing each logit, the map does not depend on
    the order of the rows."""
    rng = np.random.default_rng(2)
    n = 40_000
    logit = np.round(rng.normal(0.0, 1.0, n), 2)  # ~600 distinct values, ~70 rows each
    flat = logit < np.quantile(logit, 0.4)
    p = np.where(flat, 0.05, 0.05 + 0.1 * (logit - logit[flat].max()))
    watch = np.where(rng.random(n) < np.clip(p, 0, 1), rng.gamma(2.0, 30.0, n), 0.0)
    cal = C.fit(np.exp(logit), watch, method=C.ISOTONIC)
    grid = np.unique(logit)
    served = C.apply(cal, np.exp(grid))
    assert np.all(np.diff(served) > 0)
    low = grid < logit[flat].max()
    # the pooled region stays nearly flat (the odds rise 15x across it), but strictly rising
    assert served[low].max() / served[low].min() < 2 and np.exp(grid[low].max() - grid[low].min()) > 10
    perm = rng.permutation(n)
    again = C.fit(np.exp(logit[perm]), watch[perm], method=C.ISOTONIC)
    np.testing.assert_allclose(again["x_logit"], cal["x_logit"], rtol=1e-9)
    np.testing.assert_allclose(again["y_watch_s"], cal["y_watch_s"], rtol=1e-9)
    # equal neighbouring means are pooled too (one knot each, so knots strictly increase); bins never split a tie
    assert C._pool_adjacent_violators(np.array([1.0, 1.0, 2.0, 1.5]), np.ones(4)) == [[0, 1], [2, 3]]
    assert len(C._bins(np.array([0.0, 0, 0, 1, 1, 2, 2, 2]), np.ones(8, np.int64), 2, 1)) == 3


def test_auto_keeps_the_method_with_the_lower_cross_fitted_deviance():
    """``method="auto"`` (the export's) fits both maps on each half of the users, scores the other half, and keeps
    the lower Poisson deviance: the two-parameter law where E[T] is a power of the odds and data are few, the
    isotonic map where E[T] has a kink no power law follows."""
    rng = np.random.default_rng(4)
    n = 20_000
    logit = rng.normal(1.0, 1.5, n)
    users = np.array([f"user-{i % 5000}" for i in range(n)])

    def watched(e_t):
        p = np.clip(e_t / 150.0, 0, 1)  # clicks with mean watch 150 s
        return np.where(rng.random(n) < p, rng.gamma(2.0, 75.0, n), 0.0)

    power = C.fit(np.exp(logit), watched(0.5 * np.exp(0.7 * logit)), users)
    assert power["method"] == C.POWER and power["choice"] == "auto"
    assert power["cv_deviance"][C.POWER] < power["cv_deviance"][C.ISOTONIC]
    assert power["slope_below"] == power["slope_above"] == pytest.approx(0.7, abs=0.1)
    kink = C.fit(np.exp(logit), watched(np.where(logit < 1.5, 1.0, 1.0 + 20.0 * (logit - 1.5))), users)
    assert kink["method"] == C.ISOTONIC and kink["cv_deviance"][C.ISOTONIC] < kink["cv_deviance"][C.POWER]
    with pytest.raises(ValueError, match="method"):
        C.fit([1.0], [1.0], method="spline")


def test_apply_edge_cases_and_older_maps():
    cal = C.fit(np.exp(np.linspace(-2, 2, 400)), np.r_[np.zeros(200), np.full(200, 10.0)])
    out = C.apply(cal, np.array([-np.inf, 0.0, 1.0], np.float32))
    assert out.dtype == np.float32 and out[0] == -np.inf and out[1] == 0.0 and out[2] > 0
    pred = np.array([0.5, 2.0, 7.0])
    assert C.apply(None, pred).tolist() == pred.tolist()  # rankers exported before calibration: the raw score
    none_watched = C.fit(pred, np.zeros(3))
    assert none_watched["x_logit"] == [] and C.apply(none_watched, pred).tolist() == pred.tolist()
    # an older ranker's MODEL.json map (binned isotonic, linear in seconds, flat ends) applies as it was written
    old = {"method": "binned-isotonic", "x_log_pred": [-3.0, 0.0, 3.0], "y_watch_s": [2.0, 20.0, 50.0], "n": 1}
    np.testing.assert_allclose(C.apply(old, np.exp([-5.0, -1.5, 0.0, 1.5, 9.0])), [2.0, 11.0, 20.0, 35.0, 50.0])
    with pytest.raises(ValueError, match="pred_watch and watch_seconds"):
        C.fit([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="min_clicks"):
        C.fit([1.0], [1.0], min_clicks=0)


def test_power_law_on_few_rows_whose_watches_sit_at_the_top_clips_the_slope_instead_of_failing():
    """A handful of held-out users (a small ``ranker.calibration_share``): the only watched row has the highest
    logit, so the Poisson slope runs off to infinity and Newton's Hessian turns singular. The fit keeps the
    largest slope the map allows (1: the score grows like the odds) and still matches the mean."""
    x = np.array([0.0, 1.0, 2.0])
    cal = C.fit(np.exp(x), [0.0, 0.0, 5.0], method=C.POWER)
    assert cal["slope_below"] == cal["slope_above"] == 1.0
    served = C.apply(cal, np.exp(x))
    assert served.mean() == pytest.approx(5.0 / 3.0) and np.all(np.diff(served) > 0)
    assert C.fit(np.exp(x), [0.0, 0.0, 5.0], ["a", "b", "c"])["n_clicked"] == 1  # auto: both methods tried
