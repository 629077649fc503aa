"""Budget leases (router setting ``state_store_budget_lease_samples``): where query_budget is all that admission
decides, a worker takes a key's samples from the store in chunks and admits the key's next requests from its chunk
with no round trip (router/shared_state.py asks ``take`` first, ``ask`` when it finds nothing usable).

LEASE takes the request's own samples and a lease of up to the setting's size beyond them, charged at once (spent
and tokens), and records the lease in the key's budget hash (``l:<id>`` -> units and deadline, the store's clock
plus ``state_store_budget_lease_ms``). The lease shrinks as the key runs low: at most an eighth of the unspent
total, a quarter of the burst and of the bucket's tokens. The worker stops using it LEASE_MARGIN of its time before
the deadline (its own clock, from before the script was sent) or when it is used up, and sends the unused samples
back without waiting (RETURN, also at shutdown): the record is deleted, so a return counts once. A record still
there LEASE_GRACE of the lease time after its deadline is marked not back in time by the next refusal: no longer
out, its samples stay spent unless its holder's late return still comes (within LATE_RETURN_MS): a holder that
died loses its lease, one that was only late gets it back, and no return counts twice.

Exactness: every sample served was charged before it was served, and a lease's unused samples are credited back
at most once, by its holder, which has stopped using them; so nothing is ever served over ``max_samples``. A
request refused for the total while leases are out that would make room waits for the first of them to end and
asks again (``ask``), its samples recorded so that leases granted meanwhile leave room for them; it is refused
only when it would not fit even if every live lease came back unused, or after one lease time and its grace.
"""

from __future__ import annotations

import asyncio
import secrets

from .defenses.token_bucket import LUA_TOKENS_NOW, lua_take_tokens_or_refuse
from .state_store import StateStore, bulks

LEASE = """
-- A budget lease (state_store_budget_lease_samples): this request's samples and up to ARGV[6] more, which the
-- worker then admits from without asking. The lease's units are charged at once (spent and tokens) and recorded
-- as out until they come back unused (RETURN) or the holder's deadline plus the grace passes (then they stay
-- spent: a router that died loses its lease, never gives budget twice).
-- KEYS: 1 query budget (hash: spent, tokens, at, and per lease out 'l:<id>' -> '<units>:<deadline ms>'),
--       2 this request's receipt (as ADMIT's), 3 prada (hash, read when ARGV[10] is '1')
-- ARGV: 1 lease id, 2 samples, 3 max samples (0: none), 4 rate samples/s (0: none), 5 burst, 6 most units leased,
--       7 lease ms, 8 grace ms, 9 receipt ms, 10 prada on ('1' or ''), 11 ms a lease not back in time waits for
--       its holder's late return
-- Reply: {'ok', units leased beyond the request's own[, prada version, flag]}; {'leased', ms to wait, spent less
-- the units out}: refused for the total, but it would fit if the leases out came back, so ask again after the
-- first of them ends; or a refusal as ADMIT's ('budget' with spent less the units out: what is certainly used)
if redis.call('GET', KEYS[2]) == 'undone' then return {'undone', 0} end
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local n, max_samples, rate, burst = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local most, lease, grace = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local function out_now()  -- units leased out and still live, and the ms until the first of them ends
  local out, wait = 0, nil
  local h = redis.call('HGETALL', KEYS[1])
  for i = 1, #h, 2 do
    if string.sub(h[i], 1, 2) == 'l:' then
      local units, deadline, rest = string.match(h[i + 1], '^(%d+):(%d+)(.*)$')
      units, deadline = tonumber(units), tonumber(deadline)
      if rest == ':x' then  -- counted spent already; kept for a late return until ARGV[11] ms past its deadline
        if now > deadline + tonumber(ARGV[11]) then redis.call('HDEL', KEYS[1], h[i]) end
      elseif now > deadline + grace then
        -- not back in time (its holder died, stalled or lost its connection): no longer out, so refusals stop
        -- waiting for it, and its units stay spent unless its holder's return still comes (RETURN credits it)
        redis.call('HSET', KEYS[1], h[i], h[i + 1] .. ':x')
      else
        out = out + units
        local w = (now < deadline and deadline or deadline + grace) - now
        wait = wait and math.min(wait, w) or w
      end
    end
  end
  return out, wait
end
local b = redis.call('HMGET', KEYS[1], 'spent', 'tokens', 'at')
local spent, tokens = tonumber(b[1]) or 0, nil
local waiting = 0  -- requests refused while leases were out wait for them: 'w' -> '<their samples>:<until ms>'
local w = redis.call('HGET', KEYS[1], 'w')
if w then
  local wn, wuntil = string.match(w, '^(%d+):(%d+)$')
  if now < tonumber(wuntil) then waiting = tonumber(wn) end
end
if max_samples > 0 and spent + n > max_samples then
  local out, wait = out_now()
  if out > 0 and spent - out + n <= max_samples then
    -- the samples every request waiting now wants (a retry counts again: it can only leave leases smaller)
    redis.call('HSET', KEYS[1], 'w', math.min(max_samples, waiting + n) .. ':' .. math.floor(now + lease + grace))
    return {'leased', tostring(wait), spent - out}
  end
  return {'budget', spent - out}
end
TAKE_TOKENS_OR_REFUSE
-- the lease shrinks with what is left: an eighth of the unspent total, a quarter of the burst and of the tokens
local size = most
if max_samples > 0 then size = math.min(size, math.floor((max_samples - spent) / 8), max_samples - spent - waiting) end
if rate > 0 then size = math.min(size, math.floor(burst / 4), math.floor(tokens / 4)) end
local extra = math.max(0, size - n)
if max_samples > 0 then redis.call('HSET', KEYS[1], 'spent', spent + n + extra) end
if rate > 0 then redis.call('HSET', KEYS[1], 'tokens', tokens - n - extra, 'at', now) end
if extra > 0 then
  if redis.call('HLEN', KEYS[1]) > 32 then out_now() end  -- dead holders' records, on keys never refused
  redis.call('HSET', KEYS[1], 'l:' .. ARGV[1], extra .. ':' .. math.floor(now + lease))
end
redis.call('SET', KEYS[2], n + extra, 'PX', ARGV[9])
if ARGV[10] == '1' then
  local p = redis.call('HMGET', KEYS[3], 'ver', 'flagged_at')
  return {'ok', extra, p[1] or '0', p[2] or ''}
end
return {'ok', extra}
""".replace("TAKE_TOKENS_OR_REFUSE\n", lua_take_tokens_or_refuse("KEYS[1]"))

