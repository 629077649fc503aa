"""Query-efficient fingerprinting of a model zoo behind a metric-based router (PSML's first attack step).

Paper: "Pareto-Secure Machine Learning (PSML)", arXiv 2307.01292.

Method ("staircase"): whether a specification (min_accuracy a, max_latency_ms l) is served or rejected is a
monotone oracle whose boundary in the (a, l) plane is the zoo's Pareto staircase; each corner is one model on
the front. Starting from the most accurate model, alternate two bisections per corner: the highest feasible
accuracy below the previous corner's latency, then the lowest feasible latency at that accuracy. Corner k's
(a, l) is a specification that only the k-th most accurate front model meets. A few repeated probe queries
then check that one model (one output signature) answers it. Against a router that randomises selection (the
noise defense), ``votes`` > 1 repeats every bisection query and follows the majority. Uses only the public API: the published ranges
from GET /v1/zoo, 200/422 answers, and outputs on one fixed probe input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from common.errors import ConfigError

from .oracle import SpecOracle


@dataclass(frozen=True)
class FingerprintSettings:
    target_rank: int = 1  # 1 = the most accurate model on the front, 2 = the next one, ...
    accuracy_tolerance: float = 1e-5  # bisection stops when the accuracy bracket is this narrow
    latency_tolerance_ms: float = 1e-3
    verify_queries: int = 10  # repeated queries of the final specification, counted in the budget
    margin: float = 0.05  # how far outside the published ranges the bisections start (fraction of the range)
    votes: int = 1  # queries per bisection step, majority decides: > 1 against a router that randomises selection
    accuracy_backoff: float = 0.0  # step back from each found boundary (noise makes the boundary itself a coin flip)
    latency_backoff_ms: float = 0.0

    def __post_init__(self):
        if self.target_rank < 1:
            raise ConfigError(f"target_rank must be >= 1 (1 = most accurate), got {self.target_rank}")
        if not (0 < self.accuracy_tolerance < 0.1 and 0 < self.latency_tolerance_ms):
            raise ConfigError("accuracy_tolerance must be in (0, 0.1) and latency_tolerance_ms > 0")
        if self.verify_queries < 1:
            raise ConfigError(f"verify_queries must be >= 1, got {self.verify_queries}")
        if self.accuracy_backoff < 0 or self.latency_backoff_ms < 0:
            raise ConfigError("accuracy_backoff and latency_backoff_ms must be >= 0")
        if self.votes < 1 or self.votes % 2 == 0:
            raise ConfigError(f"votes must be an odd number >= 1, got {self.votes}")


@dataclass
class FingerprintResult:
    method: str
    spec: dict | None  # {"min_accuracy", "max_latency_ms"} or None when the target was not found
    queries: int
    target_signature: str | None
    verified_share: float  # share of verification answers carrying the target's signature
    corners: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _feasible(o: SpecOracle, a, l, votes: int) -> bool:
    """Served (not rejected) by a majority of ``votes`` queries."""
    return sum(o.ask(a, l) is not None for _ in range(votes)) * 2 > votes


def _max_feasible_accuracy(o: SpecOracle, l, lo: float, hi: float, tol: float, votes: int) -> float | None:
    if not _feasible(o, lo, l, votes):
        return None
    if _feasible(o, hi, l, votes):
        return hi
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _feasible(o, mid, l, votes) else (lo, mid)
    return lo


def _min_feasible_latency(o: SpecOracle, a: float, lo: float, hi: float, tol: float, votes: int):
    """(highest infeasible, lowest feasible) latency at accuracy ``a``, or None."""
    if not _feasible(o, a, hi, votes):
        return None
    if _feasible(o, a, lo, votes):
        return (0.0, lo)
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if _feasible(o, a, mid, votes) else (mid, hi)
    return (lo, hi)


def staircase(o: SpecOracle, zoo_info: dict, s: FingerprintSettings) -> FingerprintResult:
    a_lo, a_hi = zoo_info["accuracy_range"]
    l_lo, l_hi = zoo_info["latency_range_ms"]
    a_bracket = (max(0.0, a_lo - s.margin * (a_hi - a_lo)), min(1.0, a_hi + s.margin * (a_hi - a_lo) + 1e-4))
    l_bracket = (max(1e-6, l_lo - s.margin * (l_hi - l_lo) - 1e-3), l_hi + s.margin * (l_hi - l_lo) + 1e-3)
    corners, below = [], None  # below: a latency just under the previous corner's (None: no constraint)
    for _ in range(s.target_rank):
        a = _max_feasible_accuracy(o, below, *a_bracket, s.accuracy_tolerance, s.votes)
        if a is None:
            return FingerprintResult("staircase", None, o.queries, None, 0.0, corners)
        a = max(0.0, a - s.accuracy_backoff)
        lat = _min_feasible_latency(o, a, *l_bracket, s.latency_tolerance_ms, s.votes)
        if lat is None:
            return FingerprintResult("staircase", None, o.queries, None, 0.0, corners)
        corners.append({"min_accuracy": a, "max_latency_ms": lat[1] + s.latency_backoff_ms})
        below = max(1e-6, lat[0] - s.latency_backoff_ms)
    spec = corners[-1]
    sigs = [o.ask(spec["min_accuracy"], spec["max_latency_ms"]) for _ in range(s.verify_queries)]
    target = max(set(sigs), key=lambda x: (x is not None, sigs.count(x)))
    return FingerprintResult("staircase", spec, o.queries, target, sigs.count(target) / len(sigs), corners)
