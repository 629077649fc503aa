"""The accuracy/latency Pareto front: a model is on it when no other model is at least as accurate and at
least as fast, and strictly better in one of the two."""

from __future__ import annotations


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
