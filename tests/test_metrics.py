import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattserve.metrics.power_series import binned_average, integrate
from wattserve.results.histogram import LogHistogram
from wattserve.results.suffix_max import SuffixMax


def test_histogram_quantiles_match_numpy() -> None:
    rng = np.random.default_rng(0)
    v = rng.lognormal(-4, 0.6, 50_000)
    h = LogHistogram()
    for x in v:
        h.add(float(x))
    assert h.mean == pytest.approx(v.mean(), rel=1e-9)
    for q in (0.5, 0.9, 0.99):
        assert h.quantile(q) == pytest.approx(np.quantile(v, q), rel=0.011)


def test_histogram_linear_runs_match_explicit_values() -> None:
    h1, h2 = LogHistogram(), LogHistogram()
    first, last, k, w = 0.006, 0.009, 400, 7
    h1.add_linear(first, last, k, w)
    for x in np.linspace(first, last, k):
        h2.add(float(x), w)
    assert h1.mean == pytest.approx(h2.mean, rel=1e-9)
    for q in (0.1, 0.5, 0.95):
        assert h1.quantile(q) == pytest.approx(h2.quantile(q), rel=0.012)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 100), min_size=1, max_size=60), st.data())
def test_suffix_max_matches_brute_force(values: list[float], data: st.DataObject) -> None:
    sm = SuffixMax()
    for i, v in enumerate(values):
        sm.append(i + 1, v)
    k = data.draw(st.integers(0, len(values)))
    expect = max(values[k:], default=0.0)
    assert sm.query(k) == expect


def test_power_integration_and_bins() -> None:
    t = np.array([0.0, 1.0, 3.0])
    w = np.array([100.0, 300.0, 50.0])
    assert integrate(t, w, 4.0) == pytest.approx(100 + 600 + 50)
    centers, avg = binned_average(t, w, 4.0, 4)
    np.testing.assert_allclose(avg, [100, 300, 300, 50])
    assert centers[0] == pytest.approx(0.5)


def test_step_sum_applies_simultaneous_changes_together() -> None:
    from wattserve.metrics.power_series import step_sum

    t, s = step_sum([([0.0, 1.0], [100.0, 300.0]), ([0.0, 1.0, 2.0], [200.0, 50.0, 80.0])])
    np.testing.assert_allclose(t, [0.0, 1.0, 2.0])
    np.testing.assert_allclose(s, [300.0, 350.0, 380.0])
