"""PRADA: per-client detection of model-extraction query streams (Juuti et al., "PRADA: Protecting Against
DNN Model Stealing Attacks", EuroS&P 2019, Algorithm 1).

For each API key, every new sample x with predicted class c is compared with that key's growing set G_c:
d = min over y in G_c of ||x - y||_2 is appended to the key's distance list D, and x joins G_c when d exceeds
the class threshold T_c = max(T_c, mean(DG_c) - std(DG_c)) over the distances of G_c's own members. Natural
query streams give roughly normal distances; synthetic or crafted ones do not. Once D holds ``min_distances``
values, the Shapiro-Wilk W of D (its last ``window`` values) below ``delta`` flags the key, for good.

Cost per sample (the paper tests after every query): T_c comes from running sums of DG_c, not a pass over it;
the nearest member is found by dot products against stored squared norms, then its distance recomputed
exactly; Shapiro-Wilk runs once every ``test_every`` new distances (and on the request that reaches
``min_distances``), so a flag can come up to ``test_every - 1`` distances later than a per-query test would.

Actions on a flagged key: ``log`` (audit records only), ``throttle`` (a token bucket of ``throttle_samples_per_s``
samples a second with a burst of one second's worth, 429 above it), ``block`` (403 for that request, for the
key's requests already in flight when the flag rose, and for every later one). The request whose samples
triggered the flag is already answered by the model, but its answer is withheld under ``block``.
State is per router process unless the router's ``state_store`` holds it (router/defenses/prada_store.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.errors import ConfigError

from ..errors import Blocked, RateLimited
from .token_bucket import TokenBuckets, retry_after_s

ACTIONS = ("log", "throttle", "block")
BLOCKED = "this API key is blocked: its query stream was flagged as model extraction"


class _ClientState:
    __slots__ = ("groups", "distances", "n_distances", "tested_at", "w", "flagged_at", "samples")

    def __init__(self):
        self.groups: dict[int, _Group] = {}  # class -> the growing set G_c
        self.distances: list[float] = []  # D (its older values dropped once they leave the window)
        self.n_distances = 0  # all distances D ever had
        self.tested_at = 0  # n_distances at the last Shapiro-Wilk test
        self.w: float | None = None
        self.flagged_at: int | None = None  # samples the key had sent when it was flagged
        self.samples = 0


class _Group:
    """G_c: members in a doubling buffer with their squared norms, and running sums of DG_c for T_c."""

    __slots__ = ("buf", "sq", "n", "d_n", "d_sum", "d_sumsq", "threshold")

    def __init__(self, row: np.ndarray):
        self.buf = np.empty((64, len(row)), np.float32)
        self.sq = np.empty(64, np.float32)
        self.buf[0], self.sq[0], self.n = row, row @ row, 1
        # DG_c starts with the first member's 0, as in the paper's pseudo-code
        self.d_n, self.d_sum, self.d_sumsq, self.threshold = 1, 0.0, 0.0, 0.0

    @classmethod
    def restore(cls, rows: np.ndarray, d_n: int, d_sum: float, d_sumsq: float, threshold: float) -> "_Group":
        """A group rebuilt from stored members and sums (router/defenses/prada_store.py)."""
        g = cls.__new__(cls)
        g.buf = np.empty((max(64, 1 << (len(rows) - 1).bit_length()), rows.shape[1]), np.float32)
        g.n = len(rows)
        g.buf[: g.n] = rows
        g.sq = np.empty(len(g.buf), np.float32)
        g.sq[: g.n] = np.einsum("ij,ij->i", rows, rows)
        g.d_n, g.d_sum, g.d_sumsq, g.threshold = d_n, d_sum, d_sumsq, threshold
        return g

    def extend(self, rows: np.ndarray) -> None:
        """Members another worker added (router/defenses/prada_store.py); the sums come with them."""
        n = self.n + len(rows)
        if n > len(self.buf):
            size = 1 << (n - 1).bit_length()
            self.buf = np.concatenate([self.buf[: self.n], np.empty((size - self.n, self.buf.shape[1]), np.float32)])
            self.sq = np.concatenate([self.sq[: self.n], np.empty(size - self.n, np.float32)])
        self.buf[self.n: n] = rows
        self.sq[self.n: n] = np.einsum("ij,ij->i", rows, rows)
        self.n = n

    def nearest(self, row: np.ndarray) -> float:
        members = self.buf[: self.n]
        # argmin ||m - x||^2 = argmin (||m||^2 - 2 m.x); the winner's distance is recomputed exactly so that
        # a repeated sample gives 0, not float32 cancellation noise
        i = int(np.argmin(self.sq[: self.n] - 2.0 * (members @ row)))
        diff = members[i] - row
        return float(np.sqrt(diff @ diff))

    def update_threshold(self) -> float:
        mean = self.d_sum / self.d_n
        std = max(self.d_sumsq / self.d_n - mean * mean, 0.0) ** 0.5  # population std, like np.std
        self.threshold = max(self.threshold, mean - std)
        return self.threshold

    def add(self, row: np.ndarray, d: float) -> None:
        if self.n == len(self.buf):  # grow by doubling: amortised O(1) per added sample
            self.buf = np.concatenate([self.buf, np.empty_like(self.buf)])
            self.sq = np.concatenate([self.sq, np.empty_like(self.sq)])
        self.buf[self.n], self.sq[self.n] = row, row @ row
        self.n += 1
        self.d_n, self.d_sum, self.d_sumsq = self.d_n + 1, self.d_sum + d, self.d_sumsq + d * d


@dataclass
class Prada:
    uses_labels = True  # per-class distance groups: no class labels on an encoder zoo's embeddings
    delta: float = 0.9  # flag when Shapiro-Wilk W < delta
    min_distances: int = 100  # distances gathered before the first test
    window: int = 5000  # test the last this many distances (Shapiro-Wilk's p-value is exact up to 5000)
    max_group_size: int = 5000  # samples kept per class per key (memory bound; the test still sees every d)
    test_every: int = 10  # new distances between Shapiro-Wilk tests (1: after every sample, as in the paper)
    action: str = "log"
    throttle_samples_per_s: float = 32.0
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
        if not isinstance(self.test_every, int) or self.test_every < 1:
            raise ConfigError(f"prada test_every must be an integer >= 1, got {self.test_every!r}")
        if self.action not in ACTIONS:
            raise ConfigError(f"prada action must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        if not self.throttle_samples_per_s >= 1:
            raise ConfigError(f"prada throttle_samples_per_s must be >= 1, got {self.throttle_samples_per_s}")
        self._throttle = TokenBuckets(self.throttle_samples_per_s, self.throttle_samples_per_s)
        # scipy only when PRADA is configured (the serving path imports no scientific stack otherwise), but at
        # start-up: imported on the first test it cost a request ~1 s of CPU and inflated per-request figures
        from scipy.stats import shapiro  # noqa: F401

    def flagged(self, client: str) -> bool:
        s = self._clients.get(client)
        return s is not None and s.flagged_at is not None

    def precheck(self, client: str, now: float) -> None:
        """Before the body is read: a blocked key is refused unread; a throttled one when its bucket is empty."""
        if not self.flagged(client):
            return
        if self.action == "block":
            raise Blocked(BLOCKED)
        if self.action == "throttle" and (wait := self._throttle.wait_s(client, now)) > 0:
            raise RateLimited("this API key is throttled: its query stream was flagged as model extraction",
                              retry_after=retry_after_s(wait))

    def admit(self, client: str, n_samples: int, now: float) -> None:
        if not self.flagged(client):
            return
        if self.action == "block":
            raise Blocked(BLOCKED)
        if self.action == "throttle":
            wait = self._throttle.take(client, now, n_samples)
            if wait > 0:
                raise RateLimited("this API key is throttled: its query stream was flagged as model extraction",
                                  retry_after=retry_after_s(wait))

    def observe(self, client: str, x: np.ndarray, labels: np.ndarray) -> dict:
        s = self._clients.get(client)
        if s is None:
            s = self._clients[client] = _ClientState()
        if s.flagged_at is not None and self.action == "block":
            # admitted before the flag rose, answered after: withheld like every later request of the key
            raise Blocked(BLOCKED)
        info = self.update(s, x, labels)
        self.refuse_if_newly_blocked(info)
        return info

    def update(self, s: _ClientState, x: np.ndarray, labels: np.ndarray) -> dict:
        """Add a batch to one key's state and test it when due; the audit fields (``detected``: flagged now)."""
        flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        for row, c in zip(flat, np.asarray(labels).tolist()):
            self._add(s, row, int(c))
        s.samples += len(flat)
        newly = False
        n = s.n_distances
        if s.flagged_at is None and n >= self.min_distances and (
                s.tested_at < self.min_distances or n - s.tested_at >= self.test_every):
            s.tested_at = n
            d = np.asarray(s.distances[-self.window :])
            s.w = _shapiro_w(d)
            if s.w < self.delta:
                s.flagged_at, newly = s.samples, True
        info = {"prada_w": s.w, "prada_flagged": s.flagged_at is not None}
        if newly:
            info["detected"] = f"prada after {s.flagged_at} samples"
        return info

    def refuse_if_newly_blocked(self, info: dict) -> None:
        if "detected" in info and self.action == "block":
            raise Blocked(BLOCKED, audit=info)

    def _add(self, s: _ClientState, row: np.ndarray, c: int) -> None:
        g = s.groups.get(c)
        if g is None:
            s.groups[c] = _Group(row)
            return
        d = g.nearest(row)
        s.distances.append(d)
        s.n_distances += 1
        if d > g.update_threshold() and g.n < self.max_group_size:
            g.add(row, d)
        if len(s.distances) > 2 * self.window:  # D is only ever tested on its last `window` values
            # a new list, not a cut in place: the store's copy undoes a batch by going back to the list it held
            s.distances = s.distances[-self.window :]

    def client_report(self) -> dict:
        return {c: {"samples": s.samples, "w": s.w, "flagged_at_samples": s.flagged_at}
                for c, s in self._clients.items()}


def _shapiro_w(d: np.ndarray) -> float:
    # scipy only when PRADA is configured: the serving path imports no scientific stack otherwise
    from scipy.stats import shapiro

    # W of a constant sample is undefined (scipy warns, returns 1): identical queries are not natural ones
    return float(shapiro(d).statistic) if np.ptp(d) > 0 else 0.0
