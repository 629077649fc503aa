"""The accuracy/latency Pareto front: a model is on it when no other model is at least as accurate and at
least as fast, and strictly better in one of the two."""

from __future__ import annotations

from dataclasses import dataclass


def pareto_front(points: dict[str, tuple[float, float]]) -> set[str]:
    """``points``: name -> (accuracy, latency_ms). Returns the names on the front."""

    def dominated(a: str) -> bool:
        acc_a, lat_a = points[a]
        return any(
            acc_b >= acc_a and lat_b <= lat_a and (acc_b > acc_a or lat_b < lat_a)
            for b, (acc_b, lat_b) in points.items()
            if b != a
        )

    return {name for name in points if not dominated(name)}


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
