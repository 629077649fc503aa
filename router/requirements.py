"""What a query asks for, what a zoo model offers, and how far a model falls short of a request."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Requirements:
    """A query's stated needs. ``None`` means the client did not constrain that metric."""

    min_accuracy: float | None = None  # fraction in [0, 1]
    max_latency_ms: float | None = None  # > 0

    def accuracy_floor(self) -> float:
        return -math.inf if self.min_accuracy is None else self.min_accuracy

    def latency_ceiling_ms(self) -> float:
        return math.inf if self.max_latency_ms is None else self.max_latency_ms


@dataclass(frozen=True)
class ZooModel:
    """One model as the router sees it: its profiled accuracy and selection latency from the manifest."""

    name: str
    accuracy: float
    latency_ms: float
    pareto: bool = True
    # how much the selection figure grows per sample beyond the profile's selection batch size (the steepest
    # step between profiled batch sizes; 0 when only one was profiled): padding floors for large batches
    per_sample_ms: float = 0.0


def meets(m: ZooModel, r: Requirements) -> bool:
    return m.accuracy >= r.accuracy_floor() and m.latency_ms <= r.latency_ceiling_ms()


def violation(m: ZooModel, r: Requirements, accuracy_span: float, latency_span_ms: float) -> float:
    """How far ``m`` falls short of ``r``, each metric normalised by its span over the zoo, averaged:
    0 when ``m`` meets both requirements, at most 1 when both spans are the zoo's full range."""
    acc_gap = max(0.0, r.accuracy_floor() - m.accuracy) / max(accuracy_span, 1e-12)
    lat_gap = max(0.0, m.latency_ms - r.latency_ceiling_ms()) / max(latency_span_ms, 1e-12)
    return (min(acc_gap, 1.0) + min(lat_gap, 1.0)) / 2
