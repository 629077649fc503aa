"""Per-client state in a real valkey-server, shared by real router processes in front of the session's Triton:
two routers with two workers each share one budget and one PRADA flag, a restarted router keeps both, and a
store that dies under load answers 503 state_store_unavailable (or serves, under fail-open) until it is back."""

import concurrent.futures as cf
import socket
import threading
import time

import numpy as np
import pytest

from router.audit_log import read_audit_log
from router.state_store import encode
from stack.loopback import write_router_settings
from stack.router_process import RouterProcess
from stack.store_server import StoreServer
from tests.conftest import infer

KEYS = {"k-budget": "budget", "k-flag": "flagger", "k-clean": "clean", "k-restart-budget": "restart-budget",
        "k-restart-flag": "restart-flag", "k-load": "load", "k-reset": "reset"}
RECHECK_MS = 500.0  # state_store_recheck_ms of the shared routers
DEFENSES = [{"name": "query_budget", "max_samples": 16},
            # W of identical probes is 0; of natural queries, far above 0.5 even over 10 distances
            {"name": "prada", "action": "block", "min_distances": 10, "test_every": 1, "delta": 0.5}]


def _router(run_dir, zoo_dir, triton, name, store_url, **overrides) -> RouterProcess:
    settings = write_router_settings(run_dir, zoo_dir, triton.endpoints, name, **({
        "api_keys": KEYS, "defenses": DEFENSES, "state_store": store_url, "allow_more_workers_than_cores": True}
        | overrides))
    return RouterProcess(settings, log_path=run_dir / f"{name}.log").start()


@pytest.fixture(scope="module")
def shared(tmp_path_factory, zoo_dir, triton):
    """One store, two routers with two workers each on it."""
    run = tmp_path_factory.mktemp("shared_state")
    with StoreServer(run / "store") as store:
        routers = [_router(run, zoo_dir, triton, f"r{i}", store.url, workers=2, state_store_recheck_ms=RECHECK_MS)
                   for i in (1, 2)]
        yield store, routers
        for r in routers:
            r.stop()


def _served_samples(routers, client):
    return sum(r["batch_size"] for router in routers for r in read_audit_log(router.audit_path)
               if r["client"] == client and r["status"] == 200)


def test_two_routers_with_two_workers_serve_exactly_one_budget(shared, data):
    """32 samples asked in 16 requests, 8 threads at once, spread over two routers x two workers, budget 16.
    Catches state per process (each of the 4 workers would serve its own 16: all 32 served) and a check and
    update that are not one atomic step (racing requests would all pass the check: more than 16 served)."""
    _, routers = shared
    x = data.x["test"]
    with cf.ThreadPoolExecutor(8) as ex:
        answers = list(ex.map(lambda i: infer(routers[i % 2], x[2 * i: 2 * i + 2], key="k-budget"), range(16)))
    assert sorted(a.status_code for a in answers) == [200] * 8 + [403] * 8
    assert {a.json()["error"] for a in answers if a.status_code == 403} == {"query_budget_exhausted"}
    assert _served_samples(routers, "budget") == 16


def test_a_prada_flag_raised_through_one_router_refuses_the_key_at_the_other(shared, data):
    """One probe repeated 12 times through router 1 raises PRADA's flag (W of identical distances is 0).
    Catches a flag kept in the router that raised it (router 2 would serve the key) and a block that also
    refuses other keys."""
    _, (r1, r2) = shared
    probe = np.repeat(data.x["test"][:1], 12, axis=0)
    first = infer(r1, probe, key="k-flag")
    assert first.status_code == 403 and first.json()["error"] == "blocked"
    for r in (r2, r1):
        later = infer(r, data.x["test"][:1], key="k-flag")
        assert later.status_code == 403 and later.json()["error"] == "blocked"
    assert infer(r2, data.x["test"][:1], key="k-clean").status_code == 200


def test_a_key_an_operator_resets_in_the_store_is_served_again_within_the_recheck_interval(shared, data):
    """A flagged key refused at both routers; the operator deletes its PRADA state with a raw command
    (DEL psml:{reset}:prada, as docs/router.md says). Catches routers that refuse from what they remember until
    they restart (a worker's remembered refusal, its copy of the key's flag): once state_store_recheck_ms has
    passed, both routers serve the key again (4 samples left of its budget of 16)."""
    store, (r1, r2) = shared
    x = data.x["test"]
    assert infer(r1, np.repeat(x[:1], 12, axis=0), key="k-reset").status_code == 403
    for r in (r1, r2, r1, r2):
        assert infer(r, x[1:2], key="k-reset").json()["error"] == "blocked"
    with socket.create_connection(("127.0.0.1", store.port), timeout=5) as s:
        s.sendall(encode("DEL", "psml:{reset}:prada"))
        assert s.recv(64) == b":1\r\n"
    time.sleep(RECHECK_MS / 1e3 + 0.05)
    answers = [infer(r, x[2 + i: 3 + i], key="k-reset").status_code for i, r in enumerate((r1, r2) * 2)]
    assert answers == [200] * 4