RETURN = """
-- A lease's unused units back (its holder stops using it first). Only while its record is there (live, or marked
-- not back in time: ':x'), so a return counts once; an undone lease, or one gone LATE_RETURN_MS after its
-- deadline, gives nothing back.
-- KEYS: 1 query budget. ARGV: 1 lease id, 2 unused units, 3 burst, 4 rate samples/s (0: none)
if redis.call('HDEL', KEYS[1], 'l:' .. ARGV[1]) == 0 then return 0 end
local u, burst, rate = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if u <= 0 then return 1 end
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local b = redis.call('HMGET', KEYS[1], 'spent', 'tokens', 'at')
if b[1] then redis.call('HSET', KEYS[1], 'spent', math.max(0, tonumber(b[1]) - u)) end
if rate > 0 then
  local tokens = TOKENS_NOW
  redis.call('HSET', KEYS[1], 'tokens', math.min(burst, tokens + u), 'at', now)
end
return 1
""".replace("TOKENS_NOW", LUA_TOKENS_NOW)
LEASE_MARGIN = 0.1  # a worker stops using a lease this fraction of the lease time before its deadline
LEASE_GRACE = 0.5  # the store counts an unreturned lease as spent this fraction of the lease time after it
LATE_RETURN_MS = 600_000  # and still credits its holder's return this long after its deadline (then forgets it)


class _Lease:
    """Units of a key's budget this worker took ahead (LEASE): ``left`` of them, usable until ``until`` (loop
    time), then given back (RETURN) by ``timer``, or at once when used up."""

    __slots__ = ("id", "left", "until", "timer")

    def __init__(self, lease_id: str, left: int, until: float):
        self.id, self.left, self.until, self.timer = lease_id, left, until, None


