"""common/stats.py directly: the figures every benchmark and the report print come from here."""

import numpy as np
import pytest

from common.stats import bootstrap_percentile_ci, latency_summary, mean_ci95, percentile_summary, seed_summary


def test_percentiles_are_of_the_exact_times_not_of_rounded_or_binned_ones():
    """1..100 ms: numpy's linear interpolation gives p99 = 99.01 exactly. Catches Locust-style bins (which give
    99 or 100) and a p99 taken as the maximum."""
    s = percentile_summary(np.arange(1, 101))
    assert s == {"p50_ms": 50.5, "p95_ms": pytest.approx(95.05), "p99_ms": pytest.approx(99.01), "mean_ms": 50.5}


def test_bootstrap_interval_covers_its_estimate_narrows_with_samples_and_replays_by_seed():
    """Catches an interval that ignores the sample size (same width for 100 and 10,000 times), one around the
    wrong percentile, and an unseeded resampler."""
    rng = np.random.default_rng(0)
    small, large = rng.exponential(2.0, 100), rng.exponential(2.0, 10_000)
    ci_small, ci_large = bootstrap_percentile_ci(small)["p99_ms"], bootstrap_percentile_ci(large)["p99_ms"]
    assert ci_small[0] <= np.percentile(small, 99) <= ci_small[1]
    assert ci_large[0] <= np.percentile(large, 99) <= ci_large[1]
    assert ci_large[1] - ci_large[0] < (ci_small[1] - ci_small[0]) / 3
    true_p99 = -2.0 * np.log(0.01)  # exponential quantile: 9.21 ms
    assert ci_large[0] < true_p99 * 1.1 and ci_large[1] > true_p99 * 0.9
    assert bootstrap_percentile_ci(small, seed=3) == bootstrap_percentile_ci(small, seed=3)
    with pytest.raises(ValueError, match="empty"):
        bootstrap_percentile_ci([])
    assert set(latency_summary(small)["ci95"]) == {"p50_ms", "p95_ms", "p99_ms"}


def test_mean_interval_is_student_t_over_seeds():
    """Three seeds 1, 2, 3: mean 2, sd 1, half-width t(0.975, 2) / sqrt(3) = 4.303 / 1.732 = 2.484. Catches a
    normal (z = 1.96) interval, which is far too narrow over three seeds, and a population sd (ddof 0)."""
    m, lo, hi = mean_ci95([1.0, 2.0, 3.0])
    assert m == 2.0 and hi - m == pytest.approx(2.4841, abs=1e-3) and m - lo == pytest.approx(hi - m)
    assert mean_ci95([5.0]) == (5.0, 5.0, 5.0)
    assert seed_summary([]) == (None, None, None)
    mean, sd, ci = seed_summary([1.0, 2.0, 3.0])
    assert (mean, sd) == (2.0, 1.0) and ci[0] == pytest.approx(lo)
    assert seed_summary([4.0])[2] is None  # one seed: no interval, never a zero-width one
