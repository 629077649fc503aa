"""Selection policies, one per file. A policy returns the model for a query, or None when none qualifies."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from common.errors import ConfigError

from ..requirements import Requirements, ZooModel
from ..zoo_view import ZooView


class SelectionPolicy(Protocol):
    name: str

    def select(self, zoo: ZooView, req: Requirements, rng: np.random.Generator) -> ZooModel | None: ...


def make_policy(name: str) -> SelectionPolicy:
    from .fastest_feasible import FastestFeasible
    from .pareto_uniform import ParetoUniform

    policies = {ParetoUniform.name: ParetoUniform, FastestFeasible.name: FastestFeasible}
    if name not in policies:
        raise ConfigError(f"unknown selection policy {name!r}; choose from {', '.join(policies)}")
    return policies[name]()
