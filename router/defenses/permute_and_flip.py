"""Differentially private model selection with permute-and-flip over the Pareto front.

Paper: McKenna & Sheldon, "Permute-and-Flip: A new mechanism for differentially private selection",
NeurIPS 2020. Visit candidates in a random order; accept candidate m with probability
exp(eps * (u(m) - u*) / 2), u* = max utility; the first accepted is returned (one with u = u* always is).
Same utility and sensitivity as exponential_mechanism.py; never worse in expected utility.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError

from ..requirements import Requirements, ZooModel
from ..zoo_view import ZooView
from .exponential_mechanism import SENSITIVITY, utilities


@dataclass(frozen=True)
class PermuteAndFlip:
    epsilon: float = 1.0
    name = "permute_and_flip"

    def __post_init__(self):
        if not self.epsilon > 0:
            raise ConfigError(f"permute_and_flip epsilon must be > 0, got {self.epsilon}")

    def select(self, zoo: ZooView, req: Requirements, rng: np.random.Generator) -> ZooModel:
        u = utilities(zoo, req)
        accept = np.exp(self.epsilon * (u - u.max()) / (2 * SENSITIVITY))
        for i in rng.permutation(len(u)):
            if rng.random() < accept[i]:
                return zoo.pareto[int(i)]
        return zoo.pareto[int(np.argmax(u))]  # not reached: a maximal-utility candidate is always accepted
