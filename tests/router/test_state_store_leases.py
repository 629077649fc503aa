"""Budget leases (state_store_budget_lease_samples) against a real valkey-server, no router: a worker takes a key's
samples in chunks and admits from them without a round trip; the total stays exact across workers, a lease ends at
its deadline and gives its unused samples back, and a holder that dies loses only its lease."""

import asyncio
import itertools
import time

import pytest

from router.defenses import make_defense
from router.defenses.query_budget import BudgetExhausted, RateLimited
from router.defenses.token_bucket import BatchOverBurst
from router.shared_state import SharedClientState
from router.state_store import StateStore

PREFIXES = (f"l{i}" for i in itertools.count())
IDS = (f"r{i}" for i in itertools.count())


def _worker(url, budget, prefix, lease_samples=64, lease_ms=100.0, prada=None):
    defenses = [{"name": "query_budget", **budget}] + ([prada] if prada else [])
    st = StateStore(url, 1000.0, 1000.0, 100.0)  # generous: a busy CI host must not fail a connect
    w = SharedClientState(st, [make_defense(d) for d in defenses], None, 60_000.0, False, prefix, 5000.0,
                          lease_samples, lease_ms)
    w.waited = 0  # admissions that waited on the store (the LEASE script)
    run_parts = st.run_parts

    async def counted(script, parts, count):
        if script is getattr(w.leases, "_lease", None) or script is w._admit:
            w.waited += 1
        return await run_parts(script, parts, count)

    st.run_parts = counted
    return w


async def _serve(w, client="k", n=1) -> bool:
    """One request as router/app.py drives it: precheck, admit, leave. True when served."""
    rid = next(IDS)
    try:
        w.precheck(client)
        await w.admit(client, rid, n)
    except (BudgetExhausted, RateLimited):
        return False
    w.leave(client, rid)
    return True


async def _spent(w, prefix, client="k") -> int:
    return int(await w.store.call("HGET", f"{prefix}:{{{client}}}:budget", "spent") or 0)


def test_a_worker_admits_most_requests_from_its_lease_without_waiting_on_the_store(store):
    """200 requests of one key on one worker: a handful of waited admissions, not 200. Catches a lease taken but
    never used (every request asks the store) and a lease that is not charged (the store's spent must be what was
    served once the lease came back)."""
    prefix = next(PREFIXES)

    async def run():
        w = _worker(store.url, {"max_samples": 10**6, "samples_per_s": 1e9, "burst_samples": 256}, prefix,
                    lease_ms=5000.0)
        served = [await _serve(w) for _ in range(200)]
        leased = await _spent(w, prefix)
        await w.close()
        return served, w.waited, leased, await _spent(w, prefix)

    served, waited, leased, spent = asyncio.run(run())
    assert all(served) and waited <= 8, waited  # leases of 64 (a quarter of the burst): 4 waited admissions
    assert leased > 200  # the lease's units are charged when taken, before they are used
    assert spent == 200  # and the unused ones came back at close


def test_leasing_is_off_where_admission_decides_more_than_the_budget(store):
    """PRADA block (the flag must refuse), a bound on slots, or the setting 0: every request waits on the store as
    before. Catches leases applied where a request must see the key's flag or slots."""
    async def run():
        out = []
        for kw in ({"prada": {"name": "prada", "action": "block"}}, {"lease_samples": 0}):
            w = _worker(store.url, {"max_samples": 1000}, next(PREFIXES), **kw)
            for _ in range(10):
                await _serve(w)
            out.append(w.waited)
        st = StateStore(store.url, 50.0, 200.0, 100.0)
        slots = SharedClientState(st, [make_defense({"name": "query_budget", "max_samples": 1000})], 4, 60_000.0,
                                  False, next(PREFIXES), 5000.0, 64, 100.0)
        out.append(slots.leases)
        logged = _worker(store.url, {"max_samples": 1000}, next(PREFIXES), prada={"name": "prada", "action": "log"})
        out.append(logged.leases is not None)
        return out

    assert asyncio.run(run()) == [10, 10, None, True]


