"""Baseline fingerprinting: scan a grid of specifications exhaustively, several queries per cell.

Every cell (a, l) of a G x G grid over the published ranges is queried ``repeats`` times on the probe input.
Model signatures are ranked by the highest accuracy requirement at which they were seen (the most accurate
model answers the most demanding specifications); the target's specification is a cell where every answer
carried the target's signature, the most demanding such cell first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError

from .fingerprint import FingerprintResult
from .oracle import SpecOracle


@dataclass(frozen=True)
class GridScanSettings:
    target_rank: int = 1
    grid_size: int = 25  # cells per axis
    repeats: int = 3  # queries per cell

    def __post_init__(self):
        if self.grid_size < 2 or self.repeats < 1 or self.target_rank < 1:
            raise ConfigError("grid_size must be >= 2, repeats >= 1 and target_rank >= 1")


def grid_scan(o: SpecOracle, zoo_info: dict, s: GridScanSettings) -> FingerprintResult:
    a_lo, a_hi = zoo_info["accuracy_range"]
    l_lo, l_hi = zoo_info["latency_range_ms"]
    accs = np.linspace(max(0.0, a_lo - 0.01), a_hi, s.grid_size)
    lats = np.linspace(l_lo, l_hi * 1.05, s.grid_size)
    cells = {}
    for a in accs:
        for l in lats:
            cells[(float(a), float(l))] = [o.ask(float(a), float(l)) for _ in range(s.repeats)]
    highest: dict[str, float] = {}
    for (a, _), sigs in cells.items():
        for sig in sigs:
            if sig is not None:
                highest[sig] = max(highest.get(sig, -1.0), a)
    ranked = sorted(highest, key=highest.get, reverse=True)
    if len(ranked) < s.target_rank:
        return FingerprintResult("grid_scan", None, o.queries, None, 0.0)
    target = ranked[s.target_rank - 1]
    pure = [(a, l) for (a, l), sigs in cells.items() if all(sig == target for sig in sigs)]
    if not pure:
        return FingerprintResult("grid_scan", None, o.queries, target, 0.0)
    a, l = max(pure, key=lambda c: (c[0], -c[1]))
    return FingerprintResult("grid_scan", {"min_accuracy": a, "max_latency_ms": l}, o.queries, target, 1.0)
