"""Per-client state in the store (settings ``state_store``): the store-backed counterpart of the per-client bound
on requests in flight (router/admission.py) and of the client defenses' ``precheck``/``admit``/``observe``.

One request costs one round trip where its defenses allow: ``admit`` (one script: the key's slots in flight,
query_budget's total and token bucket, PRADA's flag and throttle bucket, checked together and taken together: a
refused request takes nothing; its reply also carries the key's PRADA version and flag). What follows is sent
without waiting for its reply and rides with the next command sent, or leaves within 2 ms (router/state_store.py):
the slot's release, the receipt's deletion, and PRADA's commit under ``log`` and ``throttle`` (router/defenses/
prada_store.py). Under ``block`` the answer waits for PRADA's commit (a second round trip: the request whose batch
crosses the threshold must be withheld); B4B's coverage is one more (encoder zoos).

A slot in flight is a member of the key's sorted set scored by its lease deadline: a router that dies with
requests in flight never releases them, and the next admission of the key drops members whose lease has passed.
``precheck`` runs before the body is read and asks nothing of the store: it refuses from what this worker's
last answers said (a blocked key or a spent budget for ``state_store_recheck_ms``, then the store is asked again;
an empty bucket until it refills).

Budget leases (``state_store_budget_lease_samples``): where query_budget is all that admission decides (no slot
bound, PRADA off or ``log``, no B4B) a worker takes a key's samples in chunks (LEASE: charged at once, recorded in
the key's budget hash with a deadline on the store's clock) and admits from its chunk with no round trip; the unused
samples go back (RETURN, not waited for) at the deadline less a margin, when used up, and at shutdown. A lease not
back by its deadline plus a grace stays spent unless its holder's late return still comes (a holder that died
loses its lease, none gives budget twice). A request refused for the total while leases are out that would make
room waits for them and asks again. Under PRADA
``log`` the key's version and flag then reach the worker's copy with each new lease (a copy behind meanwhile finds
out from its commit's conflict, as a copy whose key another router wrote).

Store unreachable: fail closed (503 state_store_unavailable, Retry-After) unless ``state_store_fail_open``, which
serves without the per-client defenses and records ``state_store: "unavailable"`` in the audit record.
"""

from __future__ import annotations

import asyncio
import time

from .errors import TooManyRequests
from .errors import RouterError
from .defenses.prada import BLOCKED, Blocked
from .defenses.query_budget import BudgetExhausted, RateLimited
from .defenses.token_bucket import LUA_TOKENS_NOW, BatchOverBurst, retry_after_s
from .state_store import StateStore, StateStoreReplyLost, StateStoreUnavailable, bulk, bulks, encode, key

ADMIT = """
-- KEYS: 1 slots in flight (sorted set: request id -> lease deadline ms), 2 query budget (hash), 3 prada (hash),
--       4 this request's receipt (what it took, for an undo if its reply is lost; 'undone': the undo came first)
-- ARGV: 1 request id, 2 samples, 3 max in flight per client (0: none), 4 lease ms, 5 max samples (0: none),
--       6 rate samples/s (0: none), 7 burst samples, 8 prada action ('' when prada is off), 9 throttle samples/s,
--       10 receipt ms
-- Reply: {verdict, value}, and when admitted with prada on also the key's prada version and flag ('' none), so
-- that a worker's copy of the key's prada state can tell that it is behind (router/defenses/prada_store.py)
if redis.call('GET', KEYS[4]) == 'undone' then return {'undone', 0} end
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local n, max_in_flight, lease = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local max_samples, rate, burst = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local p = ARGV[8] ~= '' and redis.call('HMGET', KEYS[3], 'flagged_at', 'tt', 'ta', 'ver')
if p and p[1] and ARGV[8] == 'block' then return {'blocked', 0} end  -- for good: before anything transient
if max_in_flight > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)  -- leases of requests a dead router never released
  local busy = redis.call('ZCARD', KEYS[1])
  if busy >= max_in_flight then return {'in_flight', busy} end
end
local b = redis.call('HMGET', KEYS[2], 'spent', 'tokens', 'at')
local spent, tokens = tonumber(b[1]) or 0, nil
if max_samples > 0 and spent + n > max_samples then return {'budget', spent} end
if rate > 0 then
  tokens = TOKENS_NOW
  if tokens < n then
    redis.call('HSET', KEYS[2], 'tokens', tokens, 'at', now)
    return {'rate', tostring((n - tokens) / rate)}
  end
end
local throttle = nil
if p and p[1] and ARGV[8] == 'throttle' then
  local trate = tonumber(ARGV[9])
  if n > trate then return {'throttle_burst', 0} end
  throttle = math.min(trate, (tonumber(p[2]) or trate) + (now - (tonumber(p[3]) or now)) / 1000 * trate)
  if throttle < n then
    redis.call('HSET', KEYS[3], 'tt', throttle, 'ta', now)
    return {'throttled', tostring((n - throttle) / trate)}
  end
end
if max_in_flight > 0 then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], math.ceil(lease))
end
if max_samples > 0 then redis.call('HSET', KEYS[2], 'spent', spent + n) end
if rate > 0 then redis.call('HSET', KEYS[2], 'tokens', tokens - n, 'at', now) end
if throttle then redis.call('HSET', KEYS[3], 'tt', throttle - n, 'ta', now) end
redis.call('SET', KEYS[4], n, 'PX', ARGV[10])
if p then return {'ok', spent + n, p[4] or '0', p[1] or ''} end
return {'ok', spent + n}
""".replace("TOKENS_NOW", LUA_TOKENS_NOW)

