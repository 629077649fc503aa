"""The benign client population: what requirements and inputs a benign user sends (pure, seeded)."""

from __future__ import annotations

import numpy as np

from .config import LoadSettings


def benign_requirements(rng: np.random.Generator, zoo_info: dict, s: LoadSettings) -> tuple[float | None, float | None]:
    """min_accuracy uniform over the published accuracy range, max_latency_ms uniform over
    [published min, benign_latency_slack x published max]; each omitted with benign_unconstrained_share."""
    (a_lo, a_hi), (l_lo, l_hi) = zoo_info["accuracy_range"], zoo_info["latency_range_ms"]
    acc = None if rng.random() < s.benign_unconstrained_share else float(rng.uniform(a_lo, a_hi))
    lat = None if rng.random() < s.benign_unconstrained_share else float(rng.uniform(l_lo, s.benign_latency_slack * l_hi))
    return acc, lat


def benign_indices(rng: np.random.Generator, n_test: int, s: LoadSettings) -> np.ndarray:
    """Which test samples a benign batch holds (1..benign_max_batch of them): with them, their labels."""
    return rng.integers(0, n_test, int(rng.integers(1, s.benign_max_batch + 1)))


def benign_batch(rng: np.random.Generator, x_test: np.ndarray, s: LoadSettings) -> np.ndarray:
    """1..benign_max_batch real test samples."""
    return x_test[benign_indices(rng, len(x_test), s)]
