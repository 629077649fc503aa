"""Asking at the centre of the victim's box on the Pareto staircase, not at its corner: fingerprinting that
survives the metric-noise defense.

Paper: "Pareto-Secure Machine Learning (PSML)", arXiv 2307.01292 (the staircase attack and the noise defense).

The staircase (attacks/fingerprint.py) finds corner k = (a_k, l_k) of each front model, most accurate first:
the highest accuracy model k reaches and the lowest latency at which it is served. A specification (a, l) is met
by model k when a <= a_k and l >= l_k; the front's other models are more accurate and slower (ranks < k) or
less accurate and faster (ranks > k). So the set of specifications that only model k meets, its box, is

    a in (a_{k+1}, a_k]   above the next-less-accurate model's accuracy: it and every faster model fail;
    l in [l_k, l_{k-1})   below the next-more-accurate (next-slower) model's latency: it and every slower fail.

The corner (a_k, l_k) is the box's extreme point: raising its accuracy or lowering its latency by any amount
leaves the box, so Laplace noise on the requested metrics rejects three draws in four there. The centre is the
point farthest from all four bounds; noise of a small scale next to the box's width rarely moves it out. Two
sides are open: rank 1 has no slower front model (latency unbounded above), the last rank no less accurate one
(accuracy unbounded below). Such a side is taken to end ``open_side_ranges`` published range widths past the
published range (accuracy never below 0), so its half-width is of the order of the zoo's spread.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from common.errors import ConfigError

from .fingerprint import FingerprintResult, FingerprintSettings, staircase
from .oracle import SpecOracle


@dataclass(frozen=True)
class BoxCentreSettings:
    # How far an open side (rank 1's latency, the last rank's accuracy) reaches past the published range, in
    # published range widths. 0 puts it at the range's end (for rank 1 usually its own latency: no room at all).
    open_side_ranges: float = 1.0
    # The staircase run for the corners (its target_rank is set from the victim's rank). Against a router that
    # randomises selection, give it votes > 1 and backoffs: its corners are undone of the backoffs before use.
    fingerprint: FingerprintSettings = field(default_factory=FingerprintSettings)
    verify_queries: int = 15  # probe queries at the centre: their majority signature is the victim's

    def __post_init__(self):
        if not self.open_side_ranges >= 0:
            raise ConfigError(f"open_side_ranges must be >= 0 (published range widths), got {self.open_side_ranges}")
        if self.verify_queries < 1:
            raise ConfigError(f"verify_queries must be >= 1, got {self.verify_queries}")


def box_centre(corners: list[dict], zoo_info: dict, rank: int, s: BoxCentreSettings = BoxCentreSettings()) -> dict:
    """The specification at the centre of the box of the front model of ``rank`` (1 = most accurate).
    ``corners``: the staircase's corners from rank 1 on, through rank + 1 when there is one; a list that ends
    at ``rank`` says the victim is the least accurate front model (its accuracy side is open)."""
    if rank < 1 or len(corners) < rank:
        raise ConfigError(f"rank {rank} needs the corners of ranks 1..{rank}; got {len(corners)} corner(s)")
    a_lo, a_hi = zoo_info["accuracy_range"]
    l_lo, l_hi = zoo_info["latency_range_ms"]
    victim = corners[rank - 1]
    if rank < len(corners):  # the next-less-accurate model's accuracy bounds the box from below
        a_floor = corners[rank]["min_accuracy"]
    else:
        a_floor = max(0.0, a_lo - s.open_side_ranges * (a_hi - a_lo))
    if rank > 1:  # the next-more-accurate (next-slower) model's latency bounds the box from above
        l_ceiling = corners[rank - 2]["max_latency_ms"]
    else:
        l_ceiling = l_hi + s.open_side_ranges * (l_hi - l_lo)
    return {"min_accuracy": (victim["min_accuracy"] + a_floor) / 2,
            "max_latency_ms": (victim["max_latency_ms"] + l_ceiling) / 2}


def boundaries(corners: list[dict], f: FingerprintSettings) -> list[dict]:
    """The staircase's corners without its backoffs (it steps accuracy down and latency up from each boundary
    it finds): where the models' boundaries are, which the box is made of."""
    return [{"min_accuracy": c["min_accuracy"] + f.accuracy_backoff,
             "max_latency_ms": c["max_latency_ms"] - f.latency_backoff_ms} for c in corners]


def fingerprint_box_centre(o: SpecOracle, zoo_info: dict, rank: int,
                           s: BoxCentreSettings = BoxCentreSettings()) -> FingerprintResult:
    """Staircase corners of ranks 1..rank + 1, the box centre of ``rank``, then ``verify_queries`` probe queries
    there: the majority signature is the victim's. ``queries`` counts every query, the staircase's included."""
    f = replace(s.fingerprint, target_rank=rank + 1, verify_queries=1)
    corners = staircase(o, zoo_info, f).corners[: rank + 1]
    if len(corners) < rank:  # the front has fewer than ``rank`` models
        return FingerprintResult("box_centre", None, o.queries, None, 0.0, corners)
    spec = box_centre(boundaries(corners, f), zoo_info, rank, s)
    served = Counter(o.ask(spec["min_accuracy"], spec["max_latency_ms"]) for _ in range(s.verify_queries))
    served.pop(None, None)  # rejected
    target, hits = served.most_common(1)[0] if served else (None, 0)
    return FingerprintResult("box_centre", spec, o.queries, target, hits / s.verify_queries, corners)
