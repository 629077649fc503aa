"""Output perturbation: reverse sigmoid (Lee et al., "Defending Against NN Model Stealing Attacks Using
Deceptive Perturbations", IEEE S&P Workshops 2019).

Each probability y is moved by  beta * (sigmoid(gamma * logit(y)) - 1/2)  against its own direction, then the
row is clipped to [0, 1] and renormalised:  y' = normalise(y - beta * (sigmoid(gamma * logit(y)) - 1/2)).
The perturbation is largest where the logit is large, which is what a surrogate trained on probabilities
learns from; beta sets its size, gamma its shape. For large beta the top-1 label can change: the service still
returns the model's own label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError

EPS = 1e-7  # keeps logit(y) finite at y = 0 or 1


@dataclass(frozen=True)
class ReverseSigmoid:
    beta: float = 0.5
    gamma: float = 1.0
    name = "reverse_sigmoid"

    def __post_init__(self):
        if not self.beta > 0:
            raise ConfigError(f"reverse_sigmoid beta must be > 0, got {self.beta}")
        if not self.gamma > 0:
            raise ConfigError(f"reverse_sigmoid gamma must be > 0, got {self.gamma}")

    def perturb_output(self, probs: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        y = np.clip(probs.astype(np.float64), EPS, 1 - EPS)
        logit = np.log(y) - np.log1p(-y)
        r = 1.0 / (1.0 + np.exp(-self.gamma * logit)) - 0.5
        out = np.clip(y - self.beta * r, 0.0, 1.0)
        sums = out.sum(1, keepdims=True)
        # a row clipped to all zeros (only for extreme beta) falls back to uniform rather than dividing by 0
        out = np.where(sums > 0, out / np.maximum(sums, 1e-12), 1.0 / probs.shape[1])
        return out.astype(probs.dtype), labels