# The undo of an admission whose reply was lost (the store stalled past the socket timeout, the connection was
# cut): it may have run, so what it took goes back, whichever of the two reaches the store first.
UNDO = """
-- KEYS: 1 slots in flight, 2 query budget, 3 the request's receipt. ARGV: 1 request id, 2 burst, 3 rate samples/s
-- (0: none), 4 receipt ms, 5 the budget lease the admission took ('' or absent: none; router/budget_leases.py)
local r = redis.call('GET', KEYS[3])
redis.call('SET', KEYS[3], 'undone', 'PX', ARGV[4])
if not r or r == 'undone' then return 0 end
local n, burst, rate = tonumber(r), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[5] and ARGV[5] ~= '' then redis.call('HDEL', KEYS[2], 'l:' .. ARGV[5]) end  -- its units come back below
local b = redis.call('HMGET', KEYS[2], 'spent', 'tokens', 'at')
if b[1] then redis.call('HSET', KEYS[2], 'spent', math.max(0, tonumber(b[1]) - n)) end
if rate > 0 and b[2] then redis.call('HSET', KEYS[2], 'tokens', math.min(burst, tonumber(b[2]) + n)) end
return 1
"""
RECEIPT_MS = 3_600_000  # an undo is honoured up to an hour after the admission it undoes

GIVE_BACK = """
-- KEYS: 1 query budget (hash). ARGV: 1 samples, 2 burst, 3 'refund' (spent and tokens back) or 'drain' (tokens
-- out, down to 0: a malformed body's penalty), 4 rate samples/s (0: none)
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local n, burst, rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'spent', 'tokens', 'at')
if ARGV[3] == 'refund' and b[1] then redis.call('HSET', KEYS[1], 'spent', math.max(0, tonumber(b[1]) - n)) end
if rate > 0 then
  local tokens = TOKENS_NOW
  tokens = ARGV[3] == 'refund' and math.min(burst, tokens + n) or math.max(0, tokens - n)
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
end
return 1
""".replace("TOKENS_NOW", LUA_TOKENS_NOW)

REFUSAL_RECHECK_MS = 5_000.0  # settings.state_store_recheck_ms: how long a flag or a spent budget is remembered
UNAVAILABLE = {"state_store": "unavailable: served without per-client defenses (state_store_fail_open)"}


class _ClientKeys:
    """One key's store keys, encoded once (the API keys are the settings', so this stays small)."""

    __slots__ = ("admit", "in_flight", "receipt", "budget", "prada")

    def __init__(self, prefix: str, client: str):
        self.in_flight = bulk(key(prefix, client, "in_flight"))
        self.budget, self.prada = bulk(key(prefix, client, "budget")), bulk(key(prefix, client, "prada"))
        self.admit = bulks(4) + self.in_flight + self.budget + self.prada
        self.receipt = key(prefix, client, "admitted:")  # + the request id


