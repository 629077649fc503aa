"""A router with two worker processes behind one port: per-worker seeds, restarts, shared audit log and metrics."""

import concurrent.futures as cf
import os
import signal
import time

import pytest
import requests

from common.errors import PsmlError
from router.audit_log import read_audit_log
from router.defenses import make_defense
from router.policies import make_policy
from router.requirements import Requirements
from router.selection import Selector
from router.workers import WorkerIdentity
from router.zoo_view import ZooView
from tests.conftest import infer

NOISE = [{"name": "metric_noise", "distribution": "laplace", "accuracy_scale": 0.2, "latency_scale_ms": 0.0}]


def _spread(router, x, n=120, threads=6, **requirements):
    """n requests from several threads, each on a fresh connection, so the kernel spreads them over workers."""
    with cf.ThreadPoolExecutor(threads) as ex:
        return list(ex.map(lambda _: infer(router, x, **requirements).status_code, range(n)))


def _workers_of(router) -> list[int]:
    return [int(p) for p in open(f"/proc/{router.process.pid}/task/{router.process.pid}/children").read().split()]


def test_each_worker_draws_from_child_k_of_the_router_seed(start_router, manifest, data):
    """Replays each worker's audited requests through a Selector seeded with child k of the router's seed: catches
    workers sharing the root seed (both would replay the root stream, and the two streams would be equal) or
    seeded from anything else (nothing would match)."""
    best = max(manifest.pareto_models(), key=lambda m: m.accuracy)
    router = start_router(workers=2, policy="fastest_feasible", defenses=NOISE, seed=7, on_no_model="closest")
    for _ in range(10):  # the second worker may still be starting when the first answers: send until both served
        assert set(_spread(router, data.x["test"][:1], min_accuracy=best.accuracy)) == {200}
        records = list(read_audit_log(router.audit_path))
        by_worker = {k: [r for r in records if r["worker"] == k] for k in (0, 1)}
        if all(by_worker.values()):
            break
        time.sleep(0.5)
    assert all(by_worker.values()), "both workers should have served"
    zoo = ZooView.from_manifest(manifest)
    assert {r["req_min_accuracy"] for r in records} == {best.accuracy}
    streams = []
    for k, recs in by_worker.items():
        sel = Selector(zoo, make_policy("fastest_feasible"), [make_defense(d) for d in NOISE], "closest",
                       WorkerIdentity(k, 2).seed_sequence(7))
        # every request asked the same, so the worker's draws are its stream's first len(recs) values, whatever
        # order its concurrent requests reached the audit log in
        replay = [sel.choose(Requirements(best.accuracy, None)).effective.min_accuracy for _ in recs]
        assert sorted(replay) == sorted(r["eff_min_accuracy"] for r in recs)
        streams.append(replay)
    n = min(map(len, streams))
    assert streams[0][:n] != streams[1][:n]


def test_a_killed_worker_is_restarted_and_the_router_keeps_serving(start_router, data):
    router = start_router(workers=2)
    x = data.x["test"][:1]
    before = _workers_of(router)
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (len(_workers_of(router)) < 2 or before[0] in _workers_of(router)):
        time.sleep(0.1)
    after = _workers_of(router)
    assert len(after) == 2 and before[0] not in after and before[1] in after
    assert set(_spread(router, x, n=60)) == {200}
    assert "worker 0" in router.log_path.read_text() and "restart 1" in router.log_path.read_text()


def test_audit_lines_stay_whole_and_metrics_sum_over_workers(start_router, data):
    """Catches interleaved writes (a torn line would be skipped, so the count would fall short) and a /metrics
    that reports only the worker that answered the scrape (its count would be about half)."""
    router = start_router(workers=2, metrics_token="operator-token-0123456789")
    x = data.x["test"][:8]
    n = 200
    assert set(_spread(router, x, n=n, threads=8)) == {200}
    raw = router.audit_path.read_bytes().splitlines()
    assert len(raw) == n and len(list(read_audit_log(router.audit_path))) == n
    assert {r["worker"] for r in read_audit_log(router.audit_path)} == {0, 1}
    for _ in range(4):  # whichever worker answers the scrape
        text = requests.get(f"{router.url}/metrics", headers={"authorization": "Bearer operator-token-0123456789"},
                            timeout=10).text
        assert f'psml_requests_total{{client="benign",outcome="served"}} {float(n)}' in text
        assert 'psml_goodput_ratio{client="benign"} 1.0' in text


def test_workers_beyond_the_cores_are_refused_with_a_reason(start_router):
    with pytest.raises(PsmlError, match="exceed this machine's"):
        start_router(workers=len(os.sched_getaffinity(0)) + 1)
    with pytest.raises(PsmlError, match="workers"):
        start_router("zero", workers=0)
