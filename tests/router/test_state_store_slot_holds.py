"""Held slots (state_store_slot_hold_ms) against a real valkey-server, no router: a worker keeps a key's slot for
the key's next request there, the store counts every held slot (the bound holds across workers), an idle slot is
released after the hold, a slot is not reused once its lease could lapse during a request, and a refusal leaks no
slot."""

import asyncio
import itertools
import random

from router.defenses import make_defense
from router.defenses.query_budget import BudgetExhausted
from router.errors import TooManyRequests
from router.shared_state import SharedClientState
from router.state_store import StateStore

PREFIXES = (f"h{i}" for i in itertools.count())
IDS = (f"r{i}" for i in itertools.count())


def _worker(url, prefix, max_in_flight=4, hold_ms=50.0, lease_ms=60_000.0, longest_ms=10_000.0, budget=None):
    defenses = [make_defense({"name": "query_budget", **budget})] if budget else []
    st = StateStore(url, 1000.0, 1000.0, 100.0)  # generous: a busy CI host must not fail a connect
    w = SharedClientState(st, defenses, max_in_flight, lease_ms, False, prefix, 5000.0, 64 if budget else 0,
                          250.0, slot_hold_ms=hold_ms, longest_request_ms=longest_ms)
    assert w.holds is not None
    w.asked = 0  # slots taken from the store (SLOT scripts run)
    run_parts = st.run_parts

    async def counted(script, parts, count):
        if script is w.holds._script:
            w.asked += 1
        return await run_parts(script, parts, count)

    st.run_parts = counted
    return w


async def _slots(st: StateStore, prefix: str, client: str = "k") -> int:
    return int(await st.call("ZCARD", f"{prefix}:{{{client}}}:in_flight"))


def test_a_keys_sequential_requests_share_one_held_slot_released_once_idle(store):
    """50 sequential requests of one key on one worker take one slot from the store; 150 ms after the last one
    (hold 50 ms) the key has no slot in the store. Catches a slot taken and released in the store every request
    (50 scripts: the round trip this removes) and a held slot never released (the key would keep it for the
    60 s lease, counted against its bound at every other worker)."""
    prefix = next(PREFIXES)

    async def run():
        w = _worker(store.url, prefix)
        for _ in range(50):
            rid = next(IDS)
            await w.admit("k", rid, 1)
            w.leave("k", rid)
        held = await _slots(w.store, prefix)
        await asyncio.sleep(0.15)
        after = await _slots(w.store, prefix)
        await w.store.close()
        return w.asked, held, after

    assert asyncio.run(run()) == (1, 1, 0)


def test_the_bound_holds_over_two_workers_with_held_slots(store):
    """Bound 4, two workers, 6 concurrent callers per worker for 1.5 s, each request holding its slot 0-3 ms.
    Never more than 4 requests of the key are admitted at once across both workers, and the store never counts
    more than 4 slots. Catches a held slot handed to two requests at once (put back twice, taken without being
    removed from the hold) and a worker admitting from a hold the store does not count."""
    prefix = next(PREFIXES)

    async def run():
        a, b = _worker(store.url, prefix), _worker(store.url, prefix)
        now = {"in": 0, "most": 0, "served": 0, "refused": 0}
        rng = random.Random(3)
        stop = asyncio.get_running_loop().time() + 1.5

        async def caller(w):
            while asyncio.get_running_loop().time() < stop:
                rid = next(IDS)
                try:
                    await w.admit("k", rid, 1)
                except TooManyRequests:
                    now["refused"] += 1
                    await asyncio.sleep(0.001)
                    continue
                now["in"] += 1
                now["most"] = max(now["most"], now["in"])
                await asyncio.sleep(rng.random() * 0.003)
                now["in"] -= 1
                now["served"] += 1
                w.leave("k", rid)

        async def watch():
            most = 0
            while asyncio.get_running_loop().time() < stop:
                most = max(most, await _slots(a.store, prefix))
                await asyncio.sleep(0.002)
            return most

        *_, store_most = await asyncio.gather(*[caller(w) for w in (a, b) for _ in range(6)], watch())
        for w in (a, b):
            await w.close()
            await w.store.close()
        return now, store_most

    now, store_most = asyncio.run(run())
    assert now["most"] <= 4 and store_most <= 4, (now, store_most)
    assert now["most"] == 4 and now["served"] > 100 and now["refused"] > 0  # the bound was really reached