def test_two_workers_racing_for_one_budget_serve_exactly_it(store):
    """Budget 100, 200 single-sample requests at once over two workers. Catches a worker refused while the other
    holds leased samples it will not use (fewer than 100 served) and leases that let more than the budget through
    (a return honoured twice, units not charged when leased)."""
    prefix = next(PREFIXES)

    async def run():
        ws = [_worker(store.url, {"max_samples": 100}, prefix) for _ in range(2)]
        served = await asyncio.gather(*(_serve(ws[i % 2]) for i in range(200)))
        for w in ws:
            await w.close()
        return sum(served), await _spent(ws[0], prefix)

    assert asyncio.run(run()) == (100, 100)


def test_a_worker_that_runs_out_while_the_other_holds_unused_units_waits_for_them(store):
    """Worker 1 takes a lease with its first request and sends nothing more; worker 2 sends 120 one at a time.
    Worker 2 must get the 99 samples worker 1 did not use: when it runs out it waits for worker 1's lease to end
    (its unused samples come back) and is served. Catches a refusal while units are leased elsewhere (worker 2
    would stop at 88) and a waiting worker that never asks again."""
    prefix = next(PREFIXES)

    async def run():
        w1, w2 = (_worker(store.url, {"max_samples": 100}, prefix) for _ in range(2))
        assert await _serve(w1)
        held = w1.leases.leases["k"].left
        t0 = time.perf_counter()
        served = [await _serve(w2) for _ in range(120)]
        waited_s = time.perf_counter() - t0
        await w1.close()
        await w2.close()
        return held, served, waited_s, await _spent(w1, prefix)

    held, served, waited_s, spent = asyncio.run(run())
    assert held == 11  # min(64, 100 // 8) = 12 leased: 1 used, 11 held
    assert served[:99] == [True] * 99 and not any(served[99:]) and spent == 100
    assert waited_s < 1.0  # bounded: the lease ends within its 100 ms


def test_a_lease_is_not_used_past_its_deadline_and_its_unused_samples_come_back(store):
    """Catches a lease used forever (its samples held back from every other worker, and tokens taken long ago
    spent now) and unused samples that never come back. The event loop is held past the deadline, so that the
    timer that ends the lease cannot run first: the admission itself must see that the lease is over."""
    prefix = next(PREFIXES)

    async def run():
        w = _worker(store.url, {"max_samples": 1000}, prefix)
        await _serve(w)
        assert w.waited == 1 and await _spent(w, prefix) == 64  # 1 used, 63 leased
        time.sleep(0.12)  # the loop held past the lease's 100 ms: its timer has not run
        await _serve(w)
        past = w.waited
        await asyncio.sleep(0.15)  # the second lease ends by its timer; nothing else happens
        return past, await _spent(w, prefix), w.leases.leases

    past, spent, leases = asyncio.run(run())
    assert past == 2  # the second request asked the store: the first lease was over
    assert spent == 2 and leases == {}  # both leases' unused samples back, none held


def test_a_holder_that_dies_loses_only_its_lease_and_a_late_return_still_counts_once(store):
    """Worker 1 takes a lease (11 unused samples of a budget of 100) and stops answering: its timer never runs.
    Worker 2 gets the rest but not those 11: once the lease's deadline and grace pass they count as spent, and
    worker 2 is refused at 88 (a holder that really died loses its lease). Then worker 1's return arrives late (it
    was stalled, not dead): its 11 come back once, and a second return of the same lease gives nothing. Catches a
    lease never counted spent (worker 2 waiting for it forever), a late return ignored (the red team's 89 of 100
    served: budget lost for good whenever a holder's return is delayed), and a return credited twice."""
    prefix = next(PREFIXES)

    async def run():
        w1, w2 = (_worker(store.url, {"max_samples": 100}, prefix) for _ in range(2))
        await _serve(w1)
        lease = w1.leases.leases["k"]
        lease.timer.cancel()  # stalled: it does not return it in time
        served = [await _serve(w2) for _ in range(100)]
        w1.leases.end("k", lease)  # the late return of its 11, past the deadline and grace
        w1.leases.end("k", lease)  # and the same return again (a resend): must count once
        await asyncio.sleep(0.01)
        w2.refused.clear()  # ask the store, not the remembered refusal
        late = [await _serve(w2) for _ in range(15)]
        spent = await _spent(w1, prefix)
        await w2.close()
        return sum(served), sum(late), spent

    served, late, spent = asyncio.run(run())
    assert served == 88 and late == 11 and spent == 100


