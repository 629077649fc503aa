"""What an outside attacker learns from one query: rejected (no model meets the specification) or answered,
and which model answered, recognised by its exact output on a fixed probe input (a model answers a given
input the same way every time, and different models answer it differently)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stack.clients import RouterClient, RouterRejected

NO_MODEL = "no_model_meets_requirements"


def signature(probs: np.ndarray) -> str:
    """A model's fingerprint on the probe: its probabilities rounded to 5 decimals."""
    return ",".join(f"{p:.5f}" for p in np.asarray(probs).ravel())


@dataclass
class SpecOracle:
    client: RouterClient
    probe: np.ndarray  # [1, D]
    queries: int = 0
    # Natural inputs sent in turn instead of the probe, against a per-client detector such as PRADA (the probe
    # repeated gives distance 0 again and again; whether the natural stream passes depends on the data).
    # Answers are then on different inputs, so their signatures no longer name the model: only served/rejected
    # is learned, which is all the staircase's bisections use (its final verification becomes meaningless).
    pool: np.ndarray | None = None

    def ask(self, min_accuracy: float | None, max_latency_ms: float | None) -> str | None:
        """The answering model's signature, or None when the router found no model for the specification."""
        x = self.probe if self.pool is None else self.pool[self.queries % len(self.pool)][None]
        self.queries += 1
        try:
            return signature(self.client.infer(x, min_accuracy, max_latency_ms))
        except RouterRejected as e:
            if e.status == 422 and e.body.get("error") == NO_MODEL:
                return None
            raise
