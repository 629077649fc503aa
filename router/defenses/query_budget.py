"""Per-API-key limits: a request rate (token bucket; 429 with Retry-After above it) and a total sample
budget (403 once spent: waiting does not help). The cheapest defense MLaaS providers deploy; an attacker
answers it by splitting its budget across several keys (attacks/knockoff.py ``keys``).

State is per router process, so the router refuses per-client defenses with more than one worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import ConfigError

from ..errors import RouterError
from .token_bucket import TokenBuckets, retry_after_s


class RateLimited(RouterError):
    status, kind = 429, "rate_limited"

    def __init__(self, detail: str, retry_after: int):
        super().__init__(detail)
        self.retry_after = retry_after


class BudgetExhausted(RouterError):
    status, kind = 403, "query_budget_exhausted"


@dataclass
class QueryBudget:
    rate_per_s: float | None = None  # requests a second per key (None: no rate limit)
    burst: float = 10.0  # requests a key may send at once before the rate applies
    max_samples: int | None = None  # samples a key may ever send (None: no total budget)
    name = "query_budget"
    _buckets: TokenBuckets | None = field(default=None, init=False, repr=False)
    _spent: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if self.rate_per_s is None and self.max_samples is None:
            raise ConfigError("query_budget needs rate_per_s, max_samples or both")
        if self.rate_per_s is not None and not self.rate_per_s > 0:
            raise ConfigError(f"query_budget rate_per_s must be > 0, got {self.rate_per_s}")
        if not self.burst >= 1:
            raise ConfigError(f"query_budget burst must be >= 1, got {self.burst}")
        if self.max_samples is not None and (not isinstance(self.max_samples, int) or self.max_samples < 1):
            raise ConfigError(f"query_budget max_samples must be an integer >= 1, got {self.max_samples!r}")
        if self.rate_per_s is not None:
            self._buckets = TokenBuckets(self.rate_per_s, self.burst)

    def admit(self, client: str, n_samples: int, now: float) -> None:
        spent = self._spent.get(client, 0)
        if self.max_samples is not None and spent + n_samples > self.max_samples:
            raise BudgetExhausted(f"this API key has used {spent} of its {self.max_samples} samples; "
                                  f"a batch of {n_samples} would exceed it")
        if self._buckets is not None:
            wait = self._buckets.take(client, now)
            if wait > 0:
                raise RateLimited(f"over this API key's rate of {self.rate_per_s:g} requests/s; retry later",
                                  retry_after_s(wait))
        self._spent[client] = spent + n_samples

    def observe(self, client: str, x, labels) -> dict | None:
        return None