def test_a_request_waiting_for_leases_is_not_starved_by_a_worker_that_keeps_leasing(store):
    """Budget 200: worker 1 serves one sample every 10 ms (each of its leases ends and it takes the next one);
    worker 2 sends one batch of 190 that fits only once worker 1's lease is back. Its wait is recorded in the store,
    so worker 1's next leases leave room for it and it is served. Catches leases granted past a waiting request
    (the red team's batch refused after three rounds while 9,954 of 10,000 samples were unspent) and, with the
    total checked, a waiting request served beyond the budget."""
    prefix = next(PREFIXES)

    async def run():
        w1, w2 = (_worker(store.url, {"max_samples": 200}, prefix) for _ in range(2))
        stop = asyncio.Event()

        async def trickle():
            n = 0
            while not stop.is_set():
                n += await _serve(w1)
                await asyncio.sleep(0.01)
            return n

        task = asyncio.create_task(trickle())
        await asyncio.sleep(0.03)
        big = await _serve(w2, n=190)
        await asyncio.sleep(0.05)
        stop.set()
        small = await task
        await w1.close()
        await w2.close()
        return big, small, await _spent(w1, prefix)

    big, small, spent = asyncio.run(run())
    assert big and spent == 190 + small <= 200


def test_the_token_bucket_with_leases_keeps_the_burst_and_refuses_a_batch_over_it(store):
    """Rate 0.5/s, burst 8: a lease takes at most a quarter of the burst, so a key gets its 8 at once and then is
    refused, as without leases; a batch over the burst is refused at once. Catches leases that take tokens without
    charging them (more than the burst served at once) and a batch over the burst sent to the store."""
    prefix = next(PREFIXES)

    async def run():
        w = _worker(store.url, {"samples_per_s": 0.5, "burst_samples": 8}, prefix, lease_ms=5000.0)
        t0 = time.perf_counter()
        served = [await _serve(w) for _ in range(12)]
        with pytest.raises(BatchOverBurst):
            await w.admit("k", "big", 9)
        return served, time.perf_counter() - t0

    served, elapsed = asyncio.run(run())
    assert served[:8] == [True] * 8 and served.count(True) <= 8 + int(elapsed * 0.5)


def test_a_return_on_a_connection_cut_before_the_store_read_it_is_sent_again(store):
    """The store holds every client's commands (CLIENT PAUSE ALL, as a stalled store would) while a worker ends
    its lease: the RETURN is written, then the connection is cut before the store read it (its queue is dropped
    with the connection). On the next connection the return is sent again and the key's unused samples come back:
    spent 1, not 64. Catches a send dropped with its connection once written (the samples stayed spent for
    good: a red team lost 21 of 13,104 so under connection kills), and a send sent twice (spent below 1: never,
    returns act once, but counted here too)."""
    prefix = next(PREFIXES)

    async def run():
        w = _worker(store.url, {"max_samples": 1000}, prefix, lease_ms=5000.0)
        await _serve(w)
        before = await _spent(w, prefix)
        other = StateStore(store.url, 1000.0, 1000.0, 100.0)
        await other.call("CLIENT", "PAUSE", "300", "ALL")
        conn = w.store._conn
        w.leases.end_all()  # the RETURN, not waited for
        await asyncio.sleep(0.05)  # written, held by the paused store
        conn.abort()  # the connection cut (as the watchdog cuts a store that stopped answering)
        await asyncio.sleep(0.4)  # the pause is over
        await w.store.call("PING")  # the next connection: what was not answered goes first
        spent = await _spent(w, prefix)
        await other.close()
        await w.store.close()
        return before, spent

    assert asyncio.run(run()) == (64, 1)
