"""Output perturbation: Gaussian noise on the returned probabilities, clipped at 0 and renormalised.

With ``keep_top1`` (default) the row's largest noisy value is swapped onto the model's own top-1 class, so the
service's label never changes and benign users keep their accuracy; without it the label is the noisy argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError


@dataclass(frozen=True)
class OutputNoise:
    sigma: float = 0.05  # standard deviation, in probability units
    keep_top1: bool = True
    name = "output_noise"

    def __post_init__(self):
        if not self.sigma >= 0:
            raise ConfigError(f"output_noise sigma must be >= 0, got {self.sigma}")

    def perturb_output(self, probs: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        noisy = np.clip(probs + rng.normal(0.0, self.sigma, probs.shape), 0.0, None)
        rows = np.arange(len(probs))
        if self.keep_top1:
            top = noisy.argmax(1)
            held = noisy[rows, labels].copy()
            noisy[rows, labels] = noisy[rows, top]
            noisy[rows, top] = held
        sums = noisy.sum(1, keepdims=True)
        noisy = np.where(sums > 0, noisy / np.maximum(sums, 1e-12), 1.0 / probs.shape[1])
        out = noisy.astype(probs.dtype)
        return out, (labels if self.keep_top1 else out.argmax(1))
