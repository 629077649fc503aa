"""A token bucket per client: ``rate_per_s`` tokens a second up to ``burst``; a request takes one token per
sample it carries, so a key's rate is in samples (a request-counting bucket let a throttled key still take
256 samples a request)."""

from __future__ import annotations

import math

from ..errors import BatchOverBurst


# The same refill in the store's scripts (router/admission_scripts.py, router/budget_leases.py), spliced in where
# they write TOKENS_NOW: a key's tokens now, from its budget hash read into b (spent, tokens, at ms) and the
# script's burst, rate (samples/s) and now (ms, the store's clock).
LUA_TOKENS_NOW = "math.min(burst, (tonumber(b[2]) or burst) + (now - (tonumber(b[3]) or now)) / 1000 * rate)"


def lua_take_tokens_or_refuse(budget_key: str) -> str:
    """The admission scripts' rate check (ADMIT, LEASE): ``tokens`` set to the bucket's level now, or, when it
    holds fewer than the request's ``n`` samples, that level stored in ``budget_key`` and {'rate', seconds until
    they are there} returned."""
    return f"""if rate > 0 then
  tokens = {LUA_TOKENS_NOW}
  if tokens < n then
    redis.call('HSET', {budget_key}, 'tokens', tokens, 'at', now)
    return {{'rate', tostring((n - tokens) / rate)}}
  end
end
"""


class TokenBuckets:
    def __init__(self, rate_per_s: float, burst: float):
        self.rate, self.burst = rate_per_s, burst
        self.state: dict[str, tuple[float, float]] = {}  # client -> (tokens, at monotonic seconds)

    def take(self, client: str, now: float, cost: float = 1.0) -> float:
        """0 when ``cost`` tokens were taken, else the seconds until they will be available (nothing taken)."""
        if cost > self.burst:
            raise BatchOverBurst(f"a batch of {cost:g} samples exceeds this API key's burst of {self.burst:g} samples; "
                                 "send smaller batches")
        tokens = self._tokens(client, now)
        if tokens >= cost:
            self.state[client] = (tokens - cost, now)
            return 0.0
        self.state[client] = (tokens, now)
        return (cost - tokens) / self.rate

    def _tokens(self, client: str, now: float) -> float:
        tokens, at = self.state.get(client, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def wait_s(self, client: str, now: float) -> float:
        """Seconds until one token is there (0: at least one now); nothing taken."""
        return max(0.0, 1.0 - self._tokens(client, now)) / self.rate

    def drain(self, client: str, now: float, cost: float) -> None:
        """Take up to ``cost`` tokens, down to 0 (a penalty: never refused, never negative)."""
        self.state[client] = (max(0.0, self._tokens(client, now) - cost), now)

    def give_back(self, client: str, cost: float) -> None:
        """Return tokens taken for a request that was never answered (its audit record could not be written)."""
        if client in self.state:
            tokens, at = self.state[client]
            self.state[client] = (min(self.burst, tokens + cost), at)


def retry_after_s(wait_s: float) -> int:
    """Retry-After is whole seconds (RFC 9110): round up, at least 1."""
    return max(1, math.ceil(wait_s))
