"""A token bucket per client: ``rate_per_s`` tokens a second up to ``burst``; one token per request."""

from __future__ import annotations

import math


class TokenBuckets:
    def __init__(self, rate_per_s: float, burst: float):
        self.rate, self.burst = rate_per_s, burst
        self.state: dict[str, tuple[float, float]] = {}  # client -> (tokens, at monotonic seconds)

    def take(self, client: str, now: float) -> float:
        """0 when a token was taken, else the seconds until one will be available (nothing taken)."""
        tokens, at = self.state.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self.state[client] = (tokens - 1.0, now)
            return 0.0
        self.state[client] = (tokens, now)
        return (1.0 - tokens) / self.rate


def retry_after_s(wait_s: float) -> int:
    """Retry-After is whole seconds (RFC 9110): round up, at least 1."""
    return max(1, math.ceil(wait_s))
