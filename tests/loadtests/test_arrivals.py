"""The Poisson schedule of the open loop (pure, seeded)."""

import numpy as np
import pytest
from scipy.stats import kstest

from loadtests.arrivals import poisson_send_times, split_schedule, stream_rng


def test_gaps_are_exponential_with_mean_one_over_the_rate():
    """Catches fixed gaps (constant pacing, Locust's constant_throughput) and uniform gaps of the right mean (the
    KS test against Exp(1/R) rejects both), a wrong mean gap, and a schedule cut short of its duration."""
    rate, duration = 200.0, 50.0
    t = poisson_send_times(rate, duration, stream_rng(0, 1))
    gaps = np.diff(np.concatenate([[0.0], t]))
    assert abs(gaps.mean() - 1 / rate) < 0.03 / rate  # 10,000 gaps: the mean within 3% (3 standard errors)
    assert kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > 0.01
    assert t[-1] < duration and t[-1] > duration - 0.1 and np.all(np.diff(t) > 0)
    fixed = np.full(len(gaps), 1 / rate)  # the plausible wrong mechanism: same rate, fixed gaps
    assert kstest(fixed, "expon", args=(0, 1 / rate)).pvalue < 1e-6
    uniform = np.random.default_rng(0).uniform(0, 2 / rate, len(gaps))  # same mean, wrong shape
    assert kstest(uniform, "expon", args=(0, 1 / rate)).pvalue < 1e-6


def test_the_schedule_is_seeded_and_split_streams_merge_into_the_rate():
    """Catches a schedule drawn from a global RNG (two runs differ), processes sharing one seed (identical
    streams: the merged rate would be N copies of one process's, not Poisson) and a split that does not divide
    the rate (N processes each at R would offer N x R)."""
    a, b = (poisson_send_times(50.0, 10.0, stream_rng(7, 1)) for _ in range(2))
    assert np.array_equal(a, b)
    parts = split_schedule(400.0, 20.0, seed=3, processes=4)
    assert not np.array_equal(parts[0][:50], parts[1][:50])
    merged = np.sort(np.concatenate(parts))
    assert abs(len(merged) / 20.0 - 400.0) < 400 * 0.04  # 8,000 expected: 4% is 3.5 standard deviations
    gaps = np.diff(merged)
    assert kstest(gaps, "expon", args=(0, 1 / 400.0)).pvalue > 0.01
    assert not np.array_equal(split_schedule(400.0, 20.0, 3, 4, trial=1)[0][:50], parts[0][:50])  # a trial's own draw


@pytest.mark.parametrize("rate, duration", [(0.0, 1.0), (-5.0, 1.0), (10.0, 0.0)])
def test_a_schedule_without_a_positive_rate_and_duration_is_refused(rate, duration):
    """Catches a zero rate turned into an infinite loop or a division by zero deep in the run."""
    with pytest.raises(ValueError, match="rate_per_s > 0"):
        poisson_send_times(rate, duration, stream_rng(0, 1))
