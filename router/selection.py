"""From a query's requirements to one zoo model: requirement defenses, then the policy or a selection defense.

Every random stream (the policy's, each defense's) gets its own child of the router's seed, so changing one
defense's parameters never shifts another stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError

from .defenses import check_combination, is_requirement_defense, is_selection_defense
from .errors import NoModelMeetsRequirements
from .requirements import Requirements, ZooModel, violation
from .zoo_view import ZooView

NO_MODEL_BEHAVIOURS = ("reject", "closest")


@dataclass(frozen=True)
class Selection:
    model: ZooModel
    effective: Requirements  # the requirements after requirement defenses (what selection actually used)


class Selector:
    def __init__(self, zoo: ZooView, policy, defenses: list, on_no_model: str = "reject",
                 seed: int | np.random.SeedSequence = 0):
        if on_no_model not in NO_MODEL_BEHAVIOURS:
            raise ConfigError(f"on_no_model must be one of {', '.join(NO_MODEL_BEHAVIOURS)}, got {on_no_model!r}")
        check_combination(defenses)
        self.zoo, self.policy, self.on_no_model = zoo, policy, on_no_model
        root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        streams = root.spawn(1 + len(defenses))
        self.policy_rng = np.random.default_rng(streams[0])
        rngs = [np.random.default_rng(s) for s in streams[1:]]
        self.streams = list(zip(defenses, rngs))  # every defense with its own stream (output defenses use theirs)
        self.requirement_defenses = [(d, r) for d, r in self.streams if is_requirement_defense(d)]
        self.selection_defense = next(((d, r) for d, r in zip(defenses, rngs) if is_selection_defense(d)), None)

    def choose(self, req: Requirements) -> Selection:
        effective = req
        for d, rng in self.requirement_defenses:
            effective = d.perturb(effective, rng)
        if self.selection_defense is not None:
            d, rng = self.selection_defense
            return Selection(d.select(self.zoo, effective, rng), effective)
        model = self.policy.select(self.zoo, effective, self.policy_rng)
        if model is None and self.on_no_model == "closest":
            model = self.closest(effective)
        if model is None:
            raise NoModelMeetsRequirements(
                f"no model meets min_accuracy={req.min_accuracy} and max_latency_ms={req.max_latency_ms}; "
                "GET /v1/zoo lists the ranges this service offers",
                effective=effective)  # for the audit log only: the answer must not reveal the noise drawn
        return Selection(model, effective)

    def closest(self, req: Requirements) -> ZooModel:
        span_a, span_l = self.zoo.accuracy_span, self.zoo.latency_span_ms
        return min(self.zoo.models, key=lambda m: (violation(m, req, span_a, span_l), m.latency_ms))
