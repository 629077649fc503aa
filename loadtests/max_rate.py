"""The highest Poisson rate a deployment sustains within a p99 bound (MLPerf's server scenario, sized by search).

Stopping rule: from ``start_rate_per_s``, double the rate while trials pass (halve it while they fail) until one
rate passes and another fails; then bisect between them (geometric midpoint) until the failing rate is within
``resolution`` (relative) of the passing one, or ``max_trials`` trials have run. The answer is the highest rate
that passed. Each trial is one open-loop run of ``trial_s`` seconds, longer at low rates so it holds at least
``min_requests`` requests (a p99 of 300 requests sits between the 3rd and 4th slowest), at most ``max_trial_s``.
A failing trial is run once more at the same rate (its own streams) and the rate fails only if both fail: one
stall of a shared machine fails a trial's p99, a rate beyond capacity fails both. A trial passes when its p99 (from the scheduled send, requests answered 200) is within ``p99_ms`` and either
its goodput (router audit log, benign) is at least ``min_goodput`` or, without one, at most ``max_drop_share``
of its requests were dropped (so that refusing requests cannot buy a low p99).
The search assumes a pass/fail that falls once with the rate; a single trial near the boundary is noisy
(a shared CPU moves it), so the bracket, not one number, is the result's precision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from common.errors import ConfigError


@dataclass(frozen=True)
class SearchSettings:
    p99_ms: float
    min_goodput: float | None = None  # None: the dropped share decides instead (max_drop_share)
    max_drop_share: float = 0.01
    start_rate_per_s: float = 20.0
    trial_s: float = 5.0
    min_requests: int = 300
    max_trial_s: float = 20.0
    resolution: float = 0.1
    max_trials: int = 12
    min_rate_per_s: float = 0.5  # below it the search gives up: nothing passes
    confirm_failures: bool = True  # a failing rate is tried a second time before it counts as failed

    def __post_init__(self):
        if not self.p99_ms > 0:
            raise ConfigError(f"the p99 bound must be > 0 ms, got {self.p99_ms}")
        if self.min_goodput is not None and not 0 <= self.min_goodput <= 1:
            raise ConfigError(f"min_goodput must be a share in [0, 1], got {self.min_goodput}")
        if not (self.start_rate_per_s > 0 and self.trial_s > 0 and self.max_trial_s >= self.trial_s
                and self.resolution > 0 and self.max_trials >= 2 and self.min_requests >= 1):
            raise ConfigError("the search needs start_rate_per_s > 0, 0 < trial_s <= max_trial_s, resolution > 0, "
                              "max_trials >= 2 and min_requests >= 1")

    def duration_s(self, rate_per_s: float) -> float:
        return min(self.max_trial_s, max(self.trial_s, self.min_requests / rate_per_s))

    def as_dict(self) -> dict:
        return asdict(self)


def judge(trial: dict, s: SearchSettings) -> tuple[bool, str]:
    """``trial``: p99_ms, goodput, dropped_share. (passed, one line saying why)."""
    p99, g, dropped = trial["p99_ms"], trial.get("goodput"), trial.get("dropped_share") or 0.0
    if p99 is None or p99 > s.p99_ms:
        return False, f"p99 {p99 if p99 is None else round(p99, 2)} ms > {s.p99_ms:g} ms"
    if s.min_goodput is not None:
        ok = g is not None and g >= s.min_goodput
        return ok, f"p99 {p99:.2f} ms, goodput {g if g is None else round(g, 3)} {'>=' if ok else '<'} {s.min_goodput:g}"
    ok = dropped <= s.max_drop_share
    return ok, f"p99 {p99:.2f} ms, dropped {dropped:.1%} {'<=' if ok else '>'} {s.max_drop_share:.1%}"


def search_max_rate(run_trial: Callable[[float, float, int], dict], s: SearchSettings, log=print) -> dict:
    """``run_trial(rate_per_s, duration_s, trial_index)`` -> a trial's figures (see ``judge``)."""
    trials: list[dict] = []

    def once(rate: float) -> bool:
        t = run_trial(rate, s.duration_s(rate), len(trials))
        ok, why = judge(t, s)
        trials.append({"offered_rate_per_s": rate} | t | {"passed": ok, "why": why})
        log(f"  trial {len(trials)}: {rate:.1f} req/s offered, {t.get('achieved_rate_per_s') or 0:.1f} achieved: "
            f"{'PASS' if ok else 'FAIL'} ({why})" + (" [generator-limited]" if t.get("generator_limited") else ""))
        return ok

    def passes(rate: float) -> bool:
        return once(rate) or (s.confirm_failures and len(trials) < s.max_trials and once(rate))

    lo = hi = None
    rate = s.start_rate_per_s
    while (lo is None or hi is None) and len(trials) < s.max_trials and rate >= s.min_rate_per_s:
        if passes(rate):
            lo, rate = rate, rate * 2
        else:
            hi, rate = rate, rate / 2
        if lo is not None and hi is not None and lo > hi:  # noise: a lower rate failed after a higher one passed
            hi = None
    while lo is not None and hi is not None and (hi - lo) / lo > s.resolution and len(trials) < s.max_trials:
        mid = (lo * hi) ** 0.5
        if passes(mid):
            lo = mid
        else:
            hi = mid
    if lo is None:
        stopped = "no rate passed" + (f" down to {s.min_rate_per_s:g} req/s" if rate < s.min_rate_per_s else "")
    elif hi is None:
        stopped = "every rate tried passed: the max-trials limit stopped the growth (raise --max-trials)"
    elif (hi - lo) / lo <= s.resolution:
        stopped = f"bracket [{lo:.1f}, {hi:.1f}] req/s within {s.resolution:.0%}"
    else:
        stopped = f"max trials ({s.max_trials}) reached with bracket [{lo:.1f}, {hi:.1f}] req/s"
    return {"max_rate_per_s": lo, "first_failing_rate_per_s": hi, "stopped": stopped, "search": s.as_dict(),
            "generator_limited_trials": sum(bool(t.get("generator_limited")) for t in trials), "trials": trials}
