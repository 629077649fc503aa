"""Held slots (router setting ``state_store_slot_hold_ms``): the per-client bound on requests in flight
(``max_in_flight_per_client``) with no round trip for most requests.

Without holds every request takes its slot in the store (one waited script) and releases it after its answer.
With them, a worker keeps a key's slot when the key's request ends and gives it to the key's next request on the
same worker with no round trip; a slot idle for ``hold_ms`` is released (ZREM, not waited for), as is every held
slot at shutdown. A held slot stays in the store's set of the key's slots in flight, so the store counts it and the
bound holds while the store keeps the set.

A held slot serves for at most SLOT_TENURE_S after it was taken, then it is released and the key's next request
takes a fresh one (a round trip a second per busy key and worker). This bounds two things a red team found:
a key whose set the store lost (an operator's DEL, FLUSHALL, a store restarted empty, eviction) could otherwise
have its held slots and a whole new bound in flight for the slot's whole lease (45 s), and a busy worker could keep
a key's slots for that long while the key's requests at other workers were refused. A refused SLOT also marks the
key contended in the store for CONTENDED_S; a worker that learns it (from its next SLOT reply, within a tenure)
stops holding the key's slots for that long (each request then takes and releases its own, as without holds), so
workers that share a tight bound share it as they would without holds. A slot is also never reused once its lease
in the store could lapse before a request on it ends (``longest_ms``, with a tenth of the rest to spare). A router
that dies holding slots frees them when their leases pass, as it does its requests' slots in flight.
"""

from __future__ import annotations

import asyncio
import secrets

from .state_store import StateStore, StateStoreReplyLost, bulk, bulks

SLOT = """
-- KEYS: 1 slots in flight (sorted set: slot id -> lease deadline ms), 2 the key's contention mark, 3 (PRADA on
--       only) the key's prada hash
-- ARGV: 1 slot id, 2 max in flight, 3 lease ms, 4 contention ms
-- Reply: {'ok', slots now, 1 when a request of the key was refused lately else 0[, prada version, flag ('' none)]}
-- (the version and flag tell the worker's copy of the key's prada state that it is behind, as ADMIT's reply
-- does), or {'in_flight', slots}: the key's bound is reached (held slots count); it is then marked contended
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)  -- leases of slots a dead router never released
local busy = redis.call('ZCARD', KEYS[1])
if busy >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], 1, 'PX', ARGV[4])
  return {'in_flight', busy}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])))
local out = {'ok', busy + 1, redis.call('EXISTS', KEYS[2])}
if KEYS[3] then
  local p = redis.call('HMGET', KEYS[3], 'ver', 'flagged_at')
  out[4], out[5] = p[1] or '0', p[2] or ''
end
return out
"""
SLOT_TENURE_S = 1.0  # a held slot serves this long after it was taken at most, then a fresh one is taken
CONTENDED_S = 1.0  # a key refused for its bound is not held by any worker that learns it, for this long


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
        # how long after it was taken a slot may serve: its tenure, and never so long that its lease could lapse
        self.reuse_s = min(SLOT_TENURE_S, 0.9 * max(0.0, lease_ms - longest_ms) / 1e3)
        self.tag = secrets.token_hex(6)  # slot ids unique across workers: this tag + the request id that took it
        self.free: dict[str, list[Slot]] = {}  # client -> its idle held slots, most recently used last
        self._sweeps: dict[str, asyncio.TimerHandle] = {}
        # client -> its slots' key; SLOT's numkeys and keys (the slots, the contention mark, PRADA's hash); its parts
        self._keys: dict[str, tuple[bytes, bytes, int]] = {}
        self.contended: dict[str, float] = {}  # client -> loop time until which its slots are not held
        self._script = store.script(SLOT)
        self._args = bulks(max_in_flight, lease_ms, int(CONTENDED_S * 1e3))
        self.loop: asyncio.AbstractEventLoop | None = None  # set with the first slot taken

    def key_for(self, client: str, in_flight_key: str, prada_key: str | None = None) -> None:
        """The key's names in the store (its PRADA hash too when PRADA is on: SLOT's reply then carries its version
        and flag)."""
        if client not in self._keys:
            keys = (in_flight_key, in_flight_key + ":contended") + ((prada_key,) if prada_key else ())
            self._keys[client] = bulk(in_flight_key), bulks(len(keys), *keys), 5 + len(keys)  # parts SLOT has

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
            _, keys, count = self._keys[client]
            reply = await self.store.run_parts(self._script, keys + bulks(slot_id) + self._args, count)
        except StateStoreReplyLost:
            self._release(client, Slot(slot_id, 0.0))
            raise
        if reply[0] != b"ok":
            return None, reply
        if reply[2]:  # another request of the key was refused lately: share the bound, hold nothing for a while
            self.contended[client] = loop.time() + CONTENDED_S
            for slot in self.free.pop(client, []):
                self._release(client, slot)
        return Slot(slot_id, sent + self.reuse_s), reply

    def put_back(self, client: str, slot: Slot) -> None:
        """The request that held the slot ended: held for the key's next request here, released after ``hold_s``
        (at once when the key is contended or the slot's tenure is over)."""
        now = self.loop.time()
        if now >= slot.usable_until or now < self.contended.get(client, 0.0):
            self._release(client, slot)
            return
        slot.idle_since = now
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
        self.store.send_payload(b"*3\r\n$4\r\nZREM\r\n%b%b" % (self._keys[client][0], bulk(slot.id)))

    def release_all(self) -> None:
        """At shutdown: every held slot released (sent, not waited for)."""
        for handle in self._sweeps.values():
            handle.cancel()
        self._sweeps.clear()
        for client, free in self.free.items():
            for slot in free:
                self._release(client, slot)
        self.free.clear()
