"""Defenses, one per file, combinable. Two kinds:

- requirement defenses change what the router believes the client asked for (``perturb``), before selection;
- selection defenses replace the policy's choice with a randomised one over the Pareto front (``select``).

A deployment lists any number of requirement defenses (applied in order) and at most one selection defense.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from psml.errors import ConfigError

from ..requirements import Requirements, ZooModel
from ..zoo_view import ZooView


class RequirementDefense(Protocol):
    name: str

    def perturb(self, req: Requirements, rng: np.random.Generator) -> Requirements: ...


class SelectionDefense(Protocol):
    name: str

    def select(self, zoo: ZooView, req: Requirements, rng: np.random.Generator) -> ZooModel: ...


def make_defense(spec: dict):
    """``spec``: {"name": ..., **parameters}. Unknown names or parameters raise ConfigError."""
    from .exponential_mechanism import ExponentialMechanism
    from .metric_noise import MetricNoise
    from .permute_and_flip import PermuteAndFlip

    kinds = {c.name: c for c in (MetricNoise, ExponentialMechanism, PermuteAndFlip)}
    params = dict(spec)
    name = params.pop("name", None)
    if name not in kinds:
        raise ConfigError(f"unknown defense {name!r}; choose from {', '.join(kinds)}")
    try:
        return kinds[name](**params)
    except TypeError as e:
        raise ConfigError(f"bad parameters for defense {name!r}: {e}") from e


def is_selection_defense(d) -> bool:
    return hasattr(d, "select")
