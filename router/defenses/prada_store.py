"""PRADA's per-key state in the store (router setting ``state_store``), shared by every worker of every router.

The detector itself is router/defenses/prada.py, unchanged; what moves is its state. Per key the store holds a
hash (``ver``, ``epoch``, ``flagged_at``, and the small numbers as JSON ``meta``: per class the running sums of
DG_c and T_c, the counters, the last W), each class's members as appended float32 rows (``prada:m:<class>``, one
string per class: APPEND, never rewritten) and the last distances as float32 (``prada:d``, trimmed to ``window``
once twice as long).

Nearest-member search needs the members, so it runs in the router on a copy of the key's state that each worker
keeps, not in a script. A request adds its batch to the copy and commits the difference with one script that
applies it only when the key is still at the epoch and version the copy holds (compare-and-set). A copy never
reads the key whole again once it has it: the admission script's reply carries the key's version and flag, and a
copy that is behind (another worker or router wrote the key) asks only for what was appended since (``FETCH``
with the row and distance counts it holds: replies of a few hundred bytes where the whole state is up to ~8 MB);
a commit that lost a race puts its batch back, catches up the same way and commits again. Within a worker one
key's requests take turns (a lock per key).

Round trips. Under ``log`` and ``throttle`` no answer depends on the commit's outcome: the commit leaves with the
answer (the same turn of the event loop) but its reply is not waited for (the key's next request on this worker
waits for it before touching the copy; a commit that lost a race is applied again in the background and a flag it
raises refuses or throttles the key's later requests, as the store tells every admission; the flag's
``detected`` goes into the audit record of the key's next request on this worker). Under ``block`` the request
whose batch crosses the threshold must be withheld, and whether it crosses is only certain once the commit
applied where the copy said (another worker may have written the key first), so its answer waits for the reply.

The operator's reset: ``DEL <prefix>:{<client>}:prada`` starts the key's detector over (a new epoch: every copy
is read again; the old members and distances are overwritten by the next commit); ``HDEL <prefix>:{<client>}:prada
flagged_at`` clears only the flag (the copies hear it from the next admission; the detector keeps the key's
history and flags it again at its next test if the stream still looks synthetic).
"""

from __future__ import annotations

import asyncio
import sys
from array import array

import numpy as np
import orjson

from ..errors import StateStoreContended
from ..state_store import StateStore, StateStoreError, StateStoreUnavailable, bulks, key
from .prada import BLOCKED, Blocked, Prada, _ClientState, _Group

MAX_COMMIT_TRIES = 16  # conflicts in a row before a 503 (each round lets one writer through: a key hot on many workers)

FETCH = """
-- KEYS: 1 prada hash, 2 distances. ARGV: 1 members' key prefix, 2 epoch held ('' none), 3 distances held, then
-- per class held: class, member rows held
-- Reply: version, epoch, flagged_at ('' none), meta, 1 when the rest is the whole state (a new epoch) else 0, the
-- distances past those held (at most those kept), then per class: class, its member rows past those held
local h = redis.call('HMGET', KEYS[1], 'ver', 'epoch', 'flagged_at', 'meta')
local epoch = h[2] or ''
local whole = epoch ~= ARGV[2]
local out = {h[1] or '0', epoch, h[3] or '', h[4] or '', whole and 1 or 0, ''}
if not h[4] then return out end
local m = cjson.decode(h[4])
local nd, held = 0, {}
if not whole then
  nd = tonumber(ARGV[3])
  for i = 4, #ARGV, 2 do held[ARGV[i]] = tonumber(ARGV[i + 1]) end
end
if m.nd > nd then out[6] = redis.call('GETRANGE', KEYS[2], -4 * (m.nd - nd), -1) end
for c, _ in pairs(m.g) do
  out[#out + 1] = c
  out[#out + 1] = redis.call('GETRANGE', ARGV[1] .. c, (held[c] or 0) * 4 * m.dim, -1)
end
return out
"""

