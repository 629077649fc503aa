"""The store-backed per-client state's scripts against a real valkey-server (no router): atomicity, leases,
token buckets, and PRADA's state round-tripping through the store unchanged."""

import asyncio
import itertools
import time

import numpy as np
import pytest

from router.admission import TooManyRequests
from router.defenses import make_defense
from router.defenses.prada import Blocked
from router.defenses.query_budget import BudgetExhausted, RateLimited
from router.shared_state import SharedClientState
from router.state_store import StateStore, StateStoreUnavailable
from stack.store_server import StoreServer
from tests.router.test_client_defenses import PROJ, jbda_like

PREFIXES = (f"t{i}" for i in itertools.count())


def _shared(url, defenses, max_in_flight=None, lease_ms=60_000.0, fail_open=False, prefix=None):
    st = StateStore(url, 50.0, 200.0, 100.0)
    return SharedClientState(st, [make_defense(d) for d in defenses], max_in_flight, lease_ms, fail_open,
                             prefix or next(PREFIXES))


async def _outcomes(coros):
    return [type(r).__name__ if isinstance(r, Exception) else "ok"
            for r in await asyncio.gather(*coros, return_exceptions=True)]


def test_a_budget_checked_from_many_connections_at_once_serves_exactly_the_budget(store):
    """Catches a check-then-set over two round trips (GET, then SET): 40 admissions racing on 8 connections
    would all read the same spent count and more than the budget would be served."""
    async def run():
        workers = [_shared(store.url, [{"name": "query_budget", "max_samples": 30}], prefix="race") for _ in range(4)]
        out = await _outcomes(workers[i % 4].admit("k", f"r{i}", 3) for i in range(40))
        for w in workers:
            await w.store.close()
        return out

    out = asyncio.run(run())
    assert out.count("ok") == 10 and out.count("BudgetExhausted") == 30


def test_slots_of_a_dead_router_come_back_after_their_lease(store):
    """Catches in-flight counts kept as a plain counter (INCR/DECR): a router that dies holding slots would
    leave the key refused 429 for good."""
    async def run():
        dead = _shared(store.url, [], max_in_flight=2, lease_ms=300.0, prefix="lease")
        await dead.admit("k", "a", 1)
        await dead.admit("k", "b", 1)  # never released: its router 'dies' here
        live = _shared(store.url, [], max_in_flight=2, lease_ms=300.0, prefix="lease")
        with pytest.raises(TooManyRequests):
            await live.admit("k", "c", 1)
        await asyncio.sleep(0.35)
        await live.admit("k", "c", 1)
        live.leave("k", "c")
        await live.admit("k", "d", 1)
        await live.admit("k", "e", 1)  # both dead slots are back, and a released one is free at once

    asyncio.run(run())


def test_the_token_bucket_refills_on_the_stores_clock_and_refusals_are_kept_for_precheck(store):
    """Catches a bucket that never refills, one that takes tokens from a refused request, and a precheck that
    asks nothing (a rate-limited key would make the router read its body) or refuses forever."""
    async def run():
        s = _shared(store.url, [{"name": "query_budget", "samples_per_s": 20.0, "burst_samples": 4}])
        await s.admit("k", "a", 4)
        with pytest.raises(RateLimited) as e:
            await s.admit("k", "b", 2)
        assert e.value.retry_after == 1
        with pytest.raises(RateLimited):
            s.precheck("k")  # refused before the body, without a round trip
        await asyncio.sleep(0.12)  # 2.4 tokens back at 20 a second
        s.precheck("k")
        await s.admit("k", "c", 2)

    asyncio.run(run())


def test_scripts_are_loaded_again_after_the_store_forgets_them(store):
    """Catches EVALSHA without the NOSCRIPT fallback: a store restarted without its script cache (or SCRIPT
    FLUSH) would fail every request."""
    async def run():
        s = _shared(store.url, [{"name": "query_budget", "max_samples": 10}])
        await s.admit("k", "a", 1)
        await s.store.call("SCRIPT", "FLUSH")
        await s.admit("k", "b", 1)

    asyncio.run(run())


