"""INFaaS-style selection: the fastest model that meets both requirements (deterministic).

Paper: Romero et al., "INFaaS: Automated Model-less Inference Serving", USENIX ATC 2021.
"""

from __future__ import annotations

import numpy as np

from ..requirements import Requirements, ZooModel, meets
from ..zoo_view import ZooView


class FastestFeasible:
    name = "fastest_feasible"

    def select(self, zoo: ZooView, req: Requirements, rng: np.random.Generator) -> ZooModel | None:
        feasible = [m for m in zoo.models if meets(m, req)]
        return min(feasible, key=lambda m: (m.latency_ms, -m.accuracy)) if feasible else None
