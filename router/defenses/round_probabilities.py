"""Output perturbation: round the returned probabilities to a few decimals.

Deployed by MLaaS APIs (e.g. Tramer et al., "Stealing Machine Learning Models via Prediction APIs", USENIX
Security 2016, studied rounding as a countermeasure). The top-1 label the service returns is unchanged; the
attacker loses the low-order information a soft-label Knockoff trains on, and the exact-output signature that
tells zoo models apart blurs (two models may now answer a probe identically).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError


@dataclass(frozen=True)
class RoundProbabilities:
    decimals: int = 2
    name = "round_probabilities"

    def __post_init__(self):
        if not isinstance(self.decimals, int) or isinstance(self.decimals, bool) or not 0 <= self.decimals <= 8:
            raise ConfigError(f"round_probabilities decimals must be an integer in [0, 8], got {self.decimals!r}")

    def perturb_output(self, probs: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        # Not renormalised: a rounded vector is what such APIs return; labels stay the model's own top-1.
        return np.round(probs, self.decimals), labels