def test_an_unreachable_store_fails_closed_at_once_or_open_when_told(store):
    """Catches a client that retries with backoff (seconds per request while the store is down) and a
    fail-open that still refuses."""
    async def run():
        from common.ports import free_port

        dead = f"redis://127.0.0.1:{free_port()}/0"
        closed = _shared(dead, [{"name": "query_budget", "max_samples": 10}])
        t0 = time.perf_counter()
        for i in range(20):
            with pytest.raises(StateStoreUnavailable):
                await closed.admit("k", f"r{i}", 1)
        assert time.perf_counter() - t0 < 1.0
        opened = _shared(dead, [{"name": "query_budget", "max_samples": 10}], fail_open=True)
        assert "state_store" in await opened.admit("k", "r", 1)

    asyncio.run(run())


def test_prada_in_the_store_flags_exactly_where_the_in_process_detector_does(store):
    """Two workers take turns on one key, each with its own copy of the key's state. Catches a lost update
    (a commit that overwrote the other worker's batch), a copy rebuilt wrong from the store (float precision,
    group sums, trimmed distances) and a flag raised by one worker that the other does not see."""
    spec = {"name": "prada", "action": "block", "min_distances": 20, "window": 40}
    local = make_defense(spec)
    x = jbda_like(steps=10)
    labels = (x @ PROJ).argmax(1)

    async def run():
        workers = [_shared(store.url, [spec], prefix="prada") for _ in range(2)]
        for i in range(0, len(x), 4):
            b, lab = x[i: i + 4], labels[i: i + 4]
            try:
                want = local.observe("k", b, lab)
            except Blocked as e:
                want = e
            try:
                got = await workers[(i // 4) % 2].observe("k", b, lab)
            except Blocked as e:
                got = e
            if isinstance(want, Blocked):
                assert isinstance(got, Blocked) and got.audit == want.audit
                break
            assert got == want
        else:
            pytest.fail("the in-process detector never flagged the synthetic stream")
        with pytest.raises(Blocked):  # the other worker: refused at admission, before any work
            await workers[(i // 4 + 1) % 2].admit("k", "next", 1)

    asyncio.run(run())


def test_bad_state_store_settings_are_refused_with_the_key_named():
    """Catches a store URL accepted unchecked and per-client defenses refused with workers > 1 even with a
    store (the point of the store)."""
    from common.errors import ConfigError
    from router.settings import RouterSettings

    base = {"api_keys": {"k": "c"}, "defenses": [{"name": "query_budget", "max_samples": 10}]}
    with pytest.raises(ValueError, match="state_store"):
        RouterSettings(**base, state_store="localhost:6379")
    with pytest.raises(ValueError, match="state_store_slot_lease_ms"):
        RouterSettings(**base, state_store="redis://127.0.0.1:1/0", state_store_slot_lease_ms=100)
    with pytest.raises((ValueError, ConfigError), match="state_store to share it"):
        RouterSettings(**base, workers=2, allow_more_workers_than_cores=True)
    RouterSettings(**base, workers=2, allow_more_workers_than_cores=True, state_store="redis://127.0.0.1:1/0")


def test_b4b_coverage_in_the_store_matches_the_in_process_defense(store):
    """One worker: the same buckets, coverage, noise and answers as the in-process B4B. Catches bucket ids
    centred on another mean, a coverage counted over all keys, and sums that lose precision in the store."""
    spec = {"name": "b4b", "hash_bits": 6, "seed": 3}
    local = make_defense(spec)
    rng = np.random.default_rng(0)

    async def run():
        s = _shared(store.url, [spec])
        for i in range(6):
            emb = rng.normal(1.0, 1.0, size=(8, 16)).astype(np.float32)
            client = f"k{i % 2}"
            want, want_fields = local.perturb_client_output(client, emb)
            got, got_fields = await s.perturb_client_output(client, emb)
            assert got_fields == want_fields and np.allclose(got, want, atol=1e-5)
        assert got_fields["b4b_coverage"] > 0

    asyncio.run(run())


def test_a_stalled_store_undoes_what_an_admission_whose_reply_was_lost_took(tmp_path):
    """The store paused (SIGSTOP) past the socket timeout while an admission is on its way: the client gets
    503, and once the store runs again what that admission took (its slot, its samples) is given back, however
    the admission and its undo reach the store. Catches the reviewer's finding: the store ran the script after
    the connection was cut, charged the samples and kept the slot, and the key was locked out for the lease."""
    import os
    import signal

    with StoreServer(tmp_path / "stall") as server:
        async def run():
            w = _shared(server.url, [{"name": "query_budget", "max_samples": 100}], max_in_flight=1, prefix="stall")
            await w.admit("k", "warm", 1)
            w.leave("k", "warm")
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                with pytest.raises(StateStoreUnavailable):
                    await w.admit("k", "lost", 5)
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            await asyncio.sleep(0.25)  # past the retry delay: the next request reconnects and sends the undo first
            await w.admit("k", "next", 1)  # the only slot is free: the lost admission's slot was given back
            w.leave("k", "next")
            await asyncio.sleep(0.05)
            spent = await w.store.call("HGET", "stall:{k}:budget", "spent")
            await w.store.close()
            return int(spent)

        assert asyncio.run(run()) == 2  # 'warm' and 'next'; the lost 5 samples were refunded


def test_replies_stay_in_step_when_the_store_refuses_client_commands(tmp_path):
    """A store (or proxy) that refuses CLIENT, as with a least-privilege ACL user: a release sent without
    waiting must not shift later replies onto other requests. Catches CLIENT REPLY SKIP, whose refusal added two
    replies nobody waited for, so one key got another key's value (and budget decision)."""
    with StoreServer(tmp_path / "acl") as server:
        async def run():
            st = StateStore(server.url, 50.0, 200.0, 100.0)
            await st.call("ACL", "SETUSER", "default", "-client")
            await st.call("SET", "alice", "alice-secret")
            await st.call("SET", "bob", "bob-value")
            st.send("ZREM", "slots", "r1")  # fire and forget, as a slot's release
            got = [await st.call("GET", k) for k in ("alice", "alice", "bob", "bob")]
            await st.close()
            return got

        assert asyncio.run(run()) == [b"alice-secret", b"alice-secret", b"bob-value", b"bob-value"]


def test_store_error_replies_are_an_unavailable_store_and_never_reach_the_client(store):
    """A demoted primary answers READONLY: 503 state_store_unavailable (fail-open honoured), not a 500 quoting
    the store's text. Catches every error reply mapped to StateStoreError with the store's message as detail."""
    async def run():
        st = StateStore(store.url, 50.0, 200.0, 100.0)
        from router.state_store import Script

        script = Script("return redis.error_reply('READONLY You can\\'t write against a read only replica.')")
        with pytest.raises(StateStoreUnavailable) as e:
            await st.run(script, [], [])
        assert "READONLY" not in e.value.detail and "replica" not in e.value.detail
        await asyncio.sleep(0.11)
        bad = Script("return redis.error_reply('ERR something the script did wrong')")
        from router.errors import StateStoreError

        with pytest.raises(StateStoreError) as e2:
            await st.run(bad, [], [])
        assert "something" not in e2.value.detail
        await st.close()

    asyncio.run(run())


def test_releases_held_back_by_a_busy_store_go_out_when_it_answers_again(store):
    """A transient error reply (BUSY: another client's long script) on a connection that stays up holds sends
    back in the backlog. Catches a backlog drained only by a new connection (a red-team finding: the victim's
    released slot stayed taken, its next request refused 'in flight' for the lease's 60 s)."""
    async def run():
        w = _shared(store.url, [{"name": "query_budget", "max_samples": 1000}], max_in_flight=1)
        admin = StateStore(store.url, 50.0, 1000.0, 100.0)
        await w.admit("victim", "r1", 1)  # the victim's one slot is taken
        await admin.call("CONFIG", "SET", "busy-reply-threshold", "50")
        try:
            admin.send("EVAL", "local t = redis.call('TIME') local t0 = t[1] * 1e6 + t[2] "
                       "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - t0 > 400000 return 1", 0)
            await asyncio.sleep(0.1)  # the store runs the script: BUSY to everyone else
            with pytest.raises(StateStoreUnavailable):
                await w.admit("other", "r2", 1)
            w.leave("victim", "r1")  # the victim's answer left: its release waits in the backlog
            assert len(w.store._backlog) > 0 and not w.store._conn.closed
            await asyncio.sleep(0.5)  # the script ended, the retry pause passed
            await w.admit("other", "r3", 1)  # a good reply on the same connection
            w.leave("other", "r3")
            await asyncio.sleep(0.05)
            await w.admit("victim", "r4", 1)  # its slot was released: admitted, not 'in flight'
        finally:
            await admin.call("CONFIG", "SET", "busy-reply-threshold", "5000")

    asyncio.run(run())
