"""Goodput vs offered load, with and without admission control, in one run.

Closed-loop asyncio clients without think time (aiohttp, one connection each) push one router at a time, at
several concurrencies, for a bounded duration each; every request states a latency requirement (the SLO).
Measured at the client from every request's exact time: answers within the SLO per second (goodput rate),
their share of all requests, p50/p99 of answered requests, the share shed (503/429), and how long
``/healthz`` took while the router was overloaded (probed on its own connection every 200 ms). Both routers
run the same code on the same Triton; only ``max_in_flight`` differs. A shed client waits the Retry-After the
router sent before its next request, as a well-behaved client does; ``--ignore-retry-after`` retries at once
(then, on a machine where clients and router share the cores, answering the refusals costs as much as the
work they spare).

    python -m benchmarks.overload [--concurrency 8 32 128 256] [--duration-s 6] [--slo-ms 25] [--max-in-flight 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from common.proc_cpu import self_cpu_s, tree_cpu_s
from common.results import write_result
from stack.loopback import DEMO_KEYS, router_for, triton_for
from common.tables import format_table
from router.audit_log import read_audit_log
from router.goodput import goodput_by_client
from zoo.data import Dataset
from zoo.manifest import load_manifest


async def _drive(url: str, key: str, bodies: list[bytes], concurrency: int, duration_s: float, slo_ms: float,
                 honour_retry_after: bool) -> dict:
    import aiohttp

    results: list[tuple[float, int]] = []  # (ms, status)
    health_ms: list[float] = []
    stop_at = time.perf_counter() + duration_s
    headers = {"x-api-key": key, "content-type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=60)

    async def client(i: int, session):
        k = i
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                async with session.post(f"{url}/v1/infer", data=bodies[k % len(bodies)], headers=headers) as r:
                    await r.read()
                    status, retry_after = r.status, r.headers.get("retry-after")
            except aiohttp.ClientError:
                status, retry_after = 0, None
            results.append(((time.perf_counter() - t0) * 1e3, status))
            k += concurrency
            if honour_retry_after and retry_after is not None:  # what a well-behaved client does when shed
                await asyncio.sleep(min(float(retry_after), max(0.0, stop_at - time.perf_counter())))

    async def probe(session):
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            async with session.get(f"{url}/healthz") as r:
                await r.read()
            health_ms.append((time.perf_counter() - t0) * 1e3)
            await asyncio.sleep(0.2)

    conn = aiohttp.TCPConnector(limit=concurrency + 1, force_close=False)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session, \
            aiohttp.ClientSession(timeout=timeout) as health_session:
        t0 = time.perf_counter()
        await asyncio.gather(probe(health_session), *(client(i, session) for i in range(concurrency)))
        elapsed = time.perf_counter() - t0
    ms = np.array([m for m, _ in results])
    status = np.array([s for _, s in results])
    ok = status == 200
    good = ok & (ms <= slo_ms)
    return {"requests": len(results), "elapsed_s": elapsed, "offered_per_s": len(results) / elapsed,
            "answered_200": int(ok.sum()), "shed": int(np.isin(status, (429, 503)).sum()),
            "errors": int((~ok & ~np.isin(status, (429, 503))).sum()),
            "goodput_per_s": float(good.sum() / elapsed), "goodput_share": float(good.mean()) if len(good) else None,
            "p50_ms": float(np.percentile(ms[ok], 50)) if ok.any() else None,
            "p99_ms": float(np.percentile(ms[ok], 99)) if ok.any() else None,
            "max_ms": float(ms.max()) if len(ms) else None,
            "healthz_max_ms": max(health_ms) if health_ms else None,
            "healthz_p50_ms": float(np.median(health_ms)) if health_ms else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="model_repository/default")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 128, 256])
    ap.add_argument("--duration-s", type=float, default=6.0, help="per router per concurrency")
    ap.add_argument("--slo-ms", type=float, default=25.0, help="max_latency_ms every request states")
    ap.add_argument("--max-in-flight", type=int, default=16, help="the bound of the router with admission control")
    ap.add_argument("--ignore-retry-after", action="store_true",
                    help="shed clients retry at once instead of waiting the Retry-After the router sent")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/overload.json")
    a = ap.parse_args(argv)

    import orjson

    manifest = load_manifest(a.zoo)
    data = Dataset.load(Path(a.zoo) / manifest.zoo.dataset.data_file)
    rng = np.random.default_rng(a.seed)
    bodies = [orjson.dumps({"inputs": data.x["test"][rng.integers(0, len(data.x["test"]), 1)].tolist(),
                            "max_latency_ms": a.slo_ms}) for _ in range(64)]
    key = next(iter(DEMO_KEYS))
    rows = []
    with tempfile.TemporaryDirectory(prefix="psml-overload-") as tmp, triton_for(a.zoo, tmp) as triton:
        with router_for(a.zoo, tmp, triton, "unbounded", seed=a.seed, max_in_flight=None) as unbounded, \
                router_for(a.zoo, tmp, triton, "bounded", seed=a.seed, max_in_flight=a.max_in_flight) as bounded:
            routers = {"no admission control": unbounded, f"max_in_flight {a.max_in_flight}": bounded}
            for c in a.concurrency:
                for name, r in (routers.items() if c % 2 == 0 else reversed(list(routers.items()))):
                    since = time.time()
                    cpu0 = tree_cpu_s(r.process.pid), tree_cpu_s(triton.process.pid), self_cpu_s()
                    m = asyncio.run(_drive(r.url, key, bodies, c, a.duration_s, a.slo_ms, not a.ignore_retry_after))
                    cpu1 = tree_cpu_s(r.process.pid), tree_cpu_s(triton.process.pid), self_cpu_s()
                    audited = [x for x in read_audit_log(r.audit_path) if x["ts"] >= since]
                    g = goodput_by_client(audited)["overall"]
                    rows.append({"router": name, "concurrency": c, **m,
                                 "audit_goodput_share": g["goodput_share"], "audit_shed_rate": g.get("shed_rate"),
                                 "cpu_s_router": cpu1[0] - cpu0[0], "cpu_s_triton": cpu1[1] - cpu0[1],
                                 "cpu_s_loadgen": cpu1[2] - cpu0[2]})
                    print(f"{name} c{c} done", flush=True)
    rows.sort(key=lambda r: (r["concurrency"], r["router"]))
    table = format_table(rows, [
        ("concurrency", "clients"), ("router", "router"), ("offered_per_s", "req/s sent"),
        ("goodput_per_s", f"within {a.slo_ms:g} ms /s"), ("goodput_share", "goodput share"),
        ("shed", "shed"), ("errors", "errors"), ("p50_ms", "p50 ms (200s)"), ("p99_ms", "p99 ms (200s)"),
        ("max_ms", "max ms"), ("healthz_max_ms", "/healthz max ms"), ("cpu_s_loadgen", "loadgen CPU s")])
    print(f"goodput vs offered load, SLO {a.slo_ms:g} ms, {len(os.sched_getaffinity(0))} cores shared by clients, "
          f"router and Triton\n{table}")
    write_result(a.out, "overload", {"seed": a.seed, "settings": vars(a), "rows": rows})
    print(f"result: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
