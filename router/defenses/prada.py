"""PRADA: per-client detection of model-extraction query streams (Juuti et al., "PRADA: Protecting Against
DNN Model Stealing Attacks", EuroS&P 2019, Algorithm 1).

For each API key, every new sample x with predicted class c is compared with that key's growing set G_c:
d = min over y in G_c of ||x - y||_2 is appended to the key's distance list D, and x joins G_c when d exceeds
the class threshold T_c = max(T_c, mean(DG_c) - std(DG_c)) over the distances of G_c's own members. Natural
query streams give roughly normal distances; synthetic or crafted ones do not. Once D holds ``min_distances``
values, the Shapiro-Wilk W of D (its last ``window`` values) below ``delta`` flags the key, for good.

Actions on a flagged key: ``log`` (audit records only), ``throttle`` (a token bucket of ``throttle_rate_per_s``
requests a second, 429 above it), ``block`` (403 for that request and every later one). The request whose
samples triggered the flag is already answered by the model, but its answer is withheld under ``block``.
State is per router process, so the router refuses per-client defenses with more than one worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from psml.errors import ConfigError

from ..errors import RouterError
from .query_budget import RateLimited
from .token_bucket import TokenBuckets, retry_after_s

ACTIONS = ("log", "throttle", "block")


class Blocked(RouterError):
    status, kind = 403, "blocked"


class _ClientState:
    __slots__ = ("groups", "group_d", "thresholds", "distances", "w", "flagged_at", "samples")

    def __init__(self):
        self.groups: dict[int, list] = {}  # class -> [buffer [cap, D], n used]: the growing set G_c
        self.group_d: dict[int, list[float]] = {}  # class -> distances of G_c's members (DG_c)
        self.thresholds: dict[int, float] = {}
        self.distances: list[float] = []  # D
        self.w: float | None = None
        self.flagged_at: int | None = None  # samples the key had sent when it was flagged
        self.samples = 0


@dataclass
class Prada:
    delta: float = 0.9  # flag when Shapiro-Wilk W < delta
    min_distances: int = 100  # distances gathered before the first test
    window: int = 5000  # test the last this many distances (Shapiro-Wilk's p-value is exact up to 5000)
    max_group_size: int = 5000  # samples kept per class per key (memory bound; the test still sees every d)
    action: str = "log"
    throttle_rate_per_s: float = 1.0
    name = "prada"
    _clients: dict = field(default_factory=dict, init=False, repr=False)
    _throttle: TokenBuckets | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if not 0 < self.delta < 1:
            raise ConfigError(f"prada delta must be in (0, 1), got {self.delta}")
        if not isinstance(self.min_distances, int) or self.min_distances < 3:
            raise ConfigError(f"prada min_distances must be an integer >= 3 (Shapiro-Wilk needs 3), got {self.min_distances!r}")
        if not isinstance(self.window, int) or self.window < self.min_distances:
            raise ConfigError(f"prada window must be an integer >= min_distances, got {self.window!r}")
        if not isinstance(self.max_group_size, int) or self.max_group_size < 1:
            raise ConfigError(f"prada max_group_size must be an integer >= 1, got {self.max_group_size!r}")
        if self.action not in ACTIONS:
            raise ConfigError(f"prada action must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        if not self.throttle_rate_per_s > 0:
            raise ConfigError(f"prada throttle_rate_per_s must be > 0, got {self.throttle_rate_per_s}")
        self._throttle = TokenBuckets(self.throttle_rate_per_s, 1.0)

    def flagged(self, client: str) -> bool:
        s = self._clients.get(client)
        return s is not None and s.flagged_at is not None

    def admit(self, client: str, n_samples: int, now: float) -> None:
        if not self.flagged(client):
            return
        if self.action == "block":
            raise Blocked("this API key is blocked: its query stream was flagged as model extraction")
        if self.action == "throttle":
            wait = self._throttle.take(client, now)
            if wait > 0:
                raise RateLimited("this API key is throttled: its query stream was flagged as model extraction",
                                  retry_after_s(wait))

    def observe(self, client: str, x: np.ndarray, labels: np.ndarray) -> dict:
        s = self._clients.get(client)
        if s is None:
            s = self._clients[client] = _ClientState()
        flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        for row, c in zip(flat, np.asarray(labels).tolist()):
            self._add(s, row, int(c))
        s.samples += len(flat)
        newly = False
        if s.flagged_at is None and len(s.distances) >= self.min_distances:
            d = np.asarray(s.distances[-self.window :])
            s.w = _shapiro_w(d)
            if s.w < self.delta:
                s.flagged_at, newly = s.samples, True
        info = {"prada_w": s.w, "prada_flagged": s.flagged_at is not None}
        if newly:
            info["detected"] = f"prada after {s.flagged_at} samples"
            if self.action == "block":
                e = Blocked("this API key is blocked: its query stream was flagged as model extraction")
                e.audit = info
                raise e
        return info

    def _add(self, s: _ClientState, row: np.ndarray, c: int) -> None:
        entry = s.groups.get(c)
        if entry is None:
            buf = np.empty((64, len(row)), np.float32)
            buf[0] = row
            s.groups[c], s.group_d[c], s.thresholds[c] = [buf, 1], [0.0], 0.0
            return
        buf, n = entry
        d = float(np.sqrt(((buf[:n] - row) ** 2).sum(1).min()))
        s.distances.append(d)
        dg = s.group_d[c]
        s.thresholds[c] = max(s.thresholds[c], float(np.mean(dg) - np.std(dg)))
        if d > s.thresholds[c] and n < self.max_group_size:
            if n == len(buf):  # grow by doubling: amortised O(1) per added sample
                buf = np.concatenate([buf, np.empty_like(buf)])
            buf[n] = row
            entry[0], entry[1] = buf, n + 1
            dg.append(d)

    def client_report(self) -> dict:
        return {c: {"samples": s.samples, "w": s.w, "flagged_at_samples": s.flagged_at}
                for c, s in self._clients.items()}


def _shapiro_w(d: np.ndarray) -> float:
    # scipy only when PRADA is configured: the serving path imports no scientific stack otherwise
    from scipy.stats import shapiro

    # W of a constant sample is undefined (scipy warns, returns 1): identical queries are not natural ones
    return float(shapiro(d).statistic) if np.ptp(d) > 0 else 0.0