def test_a_slot_is_not_reused_once_its_lease_could_lapse_during_a_request(store):
    """Slot lease 300 ms, longest request 100 ms: a slot may serve for 0.9 x 200 = 180 ms after it was taken.
    Sequential requests for 450 ms must take at least 3 slots, and the store must never hold a slot past its
    lease that a request still uses. Catches a hold reused for as long as it keeps being used (its store lease
    would pass mid-request, the store would drop it and admit one more than the bound)."""
    prefix = next(PREFIXES)

    async def run():
        w = _worker(store.url, prefix, max_in_flight=1, lease_ms=300.0, longest_ms=100.0)
        stop = asyncio.get_running_loop().time() + 0.45
        while asyncio.get_running_loop().time() < stop:
            rid = next(IDS)
            await w.admit("k", rid, 1)
            assert await _slots(w.store, prefix) == 1  # the slot in use is in the store
            await asyncio.sleep(0.01)
            w.leave("k", rid)
        await w.close()
        await w.store.close()
        return w.asked

    assert asyncio.run(run()) >= 3


def test_a_request_refused_for_its_budget_leaks_no_slot(store):
    """Bound 1 with a budget of 5 samples (leases on): the second request is refused for the budget; its slot goes
    back to the worker's hold and is released 50 ms later, so another worker can take the key's only slot.
    Catches a slot kept by a refused request (the key refused 'in flight' everywhere for the 60 s lease)."""
    prefix = next(PREFIXES)

    async def run():
        a = _worker(store.url, prefix, max_in_flight=1, budget={"max_samples": 5})
        b = _worker(store.url, prefix, max_in_flight=1, budget={"max_samples": 5})
        rid = next(IDS)
        await a.admit("k", rid, 5)
        a.leave("k", rid)
        try:
            await a.admit("k", next(IDS), 1)
            raise AssertionError("served over the budget")
        except BudgetExhausted:
            pass
        await asyncio.sleep(0.15)
        left = await _slots(a.store, prefix)
        try:  # b takes the key's only slot (then is refused for the budget, not for a slot held elsewhere)
            await b.admit("k", next(IDS), 1)
            verdict = "served"
        except BudgetExhausted:
            verdict = "budget"
        except TooManyRequests:
            verdict = "in_flight"
        for w in (a, b):
            await w.close()
            await w.store.close()
        return left, verdict

    assert asyncio.run(run()) == (0, "budget")


def test_a_busy_worker_shares_a_tight_bound_with_the_others(store):
    """Bound 1: worker a's caller sends back to back (its slot never idles for the hold time), worker b's caller
    tries every 10 ms for 3 s. Both must be served (a slot's tenure is 1 s, and b's refusal marks the key contended,
    so a stops holding it). Catches a busy worker that keeps a key's slot for its whole lease (45 s), the key's
    requests at every other worker refused although it has one request in flight (a red team: 54% refused at a
    real concurrency of 0.36)."""
    prefix = next(PREFIXES)

    async def run():
        a, b = _worker(store.url, prefix, max_in_flight=1), _worker(store.url, prefix, max_in_flight=1)
        loop = asyncio.get_running_loop()
        stop = loop.time() + 3.0
        served = {"a": 0, "b": 0}

        async def caller(w, name, gap_s):
            while loop.time() < stop:
                rid = next(IDS)
                try:
                    await w.admit("k", rid, 1)
                except TooManyRequests:
                    await asyncio.sleep(gap_s)
                    continue
                await asyncio.sleep(0.002)
                w.leave("k", rid)
                served[name] += 1
                await asyncio.sleep(gap_s)

        await asyncio.gather(caller(a, "a", 0.0005), caller(b, "b", 0.01))
        for w in (a, b):
            await w.close()
            await w.store.close()
        return served, a.asked + b.asked

    served, asked = asyncio.run(run())
    assert min(served.values()) >= 3, served  # both workers served: neither keeps the slot
    assert asked > 100, asked  # once the key was contended, its slots were taken a request, not held


