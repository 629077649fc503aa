"""Router vs direct Triton, interleaved in one run: batch sizes x concurrencies x (JSON, binary) x (1, 2 workers).

Every system serves the same model with the same inputs through the same closed-loop harness
(stack/closed_loop.py): the router is asked for that model's exact accuracy under the fastest_feasible policy
(so it always selects it), the direct client calls it by name over Triton's HTTP API with binary tensors.
Rounds alternate the order of the systems so drift on a noisy machine hits all alike. For every cell the CPU
seconds of the router (all its processes), of Triton (with its Python-backend stubs) and of the load
generator (this process) are read from /proc, so the table says where the machine's cores went per request.
Beside them, in the same rounds, the harness's own overhead (LoadGen's null system under test): the null
system through the thread driver and through the asyncio driver (stack/closed_loop.py; the driver alone), and
a router on the null backend (driver, client and router, no Triton); a second table, ``overhead`` in the JSON.

    from benchmarks.router_vs_direct import RouterVsDirectSettings, run
    result = run(RouterVsDirectSettings(batch_sizes=(1,), concurrencies=(4,), rounds=1))

    python -m benchmarks.router_vs_direct [--zoo model_repository/default] [--batch-sizes 1 32]
        [--concurrency 1 4 16 64] [--workers 1 2] [--rounds 3] [--requests-per-round 300]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import ConfigError
from common.proc_cpu import self_cpu_s, tree_cpu_s
from common.results import write_result
from common.stats import percentile_summary
from common.tables import format_table
from stack.clients import AsyncNullSystem, DirectTriton, NullSystem, RouterClient
from stack.closed_loop import run_closed_loop, run_closed_loop_async
from stack.loopback import DEMO_KEYS, router_for, triton_for
from zoo.data import Dataset
from zoo.manifest import load_manifest

TARGETS = "router CPU <= 150 us/request at batch 1, c16; added p50 <= 0.3 ms at c1; throughput >= 0.85x direct at c16"




@dataclass(frozen=True)
class RouterVsDirectSettings:
    zoo_dir: Path = Path("model_repository/default")
    model: str | None = None  # the zoo model served; None: the fastest Pareto model
    batch_sizes: tuple[int, ...] = (1, 32)  # samples per request
    concurrencies: tuple[int, ...] = (1, 4, 16, 64)  # clients (threads)
    workers: tuple[int, ...] = (1, 2)  # router worker counts compared
    formats: tuple[str, ...] = ("json", "binary")  # the router's request bodies
    requests_per_round: int = 300  # per system per round, all clients together (at least 2 per client)
    rounds: int = 3  # per cell, the systems' order alternating
    seed: int = 0  # the inputs drawn; the routers' seed
    overhead: bool = True  # also the null system and a router on the null backend

    def __post_init__(self):
        for name in ("batch_sizes", "concurrencies", "workers"):
            if not getattr(self, name) or min(getattr(self, name)) < 1:
                raise ConfigError(f"{name}: give one or more values of at least 1, got {getattr(self, name)}")
        if not self.formats or set(self.formats) - {"json", "binary"}:
            raise ConfigError(f"formats: choose from json and binary, got {self.formats}")
        if self.requests_per_round < 1 or self.rounds < 1:
            raise ConfigError(f"requests_per_round and rounds must be at least 1, got {self.requests_per_round} "
                              f"and {self.rounds}")

    def as_dict(self) -> dict:
        """The settings under the names the result file has always used (its command-line flags)."""
        return {"zoo": str(self.zoo_dir), "model": self.model, "batch_sizes": list(self.batch_sizes),
                "concurrency": list(self.concurrencies), "workers": list(self.workers), "formats": list(self.formats),
                "requests_per_round": self.requests_per_round, "rounds": self.rounds, "seed": self.seed,
                "no_overhead": not self.overhead}


def _measure(make, inputs, c, per_thread, req, pids, driver=run_closed_loop) -> dict:
    cpu0 = {k: tree_cpu_s(p) for k, p in pids.items()} | {"loadgen": self_cpu_s()}
    res = driver(make, inputs, c, per_thread, req)
    cpu1 = {k: tree_cpu_s(p) for k, p in pids.items()} | {"loadgen": self_cpu_s()}
    return {"lat": res.latencies_ms, "elapsed": res.elapsed_s, "errors": res.errors, "first_error": res.first_error,
            "cpu": {k: cpu1[k] - cpu0[k] for k in cpu0}}


OVERHEAD_COLUMNS = [("batch", "batch"), ("concurrency", "conc"), ("system", "system"), ("p50_ms", "p50 ms"),
                    ("p99_ms", "p99 ms"), ("throughput_per_s", "req/s"), ("cpu_us_router", "router CPU us/req"),
                    ("cpu_us_loadgen", "loadgen CPU us/req"), ("errors", "errors")]


def _overhead_systems(stack, s: RouterVsDirectSettings, tmp, triton, model, data, key) -> dict:
    """name -> (make, requirements, router pid, driver): the null system through each driver, and a router (one
    worker, JSON) on the null backend through the thread driver, asked for the same model as the others."""
    null_router = stack.enter_context(router_for(s.zoo_dir, tmp, triton, "router_null", policy="fastest_feasible",
                                                 seed=s.seed, workers=1, max_in_flight=None, backend="null"))
    return {"null system, threads": (lambda: NullSystem(data.n_classes), {}, None, run_closed_loop),
            "null system, asyncio": (lambda: AsyncNullSystem(data.n_classes), {}, None, run_closed_loop_async),
            "router json w1, null backend": ((lambda: RouterClient(null_router.url, key)),
                                             {"min_accuracy": model.accuracy}, null_router.process.pid,
                                             run_closed_loop)}


def _systems(stack, s: RouterVsDirectSettings, tmp, triton, model, data, key) -> tuple[dict, dict, set]:
    """name -> (make, requirements, router pid) for direct Triton, every router and the overhead systems; the
    asyncio driver's systems; the overhead systems' names."""
    routers = {w: stack.enter_context(router_for(s.zoo_dir, tmp, triton, f"router_w{w}", policy="fastest_feasible",
                                                 seed=s.seed, workers=w, max_in_flight=None))
               for w in s.workers}
    systems = {"direct": (lambda: DirectTriton.for_entry(triton.endpoints.http_url, model), {}, None)}
    for w, r in routers.items():
        for fmt in s.formats:
            systems[f"router {fmt} w{w}"] = ((lambda url=r.url, b=(fmt == "binary"): RouterClient(url, key, binary=b)),
                                             {"min_accuracy": model.accuracy}, r.process.pid)
    overhead = _overhead_systems(stack, s, tmp, triton, model, data, key) if s.overhead else {}
    drivers = {name: driver for name, (*_, driver) in overhead.items()}
    return systems | {name: entry[:3] for name, entry in overhead.items()}, drivers, set(overhead)


def _measure_cell(systems: dict, drivers: dict, inputs, c: int, s: RouterVsDirectSettings, triton_pid: int) -> dict:
    """Every system at concurrency ``c``: warmed up, then ``s.rounds`` rounds in alternating order; per system
    the exact times of each round, elapsed seconds, errors and CPU seconds summed over the rounds."""
    per_thread = max(2, s.requests_per_round // c)
    for name, (make, req, _) in systems.items():  # warm-up: connections, caches, Triton's batcher
        drivers.get(name, run_closed_loop)(make, inputs, c, max(2, per_thread // 5), req)
    acc = {n: {"lat": [], "elapsed": 0.0, "errors": 0, "cpu": {}} for n in systems}
    for rnd in range(s.rounds):
        for name in (list(systems) if rnd % 2 == 0 else list(reversed(systems))):
            make, req, rpid = systems[name]
            pids = {"triton": triton_pid} | ({"router": rpid} if rpid else {})
            m = _measure(make, inputs, c, per_thread, req, pids, drivers.get(name, run_closed_loop))
            a = acc[name]
            a["lat"].append(m["lat"])
            a["elapsed"] += m["elapsed"]
            a["errors"] += m["errors"]
            for k, v in m["cpu"].items():
                a["cpu"][k] = a["cpu"].get(k, 0.0) + v
    return acc


def _cell(name: str, a: dict, batch: int, c: int) -> dict:
    lat = np.concatenate(a["lat"])
    n = len(lat)
    return {"system": name, "batch": batch, "concurrency": c, "requests": n, "errors": a["errors"],
            "throughput_per_s": n / a["elapsed"], **percentile_summary(lat),
            **{f"cpu_us_{k}": v / max(n, 1) * 1e6 for k, v in a["cpu"].items()}}


def _against_direct(cell: dict, direct: dict) -> dict:
    return {**cell, "added_p50_ms": cell["p50_ms"] - direct["p50_ms"], "p50_ratio": cell["p50_ms"] / direct["p50_ms"],
            "tput_ratio": cell["throughput_per_s"] / direct["throughput_per_s"],
            "direct_p50_ms": direct["p50_ms"], "direct_tput": direct["throughput_per_s"],
            "direct_cpu_us_triton": direct["cpu_us_triton"], "direct_cpu_us_loadgen": direct["cpu_us_loadgen"]}


def run(s: RouterVsDirectSettings, log=functools.partial(print, flush=True)) -> dict:
    """Every cell (batch size x concurrency) of every system; the result file's fields: ``cells`` (direct and
    routers), ``table`` (each router against direct), ``overhead`` (the null system and null backend)."""
    manifest = load_manifest(s.zoo_dir)
    model = manifest.model(s.model) if s.model else min(manifest.pareto_models(), key=lambda m: m.selection_latency_ms)
    data = Dataset.load(Path(s.zoo_dir) / manifest.zoo.dataset.data_file)
    rng = np.random.default_rng(s.seed)
    key = next(iter(DEMO_KEYS))
    rows, raw, overhead_rows = [], [], []
    with tempfile.TemporaryDirectory(prefix="psml-bench-") as tmp, triton_for(s.zoo_dir, tmp) as triton, \
            contextlib.ExitStack() as stack:
        systems, drivers, overhead = _systems(stack, s, tmp, triton, model, data, key)
        for batch in s.batch_sizes:
            inputs = [data.x["test"][rng.integers(0, len(data.x["test"]), batch)] for _ in range(64)]
            for c in s.concurrencies:
                acc = _measure_cell(systems, drivers, inputs, c, s, triton.process.pid)
                direct = None
                for name, a in acc.items():
                    cell = _cell(name, a, batch, c)
                    if name in overhead:
                        overhead_rows.append(cell)
                    elif name == "direct":
                        raw.append(cell)
                        direct = cell
                    else:
                        raw.append(cell)
                        rows.append(_against_direct(cell, direct))
                log(f"batch {batch} c{c} done")
    cores = len(os.sched_getaffinity(0))
    return {"seed": s.seed, "targets": TARGETS,
            "settings": s.as_dict() | {"model": model.name, "zoo": manifest.zoo.name, "cores": cores},
            "cells": raw, "table": rows, "overhead": overhead_rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="model_repository/default")
    ap.add_argument("--model", help="zoo model to serve (default: the fastest Pareto model)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="router worker counts to compare")
    ap.add_argument("--formats", nargs="+", default=["json", "binary"], choices=["json", "binary"])
    ap.add_argument("--requests-per-round", type=int, default=300, help="requests per system per round (all threads)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per cell, the systems' order alternating")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-overhead", action="store_true", help="leave out the null system and null backend")
    ap.add_argument("--out", default="results/router_vs_direct.json")
    a = ap.parse_args(argv)
    try:
        s = RouterVsDirectSettings(Path(a.zoo), a.model, tuple(a.batch_sizes), tuple(a.concurrency), tuple(a.workers),
                                   tuple(a.formats), a.requests_per_round, a.rounds, a.seed, not a.no_overhead)
    except ConfigError as e:
        print(f"error: {e}")
        return 2
    result = run(s)
    settings = result["settings"]
    cores = settings.pop("cores")
    result["settings"] = settings | {"out": a.out, "cores": cores}  # the keys in the order they always had
    table = format_table(result["table"], [
        ("batch", "batch"), ("concurrency", "conc"), ("system", "system"), ("p50_ms", "p50 ms"),
        ("direct_p50_ms", "direct p50"), ("added_p50_ms", "added p50"), ("p50_ratio", "p50 ratio"),
        ("throughput_per_s", "req/s"), ("direct_tput", "direct req/s"), ("tput_ratio", "tput ratio"),
        ("cpu_us_router", "router CPU us/req"), ("cpu_us_triton", "Triton CPU us/req"),
        ("cpu_us_loadgen", "loadgen CPU us/req"), ("errors", "errors")])
    print(f"router vs direct Triton, model {settings['model']}, {cores} cores shared by load generator, router and "
          f"Triton\ntargets: {TARGETS}\n{table}")
    if result["overhead"]:
        print("\nthe harness's own overhead: the null system (the driver alone) and a router on the null backend "
              "(driver, client and router, no Triton)\n" + format_table(result["overhead"], OVERHEAD_COLUMNS))
    write_result(a.out, "router_vs_direct", result)
    print(f"result: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
