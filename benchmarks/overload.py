"""Goodput vs offered load, with and without admission control, in one run.

Closed-loop asyncio clients without think time (aiohttp, one connection each; the asyncio driver of
stack/closed_loop.py) push one router at a time, at several concurrencies, for a bounded duration each; every
request states a latency requirement (the SLO). Measured at the client from every request's exact time: answers
within the SLO per second (goodput rate), their share of all requests, p50/p99 of answered requests, the share
shed (503/429), and how long ``/healthz`` took while the router was overloaded (probed on its own connection every
200 ms). Both routers run the same code on the same Triton; only ``max_in_flight`` differs. A shed client waits
the Retry-After the router sent before its next request, as a well-behaved client does; ``--ignore-retry-after``
retries at once (then, on a machine where clients and router share the cores, answering the refusals costs as
much as the work they spare).

    from benchmarks.overload import OverloadSettings, run
    result = run(OverloadSettings(zoo_dir=..., concurrencies=(8, 32), duration_s=2.0))

    python -m benchmarks.overload [--concurrency 8 32 128 256] [--duration-s 6] [--slo-ms 25] [--max-in-flight 16]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import ConfigError
from common.proc_cpu import self_cpu_s, tree_cpu_s
from common.results import write_result
from common.tables import format_table
from router.audit_log import read_audit_log
from router.goodput import goodput_by_client
from stack.closed_loop import run_closed_loop_async
from stack.loopback import DEMO_KEYS, router_for, triton_for
from zoo.data import Dataset
from zoo.manifest import load_manifest

SHED = (429, 503)
BODIES = 64  # distinct request bodies, one test sample each, cycled by the clients


@dataclass(frozen=True)
class OverloadSettings:
    zoo_dir: Path = Path("model_repository/default")
    concurrencies: tuple[int, ...] = (8, 32, 128, 256)  # clients, one cell per router each
    duration_s: float = 6.0  # per router per concurrency
    slo_ms: float = 25.0  # the max_latency_ms every request states
    max_in_flight: int = 16  # the bound of the router with admission control
    honour_retry_after: bool = True  # False: shed clients retry at once
    seed: int = 0  # which test samples the bodies hold; the routers' seed

    def __post_init__(self):
        if not self.concurrencies or min(self.concurrencies) < 1:
            raise ConfigError(f"--concurrency: give one or more client counts of at least 1, got {self.concurrencies}")
        if self.duration_s <= 0 or self.slo_ms <= 0:
            raise ConfigError(f"--duration-s and --slo-ms must be positive, got {self.duration_s} and {self.slo_ms}")
        if self.max_in_flight < 1:
            raise ConfigError(f"--max-in-flight must be at least 1, got {self.max_in_flight}")

    def as_dict(self) -> dict:
        """The settings under the names the result file has always used (its command-line flags)."""
        return {"zoo": str(self.zoo_dir), "concurrency": list(self.concurrencies), "duration_s": self.duration_s,
                "slo_ms": self.slo_ms, "max_in_flight": self.max_in_flight,
                "ignore_retry_after": not self.honour_retry_after, "seed": self.seed}


class PostedBody:
    """An asyncio client that posts a ready JSON body to /v1/infer on one connection of its own and answers
    (status, Retry-After); status 0 when the connection failed."""

    def __init__(self, url: str, key: str):
        import aiohttp

        self._client_error = aiohttp.ClientError
        self.url = f"{url}/v1/infer"
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                             timeout=aiohttp.ClientTimeout(total=60),
                                             headers={"x-api-key": key, "content-type": "application/json"})

    async def infer(self, body: bytes) -> tuple[int, str | None]:
        try:
            async with self.session.post(self.url, data=body) as r:
                await r.read()
                return r.status, r.headers.get("retry-after")
        except self._client_error:
            return 0, None

    async def close(self) -> None:
        await self.session.close()


def cell_figures(results: list[tuple[float, int]], elapsed_s: float, slo_ms: float, health_ms: list[float]) -> dict:
    """One cell's figures from every request's (exact ms, status) and the /healthz times (pure)."""
    ms = np.array([m for m, _ in results])
    status = np.array([s for _, s in results])
    ok = status == 200
    good = ok & (ms <= slo_ms)
    return {"requests": len(results), "elapsed_s": elapsed_s, "offered_per_s": len(results) / elapsed_s,
            "answered_200": int(ok.sum()), "shed": int(np.isin(status, SHED).sum()),
            "errors": int((~ok & ~np.isin(status, SHED)).sum()),
            "goodput_per_s": float(good.sum() / elapsed_s), "goodput_share": float(good.mean()) if len(good) else None,
            "p50_ms": float(np.percentile(ms[ok], 50)) if ok.any() else None,
            "p99_ms": float(np.percentile(ms[ok], 99)) if ok.any() else None,
            "max_ms": float(ms.max()) if len(ms) else None,
            "healthz_max_ms": max(health_ms) if health_ms else None,
            "healthz_p50_ms": float(np.median(health_ms)) if health_ms else None}


def measure_cell(url: str, key: str, bodies: list[bytes], concurrency: int, s: OverloadSettings) -> dict:
    """``concurrency`` clients for ``s.duration_s`` (client i sends bodies i, i + concurrency, ...), /healthz
    probed beside them; every request's time and status, refused ones included."""
    import aiohttp

    results: list[tuple[float, int]] = []  # (ms, status)
    health_ms: list[float] = []

    def on_request(i, k, request, ms, answer, error):
        status, retry_after = answer
        results.append((ms, status))
        if s.honour_retry_after and retry_after is not None:  # what a well-behaved client does when shed
            return float(retry_after)
        return None

    async def probe(stop_at: float):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                async with session.get(f"{url}/healthz") as r:
                    await r.read()
                health_ms.append((time.perf_counter() - t0) * 1e3)
                await asyncio.sleep(0.2)

    loop = run_closed_loop_async(lambda: PostedBody(url, key), None, concurrency, 0, duration_s=s.duration_s,
                                 request_for=lambda i, k: (bodies[(i + k * concurrency) % len(bodies)], {}),
                                 on_request=on_request, alongside=probe)
    return cell_figures(results, loop.elapsed_s, s.slo_ms, health_ms)