class SharedClientState:
    """What the router asks per request when per-client state lives in the store (one per worker)."""

    def __init__(self, store: StateStore, defenses: list, max_in_flight_per_client: int | None,
                 slot_lease_ms: float, fail_open: bool, prefix: str, recheck_ms: float = REFUSAL_RECHECK_MS,
                 budget_lease_samples: int = 0, budget_lease_ms: float = 250.0, prada_commit_ms: float = 0.0,
                 prada_commit_samples: int = 256):
        self.store, self.fail_open, self.prefix = store, fail_open, prefix
        self.budget = next((d for d in defenses if d.name == "query_budget"), None)
        self.prada = next((d for d in defenses if d.name == "prada"), None)
        self.b4b = next((d for d in defenses if d.name == "b4b"), None)
        self.max_in_flight = max_in_flight_per_client or 0
        self.lease_ms = slot_lease_ms
        self.recheck_s = recheck_ms / 1e3
        self._admit = store.script(ADMIT)
        self._give_back = store.script(GIVE_BACK)
        q, p = self.budget, self.prada
        self._admit_args = bulks(self.max_in_flight, self.lease_ms, (q.max_samples or 0) if q else 0,
                                 (q.samples_per_s or 0) if q else 0, q.burst_samples if q else 1,
                                 p.action if p else "", p.throttle_samples_per_s if p else 0, RECEIPT_MS)
        self._client_keys: dict[str, _ClientKeys] = {}
        self.refused: dict[str, tuple[float, RouterError]] = {}  # client -> (until monotonic s, refusal)
        self._prada_state = self._b4b_state = None
        if self.prada is not None:
            from .defenses.prada_store import StorePrada

            self._prada_state = StorePrada(self.prada, store, prefix, prada_commit_ms, prada_commit_samples)
        if self.b4b is not None:
            from .defenses.b4b_store import StoreB4B

            self._b4b_state = StoreB4B(self.b4b, store, prefix)
        self._tasks: set = set()
        # budget leases: only where query_budget is all that admission decides (no slots, PRADA off or log, no B4B)
        self.leases = None
        if budget_lease_samples and q is not None and not self.max_in_flight and self.b4b is None and (
                p is None or p.action == "log"):
            from .budget_leases import BudgetLeases

            self.leases = BudgetLeases(store, q, budget_lease_samples, budget_lease_ms, p is not None, RECEIPT_MS)

    def _keys_of(self, client: str) -> _ClientKeys:
        k = self._client_keys.get(client)
        if k is None:
            k = self._client_keys[client] = _ClientKeys(self.prefix, client)
        return k

    def precheck(self, client: str) -> None:
        """Before the body: the refusal this worker last saw for the key, while it still holds (a flag or a spent
        budget for ``recheck_ms``, then the store is asked again: an operator who clears the key is heard)."""
        held = self.refused.get(client)
        if held is not None:
            if time.monotonic() < held[0]:
                raise held[1].again()
            del self.refused[client]

    async def admit(self, client: str, request_id: str, n_samples: int) -> dict:
        """Take a slot and the samples, or raise the refusal; under fail-open an unreachable store admits with
        the audit fields that say so. Returns the audit fields ({} normally)."""
        q = self.budget
        if not (self.max_in_flight or q or self.prada):
            return {}  # nothing to check or take (b4b alone): no round trip
        if q is not None and q.samples_per_s is not None and n_samples > q.burst_samples:
            raise BatchOverBurst(f"a batch of {n_samples} samples exceeds this API key's burst of "
                                 f"{q.burst_samples:g} samples; send smaller batches")
        if self.leases is not None:
            if self.leases.take(client, n_samples):
                return {}  # from this worker's lease: no round trip
            return await self._admit_leasing(client, request_id, n_samples)
        k = self._keys_of(client)
        receipt = k.receipt + request_id
        try:
            reply = await self.store.run_parts(self._admit, k.admit + bulks(receipt, request_id, n_samples)
                                               + self._admit_args, 15)
        except StateStoreUnavailable as e:
            return self._unavailable(e, client, receipt, request_id)
        if reply[0] != b"ok":
            raise self._refusal(client, reply[0].decode(), reply[1], n_samples)
        if len(reply) > 2:  # the key's prada version and flag as the store has them now
            self._prada_state.seen(client, int(reply[2]), reply[3])
        return {}

    def _unavailable(self, e: StateStoreUnavailable, client: str, receipt: str, request_id: str,
                     lease_id: str = "") -> dict:
        """Fail open or closed; an admission whose reply was lost may have run: take back what it took (its slot,
        samples and lease) once the store answers."""
        if isinstance(e, StateStoreReplyLost):
            q = self.budget
            self.store.send_payload(encode(b"EVAL", UNDO, 3, key(self.prefix, client, "in_flight"),
                                           key(self.prefix, client, "budget"), receipt, request_id,
                                           q.burst_samples if q else 1, (q.samples_per_s or 0) if q else 0,
                                           RECEIPT_MS, lease_id))
        if self.fail_open:
            return dict(UNAVAILABLE)
        raise e

    async def _admit_leasing(self, client: str, request_id: str, n: int) -> dict:
        """This request's samples and a new lease from the store (router/budget_leases.py)."""
        k = self._keys_of(client)
        receipt = k.receipt + request_id
        try:
            reply = await self.leases.ask(client, request_id, n, k.budget, bulk(receipt), k.prada)
        except StateStoreUnavailable as e:
            return self._unavailable(e, client, receipt, request_id, self.leases.tag + request_id)
        if reply is None:
            return {}  # from a lease another request of the key took meanwhile
        if reply[0] == b"leased":  # the leases out did not come back in time: refused, nothing taken
            raise self._refusal(client, "budget", reply[2], n)
        if reply[0] != b"ok":
            raise self._refusal(client, reply[0].decode(), reply[1], n)
        self.store.send_payload(b"*2\r\n$3\r\nDEL\r\n%b" % bulk(receipt))  # the reply came: no undo will need it
        if len(reply) > 2:
            self._prada_state.seen(client, int(reply[2]), reply[3])
        return {}

    async def close(self) -> None:
        """At shutdown: every lease's unused samples back and PRADA's staged batches, sent before the connection
        closes."""
        if self._prada_state is not None:
            await self._prada_state.drain()
        if self.leases is not None or self._prada_state is not None:
            if self.leases is not None:
                self.leases.end_all()
            try:
                await self.store.call("PING")  # replies in order: the returns have reached the store
            except (StateStoreUnavailable, RouterError):
                pass

    def _refusal(self, client: str, verdict: str, value, n: int) -> RouterError:
        """The error for a refused admission; those that will hold for a while are kept for ``precheck``."""
        now = time.monotonic()
        if verdict == "undone":  # an undo for this very request reached the store first: it was already refused
            return StateStoreUnavailable()
        if verdict == "in_flight":
            return TooManyRequests(f"{value} of your requests are in flight, the limit per client; retry later")
        if verdict == "budget":
            spent, cap = int(value), self.budget.max_samples
            if spent >= cap:
                self.refused[client] = (now + self.recheck_s,
                                        BudgetExhausted(f"this API key has used all of its {cap} samples"))
            return BudgetExhausted(f"this API key has used {spent} of its {cap} samples; a batch of {n} would "
                                   "exceed it")
        if verdict == "blocked":
            e = Blocked(BLOCKED)
            self.refused[client] = (now + self.recheck_s, e)
            return e
        if verdict == "throttle_burst":
            return BatchOverBurst(f"a batch of {n} samples exceeds this flagged API key's burst of "
                                  f"{self.prada.throttle_samples_per_s:g} samples; send smaller batches")
        wait_s = float(value)
        if verdict == "rate":
            e = RateLimited(f"over this API key's rate of {self.budget.samples_per_s:g} samples/s; retry later",
                            retry_after=retry_after_s(wait_s))
        else:
            e = RateLimited("this API key is throttled: its query stream was flagged as model extraction",
                            retry_after=retry_after_s(wait_s))
        rate = self.budget.samples_per_s if verdict == "rate" else self.prada.throttle_samples_per_s
        # precheck refuses while not even one sample's token is there, as the in-process bucket does
        self.refused[client] = (now + max(0.0, wait_s - (n - 1) / rate), e)
        return e

    async def observe(self, client: str, x, labels) -> dict:
        if self._prada_state is None:
            return {}
        try:
            return await self._prada_state.observe(client, x, labels)
        except StateStoreUnavailable:
            if self.fail_open:
                return dict(UNAVAILABLE)
            raise

    async def perturb_client_output(self, client: str, emb):
        if self._b4b_state is None:
            return emb, {}
        try:
            return await self._b4b_state.perturb_client_output(client, emb)
        except StateStoreUnavailable:
            if self.fail_open:
                return emb, dict(UNAVAILABLE)
            raise

    def leave(self, client: str, request_id: str) -> None:
        """Release the slot without waiting for the store's reply (no round trip on the request's path); when the
        store cannot be reached the lease frees it later."""
        if self.leases is not None or not (self.max_in_flight or self.budget or self.prada):
            return  # no slot, and no receipt left (leases delete theirs with the reply), or admit took nothing
        k = self._keys_of(client)
        if self.max_in_flight:
            self.store.send_payload(b"*3\r\n$4\r\nZREM\r\n%b%b" % (k.in_flight, bulk(request_id)))
        self.store.send_payload(b"*2\r\n$3\r\nDEL\r\n%b" % bulk(k.receipt + request_id))

    def penalize(self, client: str, n_samples: int) -> None:
        """A malformed body's rows out of the key's rate (in the background: the request is refused anyway)."""
        if self.budget is not None and self.budget.samples_per_s is not None:
            if self.leases is not None:  # the key's lease back first (sent before the drain): its tokens drained too
                self.leases.end_key(client)
            self._background(self._give(client, n_samples, "drain"))

    def refund(self, client: str, n_samples: int) -> None:
        """Undo ``admit``'s samples for a request that was never answered (its audit record could not be written)."""
        self.refused.pop(client, None)
        if self.budget is not None:
            self._background(self._give(client, n_samples, "refund"))

    async def _give(self, client: str, n: int, how: str) -> None:
        q = self.budget
        try:
            await self.store.run(self._give_back, [key(self.prefix, client, "budget")],
                                 [n, q.burst_samples, how, q.samples_per_s or 0])
        except StateStoreUnavailable:
            pass

    def _background(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # a reference, so the task is not collected before it runs
        task.add_done_callback(self._tasks.discard)
