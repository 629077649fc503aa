"""The accuracy/latency Pareto front, decided with the selection figures' 95% intervals.

A model's selection figure is an estimate: a p99 from a few hundred requests moves between two builds on the
same host by more than the gap between neighbouring small models. Issue: in one default build mlp_small's p99
was 2.49 ms [95% CI 1.55, 3.05] against the more accurate mlp_medium's 1.79 ms, so the point rule (a model is
dominated by one at least as accurate and at least as fast) dropped mlp_small, while another build on the same
host kept it: two builds, fronts of 4 and 3 models. So a model leaves the front only when another is
at least as accurate *and* faster beyond both intervals (the other's upper bound below its own lower bound);
overlapping intervals never decide membership. Accuracies are taken as exact (one fixed test set). The interval
front always contains the point front (an interval-faster model is point-faster too).

Each front model is marked ``margin`` when no model at least as accurate has an interval overlapping its own
(no other model comes within noise of dominating it), else ``within_noise``: a model at least as accurate
cannot be told apart from it, so the point rule would keep or drop it by whichever figure happened to be lower
in a build. The point rule ``pareto_front`` stays for figures without intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FrontMark = Literal["margin", "within_noise"]


def pareto_front(points: dict[str, tuple[float, float]]) -> set[str]:
    """The point rule. ``points``: name -> (accuracy, latency_ms). Returns the names on the front."""

    def dominated(a: str) -> bool:
        acc_a, lat_a = points[a]
        return any(
            acc_b >= acc_a and lat_b <= lat_a and (acc_b > acc_a or lat_b < lat_a)
            for b, (acc_b, lat_b) in points.items()
            if b != a
        )

    return {name for name in points if not dominated(name)}


@dataclass(frozen=True)
class FrontPoint:
    """One model's accuracy (fraction) and selection figure with its 95% interval, in milliseconds.

    The interval is widened to contain the figure itself (a percentile bootstrap interval can miss it)."""

    accuracy: float
    latency_ms: float
    ci95_ms: tuple[float, float]

    def __post_init__(self):
        low, high = self.ci95_ms
        if not low <= high:
            raise ValueError(f"a 95% interval runs from low to high; got [{low}, {high}] ms")

    @property
    def low_ms(self) -> float:
        return min(self.ci95_ms[0], self.latency_ms)

    @property
    def high_ms(self) -> float:
        return max(self.ci95_ms[1], self.latency_ms)

    def clearly_faster_than(self, other: FrontPoint) -> bool:
        return self.high_ms < other.low_ms

    def overlaps(self, other: FrontPoint) -> bool:
        return not (self.clearly_faster_than(other) or other.clearly_faster_than(self))


def pareto_front_with_intervals(points: dict[str, FrontPoint]) -> set[str]:
    """The names no other model dominates: at least as accurate and faster beyond both intervals."""

    def dominated(a: FrontPoint) -> bool:
        return any(b.accuracy >= a.accuracy and b.clearly_faster_than(a) for b in points.values())

    return {name for name, p in points.items() if not dominated(p)}


def front_marks(points: dict[str, FrontPoint]) -> dict[str, FrontMark]:
    """Front model -> ``margin`` or ``within_noise`` (``within_noise``: some other model at least as accurate
    has an interval overlapping its own). Models off the front are absent."""

    def contested(name: str) -> bool:
        a = points[name]
        return any(b.accuracy >= a.accuracy and b.overlaps(a) for other, b in points.items() if other != name)

    return {name: "within_noise" if contested(name) else "margin" for name in pareto_front_with_intervals(points)}


@dataclass(frozen=True)
class FrontTargets:
    """What makes a front stand above the measurement noise (issue 8; real zoos such as ResNet-18..152)."""

    min_models: int = 4
    min_latency_ratio: float = 1.25  # neighbouring front models: slower / faster selection latency
    min_spread_multiple: float = 3.0  # latency gap over the larger run-to-run spread of the two
    min_accuracy_gap: float = 0.02  # accuracy points (fractions) between neighbours
    min_span: float = 5.0  # slowest / fastest front model


def front_check(models: dict[str, tuple[float, float, float]], t: FrontTargets = FrontTargets()) -> list[dict]:
    """``models``: name -> (accuracy, selection latency ms, its run-to-run spread ms) for the front models.

    One line per condition, LoadGen style: ``{"check", "value", "target", "valid"}``."""
    front = sorted(((n, tuple(float(v) for v in vals)) for n, vals in models.items()), key=lambda kv: kv[1][1])
    lines = [{"check": "front models", "value": len(front), "target": f">= {t.min_models}",
              "valid": len(front) >= t.min_models}]
    for (a, (acc_a, lat_a, sp_a)), (b, (acc_b, lat_b, sp_b)) in zip(front, front[1:]):
        ratio, gap = lat_b / lat_a, lat_b - lat_a
        multiple = gap / max(sp_a, sp_b, 1e-9)
        lines += [
            {"check": f"latency {b}/{a}", "value": round(ratio, 3), "target": f">= {t.min_latency_ratio}",
             "valid": ratio >= t.min_latency_ratio},
            {"check": f"latency gap {b}-{a} over run-to-run spread", "value": round(multiple, 1),
             "target": f"> {t.min_spread_multiple}", "valid": multiple > t.min_spread_multiple},
            {"check": f"accuracy {b}-{a} (points)", "value": round(100 * (acc_b - acc_a), 2),
             "target": f">= {100 * t.min_accuracy_gap:g}", "valid": acc_b - acc_a >= t.min_accuracy_gap - 1e-12},
        ]
    if front:
        span = front[-1][1][1] / front[0][1][1]
        lines.append({"check": "front span slowest/fastest", "value": round(span, 2), "target": f">= {t.min_span}",
                      "valid": span >= t.min_span})
    return lines


def format_check(lines: list[dict]) -> str:
    return "\n".join(f"{'VALID  ' if l['valid'] else 'INVALID'} {l['check']}: {l['value']} (target {l['target']})"
                     for l in lines)
