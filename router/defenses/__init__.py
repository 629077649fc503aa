"""Defenses, one per file, combinable. Five kinds, told apart by the method they implement:

- requirement defenses change what the router believes the client asked for (``perturb``), before selection;
- selection defenses replace the policy's choice with a randomised one over the Pareto front (``select``);
- output defenses change the probabilities (and possibly labels) the router returns (``perturb_output``);
- client defenses keep per-API-key state: ``admit`` before the work (may refuse: 403/429), ``observe`` after
  inference, before the answer leaves (audit fields; may refuse);
- timing defenses hold the answer until a floor (``hold_until_ms``).
Encoder zoos take the output defenses marked ``for_embeddings`` (embedding_noise) and client defenses that
perturb a key's answers by its history (``perturb_client_output``: b4b); classifier zoos refuse both.

A deployment lists any number of them, each name at most once; at most one selection defense; labels_only
last among the output defenses. Requirement and output defenses apply in the order listed. Every defense that
draws randomness gets its own child of the router's seed, by its position in the list.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from common.errors import ConfigError

from ..requirements import Requirements, ZooModel
from ..zoo_view import ZooView


class RequirementDefense(Protocol):
    name: str

    def perturb(self, req: Requirements, rng: np.random.Generator) -> Requirements: ...


class SelectionDefense(Protocol):
    name: str

    def select(self, zoo: ZooView, req: Requirements, rng: np.random.Generator) -> ZooModel: ...


class OutputDefense(Protocol):
    name: str

    def perturb_output(self, probs: np.ndarray, labels: np.ndarray, rng: np.random.Generator
                       ) -> tuple[np.ndarray, np.ndarray]: ...


class ClientDefense(Protocol):
    name: str

    def admit(self, client: str, n_samples: int, now: float) -> None: ...

    def observe(self, client: str, x: np.ndarray, labels: np.ndarray) -> dict | None: ...


def _kinds() -> dict:
    from .b4b import B4B
    from .embedding_noise import EmbeddingNoise
    from .exponential_mechanism import ExponentialMechanism
    from .labels_only import LabelsOnly
    from .latency_padding import LatencyPadding
    from .metric_noise import MetricNoise
    from .output_noise import OutputNoise
    from .permute_and_flip import PermuteAndFlip
    from .prada import Prada
    from .query_budget import QueryBudget
    from .reverse_sigmoid import ReverseSigmoid
    from .round_probabilities import RoundProbabilities
    from .top_k import TopK

    return {c.name: c for c in (MetricNoise, ExponentialMechanism, PermuteAndFlip, RoundProbabilities, TopK,
                                LabelsOnly, ReverseSigmoid, OutputNoise, Prada, QueryBudget, LatencyPadding,
                                EmbeddingNoise, B4B)}


def make_defense(spec: dict):
    """``spec``: {"name": ..., **parameters}. Unknown names or parameters raise ConfigError."""
    kinds = _kinds()
    params = dict(spec)
    name = params.pop("name", None)
    if name not in kinds:
        raise ConfigError(f"unknown defense {name!r}; choose from {', '.join(kinds)}")
    try:
        return kinds[name](**params)
    except TypeError as e:
        raise ConfigError(f"bad parameters for defense {name!r}: {e}") from e


def is_requirement_defense(d) -> bool:
    return hasattr(d, "perturb")


def is_selection_defense(d) -> bool:
    return hasattr(d, "select")


def is_output_defense(d) -> bool:
    return hasattr(d, "perturb_output")


def is_client_defense(d) -> bool:
    return hasattr(d, "admit")


def is_timing_defense(d) -> bool:
    return hasattr(d, "hold_until_ms")


def check_combination(defenses: list, zoo: ZooView | None = None, workers: int = 1, shared_state: bool = False) -> None:
    """Refuse what cannot combine, with one line naming the setting; let each defense check the zoo.
    ``shared_state``: per-client state lives in the router's state_store, so any number of workers may share it."""
    names = [d.name for d in defenses]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"defenses: {', '.join(twice)} listed more than once")
    chosen = [d.name for d in defenses if is_selection_defense(d)]
    if len(chosen) > 1:
        raise ConfigError(f"at most one selection defense may be configured, got {chosen}")
    outputs = [d.name for d in defenses if is_output_defense(d)]
    if "labels_only" in outputs and outputs[-1] != "labels_only":
        raise ConfigError(f"defenses: labels_only must be the last output defense (it leaves nothing for "
                          f"{', '.join(outputs[outputs.index('labels_only') + 1:])} to perturb)")
    clients = [d.name for d in defenses if is_client_defense(d)]
    if clients and workers > 1 and not shared_state:
        raise ConfigError(f"defenses: {', '.join(clients)} keep per-client state in one process; run them with "
                          f"workers 1 (got {workers}) or set state_store to share it")
    if zoo is not None and zoo.kind == "encoder":
        for d in defenses:
            if (is_output_defense(d) and not getattr(d, "for_embeddings", False)) or getattr(d, "uses_labels", False):
                raise ConfigError(f"defenses: {d.name} works on class probabilities or labels; this zoo's encoders "
                                  f"answer embeddings")
    if zoo is not None and zoo.kind != "encoder":
        for d in defenses:
            if getattr(d, "for_embeddings", False):
                raise ConfigError(f"defenses: {d.name} perturbs embeddings; this zoo's classifiers answer "
                                  f"probabilities")
    if zoo is not None:
        for d in defenses:
            if hasattr(d, "check_zoo"):
                d.check_zoo(zoo)
