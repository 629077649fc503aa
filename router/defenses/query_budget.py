"""Per-API-key limits: a sample rate (token bucket in samples; 429 with Retry-After above it) and a total
sample budget (403 once spent: waiting does not help). Both count samples, not requests: a rate in requests
let every request carry a full batch. The cheapest defense MLaaS providers deploy; an attacker
answers it by splitting its budget across several keys (attacks/knockoff.py ``keys``).

State is per router process (one worker) unless the router's ``state_store`` holds it (router/shared_state.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import ConfigError

from ..errors import BudgetExhausted, RateLimited
from .token_bucket import TokenBuckets, retry_after_s


@dataclass
class QueryBudget:
    samples_per_s: float | None = None  # samples a second per key (None: no rate limit)
    burst_samples: float = 2560.0  # samples a key may send at once before the rate applies (its largest batch)
    max_samples: int | None = None  # samples a key may ever send (None: no total budget)
    name = "query_budget"
    _buckets: TokenBuckets | None = field(default=None, init=False, repr=False)
    _spent: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if self.samples_per_s is None and self.max_samples is None:
            raise ConfigError("query_budget needs samples_per_s, max_samples or both")
        if self.samples_per_s is not None and not self.samples_per_s > 0:
            raise ConfigError(f"query_budget samples_per_s must be > 0, got {self.samples_per_s}")
        if not self.burst_samples >= 1:
            raise ConfigError(f"query_budget burst_samples must be >= 1, got {self.burst_samples}")
        if self.max_samples is not None and (not isinstance(self.max_samples, int) or self.max_samples < 1):
            raise ConfigError(f"query_budget max_samples must be an integer >= 1, got {self.max_samples!r}")
        if self.samples_per_s is not None:
            self._buckets = TokenBuckets(self.samples_per_s, self.burst_samples)

    def admit(self, client: str, n_samples: int, now: float) -> None:
        spent = self._spent.get(client, 0)
        if self.max_samples is not None and spent + n_samples > self.max_samples:
            raise BudgetExhausted(f"this API key has used {spent} of its {self.max_samples} samples; "
                                  f"a batch of {n_samples} would exceed it")
        if self._buckets is not None:
            wait = self._buckets.take(client, now, n_samples)
            if wait > 0:
                raise RateLimited(f"over this API key's rate of {self.samples_per_s:g} samples/s; retry later",
                                  retry_after=retry_after_s(wait))
        self._spent[client] = spent + n_samples

    def precheck(self, client: str, now: float) -> None:
        """Before the body is read: a key whose budget is spent, or whose bucket is empty, is refused unread."""
        spent = self._spent.get(client, 0)
        if self.max_samples is not None and spent >= self.max_samples:
            raise BudgetExhausted(f"this API key has used all of its {self.max_samples} samples")
        if self._buckets is not None:
            wait = self._buckets.wait_s(client, now)
            if wait > 0:
                raise RateLimited(f"over this API key's rate of {self.samples_per_s:g} samples/s; retry later",
                                  retry_after=retry_after_s(wait))

    def penalize(self, client: str, n_samples: int, now: float) -> None:
        """A body the router refused as malformed still cost it the parse: its rows come out of the key's rate
        (an invalid body would otherwise cost the router CPU and the key nothing)."""
        if self._buckets is not None:
            self._buckets.drain(client, now, n_samples)

    def refund(self, client: str, n_samples: int) -> None:
        """Undo ``admit`` for a request that was never answered (the router could not record it)."""
        self._spent[client] = max(0, self._spent.get(client, 0) - n_samples)
        if self._buckets is not None:
            self._buckets.give_back(client, n_samples)

    def observe(self, client: str, x, labels) -> dict | None:
        return None
