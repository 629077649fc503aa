"""Output perturbation for encoder zoos: Gaussian noise on the returned embeddings.

The noise is relative to each row's scale: std = ``sigma`` x ||e|| / sqrt(E), so ``sigma`` is a signal-to-noise
knob that means the same for any encoder (0.1: noise a tenth of a typical coordinate's magnitude).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError


@dataclass(frozen=True)
class EmbeddingNoise:
    sigma: float = 0.1  # relative to the row's root-mean-square coordinate
    name = "embedding_noise"
    for_embeddings = True  # an encoder zoo's output defense (refused on classifier zoos)

    def __post_init__(self):
        if not self.sigma >= 0:
            raise ConfigError(f"embedding_noise sigma must be >= 0, got {self.sigma}")

    def perturb_output(self, emb: np.ndarray, labels, rng: np.random.Generator):
        rms = np.linalg.norm(emb, axis=1, keepdims=True) / np.sqrt(emb.shape[1])
        return (emb + self.sigma * rms * rng.standard_normal(emb.shape)).astype(emb.dtype), labels
