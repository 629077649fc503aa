"""The connection to the Redis-protocol store (Valkey or Redis) that holds per-client state when the router's
``state_store`` setting names one: scripts, timeouts, health, and what an unreachable store means.

Every update is one server-side Lua script (EVALSHA; redis-py loads the script again on NOSCRIPT, e.g. after the
store restarted), so a check and its update are atomic across every worker of every router. The scripts read the
store's clock (TIME): routers on different hosts share one clock for token buckets and slot leases.

An unreachable store costs a request at most ``state_store_connect_timeout_ms``; after a failure the store is
not asked again for ``state_store_retry_ms`` (requests in that time get the failure at once, no timeout each),
and the first request after it finds out whether the store is back: the router recovers by itself.
"""

from __future__ import annotations

import time

import redis.asyncio as redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from .errors import RouterError


class StateStoreUnavailable(RouterError):
    status, kind = 503, "state_store_unavailable"
    retry_after = 1  # seconds: a store restart or fail-over takes about that long

    def __init__(self, detail: str = "the per-client state store cannot be reached; nothing was charged, retry later"):
        super().__init__(detail)


class StateStore:
    """One connection pool per router worker; ``run(script, keys, args)`` or raise StateStoreUnavailable."""

    def __init__(self, url: str, connect_timeout_ms: float, socket_timeout_ms: float, retry_ms: float):
        self.url = url
        # no retries inside the client: its default retries with backoff up to 10 s would hold a request that
        # long; the router answers 503 at once and the breaker below decides when to try again
        self.client = redis.Redis.from_url(url, socket_connect_timeout=connect_timeout_ms / 1e3,
                                           socket_timeout=socket_timeout_ms / 1e3, retry=Retry(NoBackoff(), 0),
                                           health_check_interval=0, decode_responses=False)
        self.retry_s = retry_ms / 1e3
        self.down_until = 0.0  # monotonic time before which the store is not asked again
        self.failures = 0

    def script(self, lua: str):
        return self.client.register_script(lua)

    async def run(self, script, keys: list, args: list):
        if self.down_until and time.monotonic() < self.down_until:
            raise StateStoreUnavailable()
        try:
            reply = await script(keys=keys, args=args)
        except ResponseError:  # a script error is a bug, not an outage: let it answer 500
            raise
        except (RedisError, OSError) as e:
            self._down(e)
        self.down_until = 0.0
        return reply

    async def call(self, *command):
        """One plain command (ZREM, PING), with the same failure handling as ``run``."""
        if self.down_until and time.monotonic() < self.down_until:
            raise StateStoreUnavailable()
        try:
            reply = await self.client.execute_command(*command)
        except ResponseError:
            raise
        except (RedisError, OSError) as e:
            self._down(e)
        self.down_until = 0.0
        return reply

    def _down(self, e: Exception):
        self.down_until = time.monotonic() + self.retry_s
        self.failures += 1
        raise StateStoreUnavailable() from e

    async def reachable(self) -> bool:
        try:
            await self.call("PING")
            return True
        except StateStoreUnavailable:
            return False

    async def close(self) -> None:
        await self.client.aclose()


def key(prefix: str, client: str, what: str) -> str:
    """``<prefix>:{<client>}:<what>``: the braces put all of one client's keys in one cluster slot (a script may
    only touch keys of one slot)."""
    return f"{prefix}:{{{client}}}:{what}"