COMMIT = """
-- KEYS: 1 prada hash, 2 distances. ARGV: 1 epoch held, 2 version held, 3 meta JSON, 4 flagged_at ('' none new),
-- 5 distances held (0: written afresh), 6 new distances, 7 most distance bytes kept, 8 distance bytes kept after a
-- trim, 9 members' key prefix, then per class that grew: class, member rows held (0: written afresh), new rows
-- Reply: {new version, epoch}, or {0, ''} when the key is no longer at the epoch and version held (nothing written)
local h = redis.call('HMGET', KEYS[1], 'ver', 'epoch')
local epoch = h[2] or ''
if epoch ~= ARGV[1] or (tonumber(h[1]) or 0) ~= tonumber(ARGV[2]) then return {0, ''} end
if epoch == '' then  -- a new key, or one an operator reset: a new epoch
  local t = redis.call('TIME')
  epoch = t[1] .. '.' .. t[2]
end
local ver = (tonumber(h[1]) or 0) + 1
redis.call('HSET', KEYS[1], 'ver', ver, 'meta', ARGV[3], 'epoch', epoch)
if ARGV[4] ~= '' then redis.call('HSETNX', KEYS[1], 'flagged_at', ARGV[4]) end
if ARGV[5] == '0' then
  redis.call('SET', KEYS[2], ARGV[6])
elseif #ARGV[6] > 0 and redis.call('APPEND', KEYS[2], ARGV[6]) > tonumber(ARGV[7]) then
  redis.call('SET', KEYS[2], redis.call('GETRANGE', KEYS[2], -tonumber(ARGV[8]), -1))
end
for i = 10, #ARGV, 3 do
  if ARGV[i + 1] == '0' then redis.call('SET', ARGV[9] .. ARGV[i], ARGV[i + 2])
  else redis.call('APPEND', ARGV[9] .. ARGV[i], ARGV[i + 2]) end
end
return {ver, epoch}
"""


class _Copy:
    """This worker's copy of one key's state: at ``epoch``/``version`` in the store once ``settled`` (None: no
    commit of this worker's is waiting for its reply). ``seen``: the version and flag the last admission read."""

    __slots__ = ("state", "version", "epoch", "dim", "seen", "settled", "late", "sums")

    def __init__(self):
        self.state, self.version, self.epoch, self.dim = _ClientState(), 0, b"", None
        self.sums: dict[str, list] = {}  # per class (as in the store's meta) its group's sums, kept current
        self.seen: tuple[int, bool] | None = None
        self.settled: asyncio.Future | None = None
        self.late: str | None = None  # a flag raised after its request was answered (a commit applied again)

    def behind(self) -> bool:
        """Whether the store holds writes this copy lacks: a newer version, or a flag an operator cleared."""
        seen, self.seen = self.seen, None
        return seen is not None and (seen[0] > self.version or (self.state.flagged_at is not None and not seen[1]))


class _Commit:
    """One request's batch on its way into the store, kept until the store took it (to add it again after a
    conflict)."""

    __slots__ = ("x", "labels", "mark", "info", "parts", "count", "sent")

    def __init__(self, x, labels, mark, info):
        self.x, self.labels, self.mark, self.info = x, labels, mark, info
        self.parts, self.count, self.sent = b"", 0, None


def _mark(s: _ClientState, classes) -> tuple:
    """What a batch of these classes changes, as it was before it (``_undo`` puts it back; None: no group yet)."""
    touched = {}
    for c in classes:
        g = s.groups.get(c)
        touched[c] = None if g is None else (g.n, g.d_n, g.d_sum, g.d_sumsq, g.threshold)
    return touched, s.n_distances, s.tested_at, s.w, s.flagged_at, s.samples, s.distances, len(s.distances)


def _undo(copy: _Copy, mark: tuple) -> None:
    s = copy.state
    touched, nd, s.tested_at, s.w, s.flagged_at, s.samples, held, held_len = mark
    for c, before in touched.items():
        if before is None:
            s.groups.pop(c, None)
            copy.sums.pop(str(c), None)
        else:
            g = s.groups[c]
            g.n, g.d_n, g.d_sum, g.d_sumsq, g.threshold = before
            copy.sums[str(c)] = list(before[1:])
    # the batch's distances are the list's last ones; a trim during the batch made a new list (Prada.update):
    # going back to the one held before it keeps the distances the trim cut
    s.distances = held
    del held[held_len:]
    s.n_distances = nd


