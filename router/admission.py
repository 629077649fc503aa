"""Admission control: a bound on requests in flight, per router worker and per client.

Without it an overloaded router queues without limit: every request waits behind all the others, misses any
latency requirement, and goodput falls to zero while the router answers 200 and looks healthy. With it, a
request over a bound is answered at once (503 for the deployment's bound, 429 for the client's, both with
Retry-After) and counted as a drop in goodput, so the requests admitted keep their latency.
"""

from __future__ import annotations

from .errors import Overloaded, TooManyRequests


class Admission:
    """``enter(client)`` before the work, ``leave(client)`` after it (one event loop: no locks needed)."""

    def __init__(self, max_in_flight: int | None, max_in_flight_per_client: int | None, what: str = "requests"):
        """``what``: what is counted, as the refusal names it (request bodies being received, for one)."""
        self.max_in_flight, self.max_per_client, self.what = max_in_flight, max_in_flight_per_client, what
        self.in_flight = 0
        self.per_client: dict[str, int] = {}

    def enter(self, client: str) -> None:
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            raise Overloaded(f"{self.in_flight} {self.what} in flight, the limit of this router worker; retry later")
        mine = self.per_client.get(client, 0)
        if self.max_per_client is not None and mine >= self.max_per_client:
            raise TooManyRequests(f"{mine} of your {self.what} are in flight, the limit per client; retry later")
        self.in_flight += 1
        self.per_client[client] = mine + 1

    def leave(self, client: str) -> None:
        self.in_flight -= 1
        left = self.per_client[client] - 1
        if left:
            self.per_client[client] = left
        else:
            del self.per_client[client]
