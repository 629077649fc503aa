"""Statistics over recorded measurements: pure functions, no I/O."""

from __future__ import annotations

import numpy as np


def percentile_summary(latencies_ms) -> dict[str, float]:
    a = np.asarray(latencies_ms, dtype=float)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(np.mean(a)),
    }


def mean_and_std(values) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0