def test_a_key_whose_slots_the_store_lost_is_back_within_its_bound_in_a_tenure(store):
    """Bound 2; worker a's two callers keep the key's slots busy; the key's set is deleted (as an operator's DEL,
    FLUSHALL or a store restarted empty would); worker b's two callers then take two fresh slots. From 1.5 s
    after the delete on, never more than 2 requests of the key may be in flight. Catches held slots reused for
    their whole lease after the store forgot them (a red team: up to 4 in flight for 45 s)."""
    prefix = next(PREFIXES)

    async def run():
        a, b = _worker(store.url, prefix, max_in_flight=2), _worker(store.url, prefix, max_in_flight=2)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        now = {"in": 0}
        late_most = 0

        async def caller(w, start_s):
            nonlocal late_most
            await asyncio.sleep(start_s)
            while loop.time() < t0 + 3.0:
                rid = next(IDS)
                try:
                    await w.admit("k", rid, 1)
                except TooManyRequests:
                    await asyncio.sleep(0.003)
                    continue
                now["in"] += 1
                if loop.time() > t0 + 0.3 + 1.5:
                    late_most = max(late_most, now["in"])
                await asyncio.sleep(0.003)
                now["in"] -= 1
                w.leave("k", rid)

        async def wipe():
            await asyncio.sleep(0.3)
            await a.store.call("DEL", f"{prefix}:{{k}}:in_flight")

        await asyncio.gather(caller(a, 0.0), caller(a, 0.0), caller(b, 0.35), caller(b, 0.35), wipe())
        for w in (a, b):
            await w.close()
            await w.store.close()
        return late_most

    assert asyncio.run(run()) <= 2


def test_a_release_the_store_refuses_for_now_is_sent_again(tmp_path):
    """Bound 1. The store is demoted to a replica (a fail-over flap: writes answered READONLY) while worker a's
    held slot is released, and promoted again 100 ms later; a sends nothing more. Worker b must be served within
    half a second. Catches a send answered "not now" that is dropped (the slot stayed for its 60 s lease and the
    key was refused with nothing in flight: a red team). Then a's held slot of another key is released 300 ms
    after the store is back, with nothing waited for meanwhile: it must reach the store too. Catches a client
    that keeps treating the store as away after the refused send went through (every later release kept back
    until some request waited for a reply: a reviewer)."""
    from stack.store_server import StoreServer

    with StoreServer(tmp_path / "flap") as server:
        async def run():
            prefix = next(PREFIXES)
            a, b = _worker(server.url, prefix, max_in_flight=1), _worker(server.url, prefix, max_in_flight=1)
            admin = StateStore(server.url, 1000.0, 1000.0, 100.0)
            await a.admit("k", "a0", 1)
            await a.admit("k2", "a1", 1)
            await admin.call("REPLICAOF", "127.0.0.1", "1")
            try:
                a.leave("k", "a0")  # held, released after the 50 ms hold: refused READONLY
                await asyncio.sleep(0.1)
            finally:
                await admin.call("REPLICAOF", "NO", "ONE")
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            took_s = None
            while loop.time() - t0 < 2.0:
                try:
                    await b.admit("k", next(IDS), 1)
                    took_s = loop.time() - t0
                    break
                except TooManyRequests:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(max(0.0, t0 + 0.3 - loop.time()))
            a.leave("k2", "a1")  # held 50 ms, then released: nothing of a's waits for a reply meanwhile
            await asyncio.sleep(0.2)
            left = int(await admin.call("ZCARD", f"{prefix}:{{k2}}:in_flight"))
            return took_s, left

        took_s, left = asyncio.run(run())
        assert took_s is not None and took_s < 0.5, took_s
        assert left == 0
