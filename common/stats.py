"""Statistics over recorded measurements: pure functions, no I/O."""

from __future__ import annotations

import numpy as np

PERCENTILES = (50, 95, 99)


def percentile_summary(latencies_ms) -> dict[str, float]:
    a = np.asarray(latencies_ms, dtype=float)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(np.mean(a)),
    }


def bootstrap_percentile_ci(values, percentiles=PERCENTILES, resamples: int = 1000, seed: int = 0,
                            level: float = 0.95) -> dict[str, list[float]]:
    """Percentile-bootstrap confidence intervals of latency percentiles: ``{"p99_ms": [lo, hi], ...}``.

    Resamples the recorded per-request times with replacement (its own seeded stream); an interval, not the
    point estimate, is what says whether two latencies differ on a noisy machine."""
    a = np.asarray(values, dtype=float)
    if len(a) == 0:
        raise ValueError("cannot bootstrap an empty sample: no request was measured")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(resamples, len(a)))
    stats = np.percentile(a[idx], percentiles, axis=1)  # [len(percentiles), resamples]
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail], axis=1)
    return {f"p{q}_ms": [float(l), float(h)] for q, l, h in zip(percentiles, lo, hi)}


def latency_summary(latencies_ms, resamples: int = 1000, seed: int = 0) -> dict:
    """Percentiles, mean and their bootstrap 95% intervals from exact per-request times (ms)."""
    return percentile_summary(latencies_ms) | {"ci95": bootstrap_percentile_ci(latencies_ms, resamples=resamples, seed=seed)}


def mean_and_std(values) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def seed_summary(values) -> tuple[float | None, float | None, tuple[float, float] | None]:
    """(mean, standard deviation, 95% interval) over seeds: None where there is nothing to compute (no value;
    fewer than two values for the interval)."""
    if not len(values):
        return None, None, None
    mean, sd = mean_and_std(values)
    return mean, sd, (mean_ci95(values)[1:] if len(values) > 1 else None)


def mean_ci95(values) -> tuple[float, float, float]:
    """(mean, low, high): Student-t 95% interval of the mean over seeds (n < 2: the mean itself)."""
    a = np.asarray(values, dtype=float)
    m = float(a.mean())
    if len(a) < 2:
        return m, m, m
    from scipy.stats import t

    half = float(t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)))
    return m, m - half, m + half
