"""PRADA's per-key state in the store (router setting ``state_store``), shared by every worker of every router.

The detector itself is router/defenses/prada.py, unchanged; what moves is its state. Per key the store holds a
hash (version, flag, and the small numbers as JSON: per class the running sums of DG_c and T_c, the counters,
the last W), each class's members as appended float32 rows (one string per class: APPEND, never rewritten), and
the last distances as float32 (trimmed to ``window`` once twice as long).

Nearest-member search needs the members, so it runs in the router on a copy of the key's state that each worker
keeps, not in a script. A request adds its batch to the copy and commits the difference with one script that
applies it only when the key's version is still the one the copy was read at (compare-and-set); when another
worker or router wrote the key in between, the commit changes nothing, the copy is read again (one more round
trip) and the batch is added again. Within a worker one key's requests take turns (a lock per key), so they never
conflict with each other; one round trip per request while one worker serves a key.
"""

from __future__ import annotations

import asyncio

import numpy as np
import orjson

from ..state_store import StateStore, StateStoreUnavailable, key
from .prada import BLOCKED, Blocked, Prada, _ClientState, _Group

MAX_COMMIT_TRIES = 16  # conflicts in a row before a 503 (each round lets one writer through: a key hot on many workers)

FETCH = """
-- KEYS: 1 prada hash, 2 distances. ARGV: 1 the prefix of the members' keys (one per class)
local h = redis.call('HMGET', KEYS[1], 'ver', 'meta', 'flagged_at')
local out = {h[1] or '0', h[2] or '', h[3] or '', redis.call('GET', KEYS[2]) or ''}
if h[2] then
  for c, _ in pairs(cjson.decode(h[2]).g) do
    out[#out + 1] = c
    out[#out + 1] = redis.call('GET', ARGV[1] .. c) or ''
  end
end
return out
"""

COMMIT = """
-- KEYS: 1 prada hash, 2 distances. ARGV: 1 version read, 2 meta JSON, 3 flagged_at ('' none), 4 new distances,
-- 5 most distance bytes kept, 6 distance bytes kept after a trim, 7 members' key prefix, then class, new rows ...
local ver = tonumber(redis.call('HGET', KEYS[1], 'ver')) or 0
if ver ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'ver', ver + 1, 'meta', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSETNX', KEYS[1], 'flagged_at', ARGV[3]) end
if #ARGV[4] > 0 and redis.call('APPEND', KEYS[2], ARGV[4]) > tonumber(ARGV[5]) then
  redis.call('SET', KEYS[2], redis.call('GETRANGE', KEYS[2], -tonumber(ARGV[6]), -1))
end
for i = 8, #ARGV, 2 do redis.call('APPEND', ARGV[7] .. ARGV[i], ARGV[i + 1]) end
return ver + 1
"""


class _Copy:
    __slots__ = ("state", "version", "dim")

    def __init__(self, state: _ClientState, version: int, dim: int | None):
        self.state, self.version, self.dim = state, version, dim


class StorePrada:
    """``observe`` as Prada's, its state in the store; the admit script reads the flag (router/shared_state.py)."""

    def __init__(self, prada: Prada, store: StateStore, prefix: str):
        self.prada, self.store, self.prefix = prada, store, prefix
        self._fetch, self._commit = store.script(FETCH), store.script(COMMIT)
        self.copies: dict[str, _Copy] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _keys(self, client: str) -> tuple[list[str], str]:
        return [key(self.prefix, client, "prada"), key(self.prefix, client, "prada:d")], \
            key(self.prefix, client, "prada:m:")

    async def observe(self, client: str, x: np.ndarray, labels: np.ndarray) -> dict:
        lock = self._locks.get(client) or self._locks.setdefault(client, asyncio.Lock())
        async with lock:
            for _ in range(MAX_COMMIT_TRIES):
                copy = self.copies.get(client) or await self._read(client)
                s = copy.state
                if s.flagged_at is not None and self.prada.action == "block":
                    raise Blocked(BLOCKED)
                before = {c: g.n for c, g in s.groups.items()}, s.n_distances, s.flagged_at
                copy.dim = copy.dim or int(np.prod(np.shape(x)[1:]))
                info = self.prada.update(s, x, labels)
                try:
                    written = await self._write(client, copy, *before)
                except StateStoreUnavailable:
                    del self.copies[client]  # holds a batch the store never took
                    raise
                if written:
                    self.prada.refuse_if_newly_blocked(info)
                    return info
                del self.copies[client]  # another worker wrote the key: read it again, add the batch again
        raise StateStoreUnavailable("this API key's detector state is being written by too many routers at once; "
                                    "retry later")

    async def _read(self, client: str) -> _Copy:
        keys, members = self._keys(client)
        version, meta, flagged_at, distances, *groups = await self.store.run(self._fetch, keys, [members])
        s = _ClientState()
        copy = _Copy(s, int(version), None)
        if meta:
            m = orjson.loads(meta)
            copy.dim = m["dim"]
            s.n_distances, s.tested_at, s.w, s.samples = m["nd"], m["ta"], m["w"], m["s"]
            for c, rows in zip(groups[::2], groups[1::2]):
                sums = m["g"][c.decode()]
                s.groups[int(c)] = _Group.restore(np.frombuffer(rows, np.float32).reshape(-1, copy.dim), *sums)
        s.distances = np.frombuffer(distances, np.float32).tolist()
        s.flagged_at = int(flagged_at) if flagged_at else None
        self.copies[client] = copy
        return copy

    async def _write(self, client: str, copy: _Copy, sizes: dict, n_distances: int, flagged_at) -> bool:
        s, window = copy.state, self.prada.window
        new_d = min(s.n_distances - n_distances, len(s.distances))
        meta = {"dim": copy.dim, "nd": s.n_distances, "ta": s.tested_at, "w": s.w, "s": s.samples,
                "g": {str(c): [g.d_n, g.d_sum, g.d_sumsq, g.threshold] for c, g in s.groups.items()}}
        args = [copy.version, orjson.dumps(meta), s.flagged_at if flagged_at is None and s.flagged_at else "",
                np.asarray(s.distances[len(s.distances) - new_d:], np.float32).tobytes(), 8 * window, 4 * window,
                self._keys(client)[1]]
        for c, g in s.groups.items():
            if g.n > sizes.get(c, 0):
                args += [c, g.buf[sizes.get(c, 0): g.n].tobytes()]
        version = await self.store.run(self._commit, self._keys(client)[0], args)
        if version:
            copy.version = version
        return bool(version)
