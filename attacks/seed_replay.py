"""Replaying a router's seed: predict, before sending, which zoo model will answer each request.

A router's selection (pareto_uniform, metric noise, DP selection) is only as random as its seed. With a
constant default seed (psml's routers used 0), the public code run with that seed replays the router's draws:
an attacker that knows the zoo's front (fingerprinting gives it) and is the router's first client since start
predicts the model for every one of its requests, so randomised selection protects nothing; it can keep only
the requests that go to its victim, or time its requests to land on it. Measured on the default zoo with seed
0: the model chosen for 60 of 60 requests predicted. Against a router seeded from OS entropy the prediction is
right at chance (1 / front size).

Mechanism: the router's Selector seeded from SeedSequence(seed) (one worker, no restart) is rebuilt here with
the guessed seed and asked the same requirements in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError
from router.defenses import make_defense
from router.errors import NoModelMeetsRequirements
from router.policies import make_policy
from router.requirements import Requirements
from router.selection import Selector
from router.zoo_view import ZooView


@dataclass(frozen=True)
class SeedReplaySettings:
    guessed_seed: int = 0  # the default a deployment may have kept (psml's routers: 0)
    policy: str = "pareto_uniform"  # the public configuration the attacker assumes
    defenses: tuple[dict, ...] = ()
    on_no_model: str = "reject"

    def __post_init__(self):
        if self.guessed_seed < 0:
            raise ConfigError(f"guessed_seed must be >= 0 (a SeedSequence entropy), got {self.guessed_seed}")


def predicted_models(zoo: ZooView, requests: list[Requirements], s: SeedReplaySettings) -> list[str | None]:
    """The model the router would choose for each request in turn (None: it would find none), if it was
    seeded with ``s.guessed_seed`` and these are the first requests since it started."""
    selector = Selector(zoo, make_policy(s.policy), [make_defense(d) for d in s.defenses], s.on_no_model,
                        np.random.SeedSequence(s.guessed_seed))
    out = []
    for req in requests:
        try:
            out.append(selector.choose(req).model.name)
        except NoModelMeetsRequirements:  # the router would answer 422
            out.append(None)
    return out


def prediction_share(predicted: list[str | None], served: list[str | None]) -> float:
    """The share of requests whose serving model was predicted (served from the audit log, in order)."""
    if len(predicted) != len(served) or not served:
        raise ConfigError(f"{len(predicted)} predictions for {len(served)} served requests")
    return sum(p == m for p, m in zip(predicted, served)) / len(served)
