"""Per-client state in the store (settings ``state_store``): the store-backed counterpart of the per-client bound
on requests in flight (router/admission.py) and of the client defenses' ``precheck``/``admit``/``observe``.

One request costs one round trip where its defenses allow: ``admit`` (one script, router/admission_scripts.py:
the key's slots in flight, query_budget's total and token bucket, PRADA's flag and throttle bucket, checked
together and taken together: a refused request takes nothing; its reply also carries the key's PRADA version and
flag). What follows is sent without waiting for its reply (router/state_store.py): the slot's release, the
receipt's deletion, and PRADA's commit under ``log`` (a key's batches staged on the worker and sent together
within ``state_store_prada_commit_ms``) and ``throttle`` (router/defenses/prada_store.py). Under ``block`` the
answer waits for PRADA's commit (a second round trip: the request whose batch crosses the threshold must be
withheld); B4B's coverage is one more (encoder zoos).

A slot in flight is a member of the key's sorted set scored by its lease deadline: a router that dies with
requests in flight never releases them, and the next admission of the key drops members whose lease has passed.
``precheck`` runs before the body is read and asks nothing of the store: it refuses from what this worker's
last answers said (a blocked key or a spent budget for ``state_store_recheck_ms``, then the store is asked again;
an empty bucket until it refills).

Where admission decides only the slot and the budget (PRADA off or ``log``, whose flag refuses nothing; no B4B),
held slots and budget leases admit most requests with no round trip. Held slots (``state_store_slot_hold_ms``,
router/slot_holds.py): a key's slot stays with the worker for the key's next request there, released once idle
that long; the store counts it meanwhile, so the bound holds. Budget leases
(``state_store_budget_lease_samples``; with a slot bound only together with held slots) take a key's samples in
chunks (LEASE: charged at once, recorded in
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
from .defenses.token_bucket import BatchOverBurst, retry_after_s
from .admission_scripts import ADMIT, GIVE_BACK, RECEIPT_MS, UNDO
from .state_store import StateStore, StateStoreReplyLost, StateStoreUnavailable, bulk, bulks, encode, key

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
                 prada_commit_samples: int = 256, slot_hold_ms: float = 0.0, longest_request_ms: float = 0.0):
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
        # admission decides only the slot and the budget (PRADA off or log, whose flag refuses nothing; no B4B):
        # held slots and budget leases can then admit most requests with no round trip
        simple = self.b4b is None and (p is None or p.action == "log")
        self.holds = self.leases = None
        self._slots: dict[str, object] = {}  # request id -> the held slot it uses
        if slot_hold_ms and self.max_in_flight and simple and (q is None or budget_lease_samples):
            from .slot_holds import SlotHolds

            # a request may also wait for budget leases out elsewhere (up to 1.5 lease times) holding its slot
            waits_ms = 1.5 * budget_lease_ms if q is not None else 0.0
            self.holds = SlotHolds(store, self.max_in_flight, slot_lease_ms, longest_request_ms + waits_ms,
                                   slot_hold_ms)
        if budget_lease_samples and q is not None and simple and (not self.max_in_flight or self.holds):
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
        if self.holds is not None:
            return await self._admit_holding(client, request_id, n_samples)
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

    async def _admit_holding(self, client: str, request_id: str, n: int) -> dict:
        """A slot held here or a new one from the store (router/slot_holds.py), then the samples from a lease
        (or, with no budget, nothing more). Refused for the budget: the slot goes back to this worker's hold."""
        holds = self.holds
        slot = holds.take(client)
        if slot is None:
            holds.key_for(client, key(self.prefix, client, "in_flight"),
                          key(self.prefix, client, "prada") if self.prada else None)
            try:
                slot, reply = await holds.acquire(client, request_id)
            except StateStoreUnavailable as e:
                if self.fail_open:
                    return dict(UNAVAILABLE)
                raise e
            if slot is None:
                raise self._refusal(client, reply[0].decode(), reply[1], n)
            if len(reply) > 3:  # the key's prada version and flag as the store has them now
                self._prada_state.seen(client, int(reply[3]), reply[4])
        fields = {}
        if self.leases is not None:
            try:
                if not self.leases.take(client, n):
                    fields = await self._admit_leasing(client, request_id, n)
            except BaseException:
                holds.put_back(client, slot)
                raise
        if "state_store" in fields:  # served fail-open: not charged, so never left; the slot goes back now
            holds.put_back(client, slot)
        else:
            self._slots[request_id] = slot
        return fields

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
        if self.leases is not None or self._prada_state is not None or self.holds is not None:
            if self.holds is not None:
                self.holds.release_all()
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
        store cannot be reached the lease frees it later. A held slot goes back to this worker's hold."""
        if self.holds is not None:
            slot = self._slots.pop(request_id, None)
            if slot is not None:
                self.holds.put_back(client, slot)
            return
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
