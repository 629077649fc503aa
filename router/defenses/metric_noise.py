"""PSML's defense: noise added to the requested accuracy and latency before the router selects a model.

Paper: "Pareto-Secure Machine Learning (PSML)", arXiv 2307.01292, Sec. on the noise-based defense.
A fresh noise draw per request makes one specification reach different models, which breaks the attacker's
fingerprint; the price is that some benign queries are served by a model that misses their original needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError

from ..requirements import Requirements

DISTRIBUTIONS = ("gaussian", "laplace", "uniform")


@dataclass(frozen=True)
class MetricNoise:
    distribution: str = "laplace"
    accuracy_scale: float = 0.02  # std (gaussian), b (laplace) or half-width (uniform), in accuracy fraction
    latency_scale_ms: float = 0.2  # the same, in milliseconds
    name = "metric_noise"

    def __post_init__(self):
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(f"metric_noise distribution must be one of {', '.join(DISTRIBUTIONS)}, got {self.distribution!r}")
        if self.accuracy_scale < 0 or self.latency_scale_ms < 0:
            raise ConfigError("metric_noise scales must be >= 0 (0 leaves that metric untouched)")

    def _draw(self, rng: np.random.Generator, scale: float) -> float:
        if scale == 0:
            return 0.0
        if self.distribution == "gaussian":
            return float(rng.normal(0.0, scale))
        if self.distribution == "laplace":
            return float(rng.laplace(0.0, scale))
        return float(rng.uniform(-scale, scale))

    def perturb(self, req: Requirements, rng: np.random.Generator) -> Requirements:
        # Both draws happen on every request (even for an omitted metric) so the stream stays aligned per seed.
        d_acc, d_lat = self._draw(rng, self.accuracy_scale), self._draw(rng, self.latency_scale_ms)
        acc = None if req.min_accuracy is None else min(1.0, max(0.0, req.min_accuracy + d_acc))
        lat = None if req.max_latency_ms is None else max(1e-6, req.max_latency_ms + d_lat)
        return Requirements(acc, lat)
