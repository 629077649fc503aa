"""Timing defense: hold every answer until a floor, so response times no longer tell the zoo models apart.

Each zoo model answers in its own time, so the response time alone identifies the model that served a query
(attacks/timing.py), under any output perturbation. The router measures each request from receipt and, once
the answer is ready, waits until:
- ``floor_ms``: a fixed floor; or ``floor: "slowest_front"``: the slowest Pareto model's profiled selection
  latency (plus ``margin_ms``), so every front model's answers leave at about the same time;
- ``buckets_ms``: the smallest bucket at or above the elapsed time (per-tier padding: cheaper, coarser).
A floor holds one batch size only: a batch of 256 takes each model far longer than a batch of 1 (measured on the
default zoo: medians 12 / 33 / 120 ms per model, all above a 9.4 ms floor, so unpadded and told apart). So the
floor grows with the batch: ``per_sample_ms`` for every sample beyond the profile's selection batch size, by
default the steepest per-sample growth of any front model between its profiled batch sizes (0: a fixed floor).
Errors after selection (a backend timeout, an answer withheld by a detector) are held to the same floor.
A profile is taken once, on an idle machine, at a few batch sizes; serving is later, under load, at others (on
the test zoo a floor extrapolated from batches 1 and 8 was 164 ms at batch 256 where the slowest model took
198 ms). So the floor also learns: per power-of-two batch bucket, the router keeps the last ``learn_window``
ratios of an answer's ready time to its static floor, over every model served, and raises the floor by their
``learn_quantile`` (until ``learn_min`` answers are in, by their maximum). Over the mix of front models that
quantile is the slowest model's tail, so the floor follows the machine, and it is one floor for every model.
``learn_quantile: null`` keeps the static floors only.
An answer slower than its floor leaves at once, so the floor should sit at or above the slowest model's tail.
The cost falls on benign users: every answer takes at least the floor (end-to-end goodput of requests that ask
for less latency than the floor drops; profiled goodput does not see it).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from common.errors import ConfigError

FLOORS = ("slowest_front",)


@dataclass
class LatencyPadding:
    floor_ms: float | None = None
    floor: str | None = None
    margin_ms: float = 0.0
    buckets_ms: list[float] | None = None
    per_sample_ms: float | None = None  # None: from the zoo's profile (check_zoo); buckets_ms take none
    learn_quantile: float | None = 0.99  # None: static floors only; with buckets_ms it does not apply
    learn_window: int = 256  # answers remembered per batch bucket
    learn_min: int = 50  # answers in a bucket before its quantile is trusted (before: their maximum)
    name = "latency_padding"
    _batch0: int = field(default=1, init=False, repr=False)  # the batch the floor is for (profile's selection batch)
    _learned: dict = field(default_factory=dict, init=False, repr=False)  # bucket -> _Ratios

    def __post_init__(self):
        given = [k for k in ("floor_ms", "floor", "buckets_ms") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError(f"latency_padding needs exactly one of floor_ms, floor, buckets_ms; got {given or 'none'}")
        if self.floor_ms is not None and not self.floor_ms > 0:
            raise ConfigError(f"latency_padding floor_ms must be > 0, got {self.floor_ms}")
        if self.floor is not None and self.floor not in FLOORS:
            raise ConfigError(f"latency_padding floor must be one of {', '.join(FLOORS)}, got {self.floor!r}")
        if not self.margin_ms >= 0:
            raise ConfigError(f"latency_padding margin_ms must be >= 0, got {self.margin_ms}")
        if self.per_sample_ms is not None and not (self.per_sample_ms >= 0 and self.buckets_ms is None):
            raise ConfigError(f"latency_padding per_sample_ms must be >= 0 and goes with floor_ms or floor, got "
                              f"{self.per_sample_ms}")
        if self.learn_quantile is not None and not 0.5 <= self.learn_quantile <= 1:
            raise ConfigError(f"latency_padding learn_quantile must be in [0.5, 1] or null, got {self.learn_quantile}")
        if not (isinstance(self.learn_window, int) and isinstance(self.learn_min, int)
                and 1 <= self.learn_min <= self.learn_window):
            raise ConfigError(f"latency_padding needs integers 1 <= learn_min <= learn_window, got {self.learn_min} and "
                              f"{self.learn_window}")
        if self.buckets_ms is not None:
            if not self.buckets_ms or any(not b > 0 for b in self.buckets_ms) or sorted(self.buckets_ms) != list(self.buckets_ms):
                raise ConfigError("latency_padding buckets_ms must be a non-empty increasing list of values > 0")

    def check_zoo(self, zoo) -> None:
        if self.floor == "slowest_front":
            self.floor_ms = max(m.latency_ms for m in zoo.pareto) + self.margin_ms
            self.floor = None
        if self.buckets_ms is None and self.per_sample_ms is None:
            self.per_sample_ms = max(m.per_sample_ms for m in zoo.pareto)
        self._batch0 = zoo.selection_batch_size

    def static_floor_ms(self, batch_size: int) -> float:
        return self.floor_ms + (self.per_sample_ms or 0.0) * max(0, batch_size - self._batch0)

    def hold_until_ms(self, elapsed_ms: float, batch_size: int = 1) -> float:
        """The router's time (ms since receipt) before which the answer to ``batch_size`` samples must not leave."""
        if self.floor_ms is None:
            return next((b for b in self.buckets_ms if b >= elapsed_ms), elapsed_ms)
        learned = self._learned.get(_bucket(batch_size))
        return self.static_floor_ms(batch_size) * (learned.scale if learned is not None else 1.0)

    def observe(self, batch_size: int, ready_ms: float) -> None:
        """An answer of ``batch_size`` samples was ready ``ready_ms`` after receipt (before any padding)."""
        if self.floor_ms is None or self.learn_quantile is None:
            return
        b = _bucket(batch_size)
        learned = self._learned.get(b)
        if learned is None:
            learned = self._learned[b] = _Ratios(self.learn_window, self.learn_min, self.learn_quantile)
        learned.add(ready_ms / self.static_floor_ms(batch_size))

    @staticmethod
    async def wait_until(until_s: float) -> None:
        """Return once ``time.perf_counter()`` has passed ``until_s``, letting other requests run meanwhile.

        uvloop's timers count whole milliseconds from a cached clock: a timer alone lands each model's answers
        at its own sub-millisecond offset from the floor, which is itself a timing signature (measured: medians
        6.5 vs 6.9 ms, identification 0.85 from one sample). So sleep on the timer to within ~2 ms of the
        floor, then yield to the loop until it has passed; the price is up to ~2 ms of CPU per padded answer."""
        while (left := until_s - time.perf_counter()) > 2e-3:
            await asyncio.sleep(left - 2e-3)
        while time.perf_counter() < until_s:
            await asyncio.sleep(0)


def _bucket(batch_size: int) -> int:
    """1 -> 0, 2 -> 1, 3..4 -> 2, ..., 129..256 -> 8."""
    return max(0, int(batch_size - 1).bit_length())


class _Ratios:
    """The last ``window`` ratios of ready time to static floor, and the scale they give the floor (>= 1)."""

    __slots__ = ("values", "n", "min_n", "q", "scale")

    def __init__(self, window: int, min_n: int, q: float):
        self.values, self.n, self.min_n, self.q, self.scale = np.empty(window), 0, min_n, q, 1.0

    def add(self, ratio: float) -> None:
        self.values[self.n % len(self.values)] = ratio
        self.n += 1
        kept = self.values[: min(self.n, len(self.values))]
        if self.n < self.min_n:
            self.scale = max(1.0, float(kept.max()))
        elif self.n % 16 == 0 or self.n == self.min_n:  # a quantile over 256 values every 16 answers: ~1 us each
            self.scale = max(1.0, float(np.quantile(kept, self.q)))