class BudgetLeases:
    """One worker's leases, one a key at most."""

    def __init__(self, store: StateStore, budget, most: int, lease_ms: float, prada_on: bool, receipt_ms: int):
        self.store, self.lease_s = store, lease_ms / 1e3
        self.leases: dict[str, _Lease] = {}
        self.loop = None  # the event loop the leases' times are on (set with the first lease)
        self.tag = secrets.token_hex(6)  # lease ids unique across workers: this tag + the request id
        self._lease, self._return = store.script(LEASE), store.script(RETURN)
        self._args = bulks(budget.max_samples or 0, budget.samples_per_s or 0, budget.burst_samples, most, lease_ms,
                           lease_ms * LEASE_GRACE, receipt_ms, "1" if prada_on else "", LATE_RETURN_MS)
        self._return_args = bulks(budget.burst_samples, budget.samples_per_s or 0)
        self._budget_keys: dict[str, bytes] = {}  # client -> its budget key, encoded

    def take(self, client: str, n: int) -> bool:
        """``n`` samples from this worker's live lease of the key, if it holds that many."""
        lease = self.leases.get(client)
        if lease is None or lease.left < n or self.loop.time() >= lease.until:
            return False
        lease.left -= n
        if not lease.left:
            self.end(client, lease)
        return True

    async def ask(self, client: str, request_id: str, n: int, budget_key: bytes, receipt: bytes, prada_key: bytes):
        """LEASE's reply for this request (``{'ok', ...}`` installs the new lease), None when a lease that another
        request of the key got meanwhile served it, or the last ``{'leased', ...}`` when the wait is given up.
        A refusal for the total while other workers hold leases that would make room: wait for the first of them
        to end and ask again. The refusal records the wait in the store ('w'), so no lease granted meanwhile eats
        into the samples it waits for, and every lease out then is back or counted spent by its deadline and
        grace: one lease time and its grace bounds the wait (375 ms at the defaults; the setting is at most 5 s, so
        a request is never held longer than 7.5 s this way)."""
        loop = self.loop = asyncio.get_running_loop()  # kept: each get_running_loop() is a getpid() system call
        self._budget_keys[client] = budget_key
        parts = bulks(3) + budget_key + receipt + prada_key + bulks(self.tag + request_id, n) + self._args
        give_up = None
        while True:
            old = self.leases.get(client)
            if old is not None:
                if self.take(client, n):
                    return None
                self.end(client, old)  # too few units left, or past its time: back first (sent before)
            sent = loop.time()
            reply = await self.store.run_parts(self._lease, parts, 15)
            if reply[0] != b"leased":
                break
            wait_s = max(0.0, float(reply[1])) / 1e3 + 0.002
            if give_up is None:
                give_up = loop.time() + self.lease_s * (1 + LEASE_GRACE) + 0.01
            if loop.time() + wait_s > give_up:
                return reply
            await asyncio.sleep(wait_s)
        if reply[0] == b"ok" and int(reply[1]):
            # its deadline is the store's clock at the script + lease ms; from the send on this clock is earlier
            lease = _Lease(self.tag + request_id, int(reply[1]), sent + self.lease_s * (1 - LEASE_MARGIN))
            current = self.leases.get(client)
            if current is not None:  # another request of the key leased meanwhile: one lease a key, the other back
                self.end(client, current)
            self.leases[client] = lease
            lease.timer = loop.call_at(lease.until, self.end, client, lease)
        return reply

    def end(self, client: str, lease: _Lease) -> None:
        """Stop using the lease and give its unused units back (not waited for; while the store is unreachable
        it waits in the backlog, and counts only if it arrives within LATE_RETURN_MS of the lease's deadline)."""
        if self.leases.get(client) is lease:
            del self.leases[client]
        if lease.timer is not None:
            lease.timer.cancel()
            lease.timer = None
        left, lease.left = lease.left, 0
        # EVAL, not EVALSHA: nobody reads the reply, so a NOSCRIPT (a restarted store) would lose the return
        self.store.send_payload(self._return.command(bulks(1) + self._budget_keys[client] + bulks(lease.id, left)
                                                     + self._return_args, 6, cached=False))

    def end_key(self, client: str) -> None:
        lease = self.leases.get(client)
        if lease is not None:
            self.end(client, lease)

    def end_all(self) -> None:
        for client, lease in list(self.leases.items()):
            self.end(client, lease)