def test_a_restarted_router_keeps_the_flag_and_the_spent_budget(shared, data):
    """Catches state that lives in the router's memory: after a restart a spent budget would be whole again and
    a flagged key clean."""
    _, (r1, _) = shared
    assert infer(r1, data.x["test"][:16], key="k-restart-budget").status_code == 200
    assert infer(r1, np.repeat(data.x["test"][:1], 12, axis=0), key="k-restart-flag").status_code == 403
    r1.stop()
    r1.start()
    spent = infer(r1, data.x["test"][:1], key="k-restart-budget")
    assert spent.status_code == 403 and spent.json()["error"] == "query_budget_exhausted"
    assert infer(r1, data.x["test"][:1], key="k-restart-flag").json()["error"] == "blocked"


def test_a_store_killed_under_load_answers_503_then_recovers_and_fail_open_serves(tmp_path, zoo_dir, triton, data):
    """Load through a fail-closed and a fail-open router while the store is killed (SIGKILL) and restarted on
    its port. Catches a router that serves without its defenses when told to fail closed, a 503 without
    Retry-After or audit record, a router that never reconnects (stale pooled connections), a fail-open that
    refuses or does not record what it skipped, and a /healthz that does not say the store is gone."""
    budget = [{"name": "query_budget", "max_samples": 10_000}]
    with StoreServer(tmp_path / "store") as store:
        closed = _router(tmp_path, zoo_dir, triton, "closed", store.url, defenses=budget)
        opened = _router(tmp_path, zoo_dir, triton, "open", store.url, defenses=budget, state_store_fail_open=True)
        try:
            answers, killed_at, restarted_at, health_down = _kill_under_load(store, closed, opened, data.x["test"][:1])
            health_up = closed.health()
        finally:
            closed.stop()
            opened.stop()
    # a budget lease (and the held slot) taken before the kill serves until the lease's end (250 ms, docs/router.md)
    down = [a for a in answers["closed"] if killed_at + 0.4 < a[0] < restarted_at]
    assert down and all(a[1:] == (503, "state_store_unavailable", "1") for a in down), \
        [a for a in down if a[1] != 503][:3]
    back = [a[1] for a in answers["closed"] if a[0] > restarted_at + 1.0]
    assert back and set(back) == {200}
    assert {a[1] for a in answers["open"]} == {200}
    assert health_down["state_store_reachable"] is False and health_up["state_store_reachable"] is True
    assert any(r["status"] == 503 and r["outcome"] == "unavailable" for r in read_audit_log(closed.audit_path))
    assert any("state_store" in r for r in read_audit_log(opened.audit_path))


def _kill_under_load(store, closed, opened, x):
    answers = {"closed": [], "open": []}
    stop = threading.Event()

    def load(router, out):
        while not stop.is_set():
            r = infer(router, x, key="k-load")
            out.append((time.monotonic(), r.status_code, r.json().get("error"), r.headers.get("retry-after")))
            time.sleep(0.01)

    threads = [threading.Thread(target=load, args=(r, answers[n])) for n, r in (("closed", closed), ("open", opened))]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        store.kill()
        killed_at = time.monotonic()
        time.sleep(1.0)
        health_down = closed.health()
        restarted_at = time.monotonic()  # before: a request may be served while start() waits for PONG
        store.start()  # the same port and data folder
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return answers, killed_at, restarted_at, health_down


def test_budget_leases_over_two_routers_with_two_workers_serve_exactly_the_budget(tmp_path, zoo_dir, triton, data):
    """query_budget alone and no per-client slot bound: the workers admit from budget leases (the default,
    state_store_budget_lease_samples 64). 80 single-sample requests from 8 threads over two routers x two workers,
    budget 40: exactly 40 served, none refused while another worker held unused leased samples; a second key
    serves 10 of 1,000 and, once both routers have stopped, the store's spent is exactly 10. Catches a worker
    refused while samples are leased elsewhere (fewer than 40), leases that let more through, and leases not given
    back at shutdown (spent above what was served, for good)."""
    keys = {"k-lease": "lease", "k-lease-stop": "lease-stop"}
    x = data.x["test"]
    with StoreServer(tmp_path / "store") as store:
        routers = [_router(tmp_path, zoo_dir, triton, f"lease{i}", store.url, api_keys=keys, workers=2,
                           max_in_flight_per_client=None, defenses=[{"name": "query_budget", "max_samples": 40}])
                   for i in (1, 2)]
        try:
            with cf.ThreadPoolExecutor(8) as ex:
                answers = list(ex.map(lambda i: infer(routers[i % 2], x[i: i + 1], key="k-lease"), range(80)))
            stopping = [infer(routers[i % 2], x[i: i + 1], key="k-lease-stop").status_code for i in range(10)]
        finally:
            for r in routers:
                r.stop()
        with socket.create_connection(("127.0.0.1", store.port), timeout=5) as s:
            s.sendall(encode("HGET", "psml:{lease-stop}:budget", "spent"))
            stopped_spent = s.recv(64)
    assert sorted(a.status_code for a in answers) == [200] * 40 + [403] * 40
    assert _served_samples(routers, "lease") == 40
    assert stopping == [200] * 10 and stopped_spent == b"$2\r\n10\r\n"