def request_bodies(data, s: OverloadSettings) -> list[bytes]:
    import orjson

    rng = np.random.default_rng(s.seed)
    return [orjson.dumps({"inputs": data.x["test"][rng.integers(0, len(data.x["test"]), 1)].tolist(),
                          "max_latency_ms": s.slo_ms}) for _ in range(BODIES)]


def run(s: OverloadSettings, log=functools.partial(print, flush=True)) -> dict:
    """Both routers at every concurrency (their order alternating), each cell with the router's audited goodput
    and the CPU the router, Triton and the clients spent; rows sorted by concurrency, then router."""
    manifest = load_manifest(s.zoo_dir)
    bodies = request_bodies(Dataset.load(Path(s.zoo_dir) / manifest.zoo.dataset.data_file), s)
    key = next(iter(DEMO_KEYS))
    rows = []
    with tempfile.TemporaryDirectory(prefix="psml-overload-") as tmp, triton_for(s.zoo_dir, tmp) as triton:
        with router_for(s.zoo_dir, tmp, triton, "unbounded", seed=s.seed, max_in_flight=None) as unbounded, \
                router_for(s.zoo_dir, tmp, triton, "bounded", seed=s.seed, max_in_flight=s.max_in_flight) as bounded:
            routers = {"no admission control": unbounded, f"max_in_flight {s.max_in_flight}": bounded}
            for c in s.concurrencies:
                for name, r in (routers.items() if c % 2 == 0 else reversed(list(routers.items()))):
                    since = time.time()
                    cpu0 = tree_cpu_s(r.process.pid), tree_cpu_s(triton.process.pid), self_cpu_s()
                    m = measure_cell(r.url, key, bodies, c, s)
                    cpu1 = tree_cpu_s(r.process.pid), tree_cpu_s(triton.process.pid), self_cpu_s()
                    g = goodput_by_client([x for x in read_audit_log(r.audit_path) if x["ts"] >= since])["overall"]
                    rows.append({"router": name, "concurrency": c, **m,
                                 "audit_goodput_share": g["goodput_share"], "audit_shed_rate": g.get("shed_rate"),
                                 "cpu_s_router": cpu1[0] - cpu0[0], "cpu_s_triton": cpu1[1] - cpu0[1],
                                 "cpu_s_loadgen": cpu1[2] - cpu0[2]})
                    log(f"{name} c{c} done")
    rows.sort(key=lambda r: (r["concurrency"], r["router"]))
    return {"seed": s.seed, "settings": s.as_dict(), "rows": rows}


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
    try:
        s = OverloadSettings(Path(a.zoo), tuple(a.concurrency), a.duration_s, a.slo_ms, a.max_in_flight,
                             not a.ignore_retry_after, a.seed)
    except ConfigError as e:
        print(f"error: {e}")
        return 2
    result = run(s)
    result["settings"]["out"] = a.out
    table = format_table(result["rows"], [
        ("concurrency", "clients"), ("router", "router"), ("offered_per_s", "req/s sent"),
        ("goodput_per_s", f"within {s.slo_ms:g} ms /s"), ("goodput_share", "goodput share"),
        ("shed", "shed"), ("errors", "errors"), ("p50_ms", "p50 ms (200s)"), ("p99_ms", "p99 ms (200s)"),
        ("max_ms", "max ms"), ("healthz_max_ms", "/healthz max ms"), ("cpu_s_loadgen", "loadgen CPU s")])
    print(f"goodput vs offered load, SLO {s.slo_ms:g} ms, {len(os.sched_getaffinity(0))} cores shared by clients, "
          f"router and Triton\n{table}")
    write_result(a.out, "overload", result)
    print(f"result: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
