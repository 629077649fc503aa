"""Output perturbation: return only the k largest probabilities, renormalised to sum to 1; the rest are 0.

A common API option (top-k classes). k = 1 is the labels-only answer. Batch-correct: each row keeps its own k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError


@dataclass(frozen=True)
class TopK:
    k: int = 3
    name = "top_k"

    def __post_init__(self):
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ConfigError(f"top_k k must be an integer >= 1, got {self.k!r}")

    def check_zoo(self, zoo) -> None:
        if self.k > zoo.n_classes:
            raise ConfigError(f"top_k k={self.k} exceeds the zoo's {zoo.n_classes} classes")

    def perturb_output(self, probs: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        keep = np.argpartition(-probs, self.k - 1, axis=1)[:, : self.k]
        out = np.zeros_like(probs)
        rows = np.arange(len(probs))[:, None]
        out[rows, keep] = probs[rows, keep]
        out /= np.maximum(out.sum(1, keepdims=True), 1e-12)
        return out, labels
