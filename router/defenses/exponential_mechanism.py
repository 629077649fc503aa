"""Differentially private model selection with the exponential mechanism over the Pareto front.

Paper: McSherry & Talwar, "Mechanism Design via Differential Privacy", FOCS 2007; applied to model-zoo
selection in the PSML rework. Utility u(m) = -violation(m, request) in [-1, 0] (0 when m meets the request),
so its sensitivity is 1 and  P[m] = exp(eps * u(m) / 2) / sum_m' exp(eps * u(m') / 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError

from ..requirements import Requirements, ZooModel, violation
from ..zoo_view import ZooView

SENSITIVITY = 1.0


def utilities(zoo: ZooView, req: Requirements) -> np.ndarray:
    return np.array([-violation(m, req, zoo.accuracy_span, zoo.latency_span_ms) for m in zoo.pareto])


def exponential_probabilities(u: np.ndarray, epsilon: float) -> np.ndarray:
    w = np.exp(epsilon * (u - u.max()) / (2 * SENSITIVITY))  # shifted by max(u) for numerical stability
    return w / w.sum()


@dataclass(frozen=True)
class ExponentialMechanism:
    epsilon: float = 1.0
    name = "exponential_mechanism"

    def __post_init__(self):
        if not self.epsilon > 0:
            raise ConfigError(f"exponential_mechanism epsilon must be > 0, got {self.epsilon}")

    def probabilities(self, zoo: ZooView, req: Requirements) -> np.ndarray:
        return exponential_probabilities(utilities(zoo, req), self.epsilon)

    def select(self, zoo: ZooView, req: Requirements, rng: np.random.Generator) -> ZooModel:
        p = self.probabilities(zoo, req)
        return zoo.pareto[int(rng.choice(len(p), p=p))]