class StorePrada:
    """``observe`` as Prada's, its state in the store; the admit script reads the flag (router/shared_state.py)."""

    def __init__(self, prada: Prada, store: StateStore, prefix: str):
        self.prada, self.store, self.prefix = prada, store, prefix
        self._fetch, self._commit = store.script(FETCH), store.script(COMMIT)
        self.copies: dict[str, _Copy] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._keys: dict[str, tuple[bytes, bytes, bytes]] = {}  # client -> encoded keys and constant arguments
        self._tasks: set = set()
        # batches answered under log/throttle whose commits lost every race (StateStoreContended): certainly not in
        # the store, sent with the key's next request on this worker, before its own batch
        self.unobserved: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    def seen(self, client: str, version: int, flagged_at: bytes) -> None:
        """The key's version and flag as the admission of one of its requests read them."""
        copy = self.copies.get(client)
        if copy is not None:
            copy.seen = (version, bool(flagged_at))

    def _keys_of(self, client: str) -> tuple[bytes, bytes, bytes]:
        k = self._keys.get(client)
        if k is None:
            members = key(self.prefix, client, "prada:m:")
            k = self._keys[client] = (bulks(2, key(self.prefix, client, "prada"), key(self.prefix, client, "prada:d")),
                                      bulks(8 * self.prada.window, 4 * self.prada.window, members), bulks(members))
        return k

    async def observe(self, client: str, x: np.ndarray, labels: np.ndarray) -> dict:
        lock = self._locks.get(client) or self._locks.setdefault(client, asyncio.Lock())
        async with lock:
            copy = await self._current(client)
            if copy.state.flagged_at is not None and self.prada.action == "block":
                raise Blocked(BLOCKED)  # admitted before the flag rose, answered after: withheld
            copy = await self._observe_left_over(client, copy)
            wait = self.prada.action == "block"
            c = self._add(client, copy, x, labels)
            if not wait and c.sent is not None:  # no answer waits on the commit's outcome
                copy.settled = c.sent.get_loop().create_future()
                c.sent.add_done_callback(lambda _, copy=copy, c=c: self._committed(client, copy, c))
                if copy.late is not None:
                    c.info["detected"], copy.late = copy.late, None
                return c.info
            info = await self._settle(client, copy, c)
            self.prada.refuse_if_newly_blocked(info)
            return info

    async def _observe_left_over(self, client: str, copy: _Copy) -> _Copy:
        """Commit, waiting for each, the key's batches whose commits lost every race; a flag one of them raises
        goes into this request's audit record (``late``). Contended again: the rest stay queued, this request
        is refused (503, never served unobserved)."""
        left = self.unobserved.pop(client, None)
        while left:
            try:
                info = await self._settle(client, copy, self._add(client, copy, *left[0]))
            except StateStoreContended:
                self.unobserved[client] = left
                raise
            left.pop(0)
            if "detected" in info:
                copy.late = info["detected"]
        return self.copies.get(client, copy)

    async def _current(self, client: str) -> _Copy:
        """This worker's copy of the key, its last commit settled and caught up with the store."""
        copy = self.copies.get(client)
        if copy is not None and copy.settled is not None:
            try:
                async with asyncio.timeout(4 * self.store.socket_timeout_s):
                    await asyncio.shield(copy.settled)
            except TimeoutError:
                raise StateStoreUnavailable() from None
            copy = self.copies.get(client)
        if copy is None:
            copy = _Copy()
            await self._catch_up(client, copy)
            self.copies[client] = copy
        elif copy.behind():
            await self._catch_up(client, copy)
        return copy

    def _add(self, client: str, copy: _Copy, x: np.ndarray, labels: np.ndarray) -> _Commit:
        """The batch into the copy, and its difference sent to the store (its reply waited for by ``_settle`` or
        handled by ``_committed``). Only the batch's classes are marked and re-encoded, not every group's."""
        copy.dim = copy.dim or int(np.prod(np.shape(x)[1:]))
        s = copy.state
        mark = _mark(s, dict.fromkeys(np.asarray(labels).tolist()))
        c = _Commit(x, labels, mark, self.prada.update(s, x, labels))
        touched, nd, flagged_at = mark[0], mark[1], mark[4]
        keys, constants, _ = self._keys_of(client)
        parts, count = [], 12
        for k, before in touched.items():
            g = s.groups[k]
            copy.sums[str(k)] = [g.d_n, g.d_sum, g.d_sumsq, g.threshold]
            held = 0 if before is None else before[0]
            if g.n > held:
                parts.append(bulks(k, held, g.buf[held: g.n].tobytes()))
                count += 3
        meta = orjson.dumps({"dim": copy.dim, "nd": s.n_distances, "ta": s.tested_at, "w": s.w, "s": s.samples,
                             "g": copy.sums})
        distances = s.distances[len(s.distances) - min(s.n_distances - nd, len(s.distances)):]
        c.parts = b"".join([keys, bulks(copy.epoch, copy.version, meta, s.flagged_at if flagged_at is None and
                                        s.flagged_at else b"", nd, array("f", distances).tobytes()), constants, *parts])
        c.count = count
        c.sent = self.store.submit(self._commit, c.parts, count)
        return c

    async def _settle(self, client: str, copy: _Copy, c: _Commit) -> dict:
        """The commit's outcome; after a conflict: the batch out, the copy caught up, the batch in again, commit.
        After MAX_COMMIT_TRIES conflicts, StateStoreContended: no commit of the batch is left in flight then (the
        last conflict submits none), so the batch is certainly not in the store."""
        for attempt in range(MAX_COMMIT_TRIES):
            try:
                if c.sent is None:
                    version, epoch = await self.store.run_parts(self._commit, c.parts, c.count)
                else:
                    version, epoch = await self.store.result(c.sent, self._commit, c.parts, c.count)
                if version:
                    copy.version, copy.epoch = version, epoch
                    return c.info
                _undo(copy, c.mark)
                await self._catch_up(client, copy)
            except (StateStoreUnavailable, StateStoreError):
                self.copies.pop(client, None)  # it holds a batch the store may never have taken: read it again
                raise
            if copy.state.flagged_at is not None and self.prada.action == "block":
                raise Blocked(BLOCKED)  # another worker's batch flagged the key first
            if attempt == MAX_COMMIT_TRIES - 1:
                break
            c = self._add(client, copy, c.x, c.labels)
        self.copies.pop(client, None)
        raise StateStoreContended()

    def _committed(self, client: str, copy: _Copy, c: _Commit) -> None:
        """A commit nobody waited for has its reply: done, unless it lost a race (then applied again here)."""
        fut = c.sent
        reply = None if fut.cancelled() or fut.exception() is not None else fut.result()
        if type(reply) is list and reply[0]:
            copy.version, copy.epoch = reply
            settled, copy.settled = copy.settled, None
            settled.set_result(None)
            return
        task = fut.get_loop().create_task(self._apply_again(client, copy, c))
        self._tasks.add(task)  # a reference, so that the task is not collected before it runs
        task.add_done_callback(self._tasks.discard)

    async def _apply_again(self, client: str, copy: _Copy, c: _Commit) -> None:
        try:
            info = await self._settle(client, copy, c)
            if "detected" in info and "detected" not in c.info:  # its request was answered before it was known
                copy.late = info["detected"]
                print(f"router: prada flagged {client!r} after its answer left ({info['detected']}): a commit that "
                      "raced another router's was applied again", file=sys.stderr, flush=True)
        except StateStoreContended:
            # its answer has left: the batch must still reach the detector, with the key's next request here
            self.unobserved.setdefault(client, []).append((c.x, c.labels))
            print(f"router: prada commit for {client!r} lost {MAX_COMMIT_TRIES} races to other routers; its batch "
                  "goes with the key's next request", file=sys.stderr, flush=True)
        except (StateStoreUnavailable, StateStoreError, Blocked):
            pass  # the copy was dropped (read again by the key's next request), or the key is flagged already
        finally:
            settled, copy.settled = copy.settled, None
            settled.set_result(None)

    async def _catch_up(self, client: str, copy: _Copy) -> None:
        """What the store holds and the copy lacks: only what was appended since, or the whole state (a new copy,
        a new epoch)."""
        s = copy.state
        args = [copy.epoch, s.n_distances]
        for c, g in s.groups.items():
            args += [c, g.n]
        version, epoch, flagged_at, meta, whole, distances, *groups = await self.store.run_parts(
            self._fetch, self._keys_of(client)[0] + self._keys_of(client)[2] + bulks(*args), 4 + len(args))
        if whole:
            s = copy.state = _ClientState()
            copy.dim, copy.sums = None, {}
        copy.version, copy.epoch = int(version), epoch
        s.flagged_at = int(flagged_at) if flagged_at else None
        if not meta:
            return
        m = orjson.loads(meta)
        copy.dim = m["dim"]
        d = np.frombuffer(distances, np.float32).tolist()
        if len(d) < m["nd"] - s.n_distances:  # more than the store keeps: its last `window`, all a test reads
            s.distances = d
        else:
            s.distances += d
            if len(s.distances) > 2 * self.prada.window:
                del s.distances[: -self.prada.window]
        s.n_distances, s.tested_at, s.w, s.samples = m["nd"], m["ta"], m["w"], m["s"]
        for c, rows in zip(groups[::2], groups[1::2]):
            sums, rows = m["g"][c.decode()], np.frombuffer(rows, np.float32).reshape(-1, copy.dim)
            g = s.groups.get(int(c))
            if g is None:
                s.groups[int(c)] = _Group.restore(rows, *sums)
            else:
                g.extend(rows)
                g.d_n, g.d_sum, g.d_sumsq, g.threshold = sums
        copy.sums = m["g"]
