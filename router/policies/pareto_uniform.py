"""PSML's default selection: uniformly at random among the Pareto-front models that meet both requirements.

Paper: "Pareto-Secure Machine Learning (PSML)", arXiv 2307.01292.
"""

from __future__ import annotations

import numpy as np

from ..requirements import Requirements, ZooModel, meets
from ..zoo_view import ZooView


class ParetoUniform:
    name = "pareto_uniform"

    def select(self, zoo: ZooView, req: Requirements, rng: np.random.Generator) -> ZooModel | None:
        feasible = [m for m in zoo.pareto if meets(m, req)]
        return feasible[int(rng.integers(len(feasible)))] if feasible else None
