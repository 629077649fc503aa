"""Held slots (router setting ``state_store_slot_hold_ms``): the per-client bound on requests in flight
(``max_in_flight_per_client``) with no round trip for most requests.

Without holds every request takes its slot in the store (one waited script) and releases it after its answer.
With them, a worker keeps a key's slot when the key's request ends and gives it to the key's next request on the
same worker with no round trip; a slot idle for ``hold_ms`` is released (ZREM, not waited for), as is every held
slot at shutdown. A held slot stays in the store's set of the key's slots in flight, so the store counts it: the
bound is never exceeded (every request served holds a slot the store counted). What it costs: a key near its bound
whose requests spread over several workers may be refused while some of its slots sit idle at another worker, for
at most ``hold_ms``. A slot is reused only while its lease in the store (``state_store_slot_lease_ms``, taken when
the slot was) still outlasts the longest a request may take (``longest_ms``) with a tenth of the rest to spare;
after that it is released and the next request takes a fresh one. A router that dies holding slots frees them
when their leases pass, as it does its requests' slots in flight.
"""

from __future__ import annotations

import asyncio
import secrets

from .state_store import StateStore, StateStoreReplyLost, bulk, bulks

SLOT = """
-- KEYS: 1 slots in flight (sorted set: slot id -> lease deadline ms). ARGV: 1 slot id, 2 max in flight, 3 lease ms
-- Reply: {'ok', slots now}, or {'in_flight', slots}: the key's bound is reached (held slots count)
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)  -- leases of slots a dead router never released
local busy = redis.call('ZCARD', KEYS[1])
if busy >= tonumber(ARGV[2]) then return {'in_flight', busy} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])))
return {'ok', busy + 1}
"""


class Slot:
    """A slot this worker took in the store: reusable until ``usable_until`` (loop time), idle since ``idle_since``."""

    __slots__ = ("id", "usable_until", "idle_since")

    def __init__(self, slot_id: str, usable_until: float):
        self.id, self.usable_until, self.idle_since = slot_id, usable_until, 0.0


class SlotHolds:
    """One worker's held slots, per key. ``take`` first (no round trip), ``acquire`` when it finds none usable,
    ``put_back`` when the request ends."""

    def __init__(self, store: StateStore, max_in_flight: int, lease_ms: float, longest_ms: float, hold_ms: float):
        self.store, self.hold_s = store, hold_ms / 1e3
        self.reuse_s = 0.9 * max(0.0, lease_ms - longest_ms) / 1e3  # how long after it was taken a slot may serve
        self.tag = secrets.token_hex(6)  # slot ids unique across workers: this tag + the request id that took it
        self.free: dict[str, list[Slot]] = {}  # client -> its idle held slots, most recently used last
        self._sweeps: dict[str, asyncio.TimerHandle] = {}
        self._keys: dict[str, bytes] = {}  # client -> its slots' key, encoded
        self._script = store.script(SLOT)
        self._args = bulks(max_in_flight, lease_ms)
        self.loop: asyncio.AbstractEventLoop | None = None  # set with the first slot taken

    def key_for(self, client: str, in_flight_key: bytes) -> None:
        self._keys.setdefault(client, in_flight_key)

    def take(self, client: str) -> Slot | None:
        """An idle slot of the key's held here, or None (then ``acquire``). One past its reuse time is released."""
        free = self.free.get(client)
        while free:
            slot = free.pop()
            if self.loop.time() < slot.usable_until:
                return slot
            self._release(client, slot)
        return None

    async def acquire(self, client: str, request_id: str) -> tuple[Slot | None, list]:
        """A new slot from the store: (the slot, the reply), or (None, the refusal). A reply that was lost may hide
        a slot taken: it is released (idempotent) before the error goes up."""
        loop = self.loop = self.loop or asyncio.get_running_loop()
        slot_id, sent = self.tag + request_id, loop.time()
        try:
            reply = await self.store.run_parts(self._script, bulks(1) + self._keys[client] + bulks(slot_id)
                                               + self._args, 5)
        except StateStoreReplyLost:
            self._release(client, Slot(slot_id, 0.0))
            raise
        if reply[0] != b"ok":
            return None, reply
        return Slot(slot_id, sent + self.reuse_s), reply

    def put_back(self, client: str, slot: Slot) -> None:
        """The request that held the slot ended: held for the key's next request here, released after ``hold_s``."""
        slot.idle_since = self.loop.time()
        self.free.setdefault(client, []).append(slot)
        if client not in self._sweeps:
            self._sweeps[client] = self.loop.call_later(self.hold_s, self._sweep, client)

    def _sweep(self, client: str) -> None:
        del self._sweeps[client]
        free, now = self.free.pop(client, []), self.loop.time()
        keep = []
        for slot in free:
            if now - slot.idle_since >= self.hold_s:
                self._release(client, slot)
            else:
                keep.append(slot)
        if keep:
            self.free[client] = keep
            first = min(s.idle_since for s in keep)
            self._sweeps[client] = self.loop.call_later(max(0.0, first + self.hold_s - now), self._sweep, client)

    def _release(self, client: str, slot: Slot) -> None:
        self.store.send_payload(b"*3\r\n$4\r\nZREM\r\n%b%b" % (self._keys[client], bulk(slot.id)))

    def release_all(self) -> None:
        """At shutdown: every held slot released (sent, not waited for)."""
        for handle in self._sweeps.values():
            handle.cancel()
        self._sweeps.clear()
        for client, free in self.free.items():
            for slot in free:
                self._release(client, slot)
        self.free.clear()
