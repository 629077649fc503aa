"""What keeping per-client state in a store costs: the same router and defenses (query_budget + PRADA), their state
in the router process or in a real valkey-server on loopback, interleaved in one run at each concurrency.

Each thread of the closed loop is its own client (API key), so the per-key state is spread as under real load.
For every cell the CPU seconds of the router (all its processes) and of the store are read from /proc; the
table puts the store-backed router beside the in-process one: added router CPU per request, added p50, ratios.
``--backend null`` (the default) answers without Triton, so that the figures are the router's own; ``triton``
serves the zoo's fastest Pareto model.

    from benchmarks.state_store_cost import StateStoreCostSettings, run
    result = run(StateStoreCostSettings(concurrencies=(4,), rounds=1))

    python -m benchmarks.state_store_cost [--zoo model_repository/default] [--concurrency 1 16]
        [--rounds 3] [--requests-per-round 600] [--backend null|triton] [--defenses budget_prada]
        [--budget-lease-samples N] [--prada-commit-ms MS] [--slot-hold-ms MS] [--store-workers N]

``--defenses``: ``budget_prada`` (query_budget + PRADA log: with budget leases, the default, most requests wait
on no round trip, PRADA's commit is sent without waiting; one round trip a request without), ``budget``
(query_budget alone: with leases most requests send the store nothing at all), ``budget_prada_block``
(PRADA block: its commit is waited for, two round trips), ``slots`` (no defense, only max_in_flight_per_client:
with held slots most requests ask the store nothing; without, one small script a request), ``budget_prada_slots``
(query_budget + PRADA log + max_in_flight_per_client 16: a deployment's defaults with a budget and PRADA).
``--budget-lease-samples``: the store-backed router's ``state_store_budget_lease_samples`` (0: every request asks
the store; default: the router's default). Budget leases apply to ``budget`` and ``budget_prada`` (PRADA ``log``,
no slot bound) only; the other profiles ask the store every request whatever it is.
``--prada-commit-ms``: the store-backed router's ``state_store_prada_commit_ms`` (0: PRADA commits with every
request; default: the router's). ``--slot-hold-ms``: its ``state_store_slot_hold_ms`` (0: every request takes and
releases its slot in the store; default: the router's). ``--store-workers``: the store-backed router's workers
(default 1, as the in-process router, which cannot have more): what the store makes possible, measured beside one
in-process worker.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from common.errors import ConfigError
from common.proc_cpu import tree_cpu_s
from common.results import write_result
from common.stats import percentile_summary
from common.tables import format_table
from stack.clients import RouterClient
from stack.closed_loop import run_closed_loop
from stack.loopback import triton_for, write_router_settings
from stack.router_process import RouterProcess
from stack.store_server import StoreServer
from zoo.data import Dataset
from zoo.manifest import load_manifest

TARGET_CPU_US, TARGET_P50_MS = 60.0, 0.15  # what the store may add per request (issue 21)
TARGETS = f"the store adds <= {TARGET_CPU_US:g} us router CPU and <= {TARGET_P50_MS:g} ms p50 per request"
BUDGET = {"name": "query_budget", "samples_per_s": 1e9, "burst_samples": 256, "max_samples": 10**12}
# each refuses nothing (PRADA's delta is below any natural W): every request does the full work
PROFILES = {"budget_prada": ([BUDGET, {"name": "prada", "action": "log"}], {}),
            "budget": ([BUDGET], {}),
            "budget_prada_block": ([BUDGET, {"name": "prada", "action": "block", "delta": 0.01}], {}),
            "slots": ([], {"max_in_flight_per_client": 16}),
            "budget_prada_slots": ([BUDGET, {"name": "prada", "action": "log"}], {"max_in_flight_per_client": 16})}
KEYS = {f"bench-key-{i}": f"client-{i}" for i in range(64)}
# the store-backed router's own settings a run may set (None: the router's default), and the router's names for them
STORE_ROUTER_OPTIONS = {"budget_lease_samples": "state_store_budget_lease_samples",
                        "prada_commit_ms": "state_store_prada_commit_ms", "slot_hold_ms": "state_store_slot_hold_ms"}


@dataclass(frozen=True)
class StateStoreCostSettings:
    zoo_dir: Path = Path("model_repository/default")
    concurrencies: tuple[int, ...] = (1, 16)  # clients (threads, each its own API key)
    requests_per_round: int = 600  # per system per round, all clients together (at least 2 per client)
    rounds: int = 3  # per cell, the systems' order alternating
    batch_size: int = 1  # samples per request
    backend: str = "null"  # null: the router's own figures, no Triton; triton: the fastest Pareto model
    seed: int = 0  # the inputs drawn; the routers' seed
    defenses: str = "budget_prada"  # which per-client state: a key of PROFILES
    budget_lease_samples: int | None = None  # the store router's state_store_budget_lease_samples (None: default)
    prada_commit_ms: float | None = None  # the store router's state_store_prada_commit_ms (None: default)
    slot_hold_ms: float | None = None  # the store router's state_store_slot_hold_ms (None: default)
    store_workers: int = 1  # the store router's workers (the in-process one always has one)

    def __post_init__(self):
        if not self.concurrencies or min(self.concurrencies) < 1 or min(self.rounds, self.requests_per_round,
                                                                          self.batch_size) < 1:
            raise ConfigError("--concurrency, --rounds, --requests-per-round and --batch must be >= 1")
        if self.backend not in ("null", "triton"):
            raise ConfigError(f"--backend: choose null or triton, got {self.backend!r}")
        if self.defenses not in PROFILES:
            raise ConfigError(f"--defenses: choose {', '.join(PROFILES)}, got {self.defenses!r}")
        if self.budget_lease_samples is not None and self.budget_lease_samples < 0:
            raise ConfigError(f"--budget-lease-samples must be >= 0, got {self.budget_lease_samples}")
        if self.prada_commit_ms is not None and not 0 <= self.prada_commit_ms <= 1000:
            raise ConfigError(f"--prada-commit-ms must be in [0, 1000], got {self.prada_commit_ms}")
        if self.slot_hold_ms is not None and not 0 <= self.slot_hold_ms <= 1000:
            raise ConfigError(f"--slot-hold-ms must be in [0, 1000], got {self.slot_hold_ms}")
        if self.store_workers < 1:
            raise ConfigError(f"--store-workers must be >= 1, got {self.store_workers}")

    def _set_options(self) -> dict:
        """The store router's options this run sets, under the settings' field names."""
        return {f: v for f in STORE_ROUTER_OPTIONS if (v := getattr(self, f)) is not None}

    def store_router(self) -> dict:
        """The store-backed router's settings beyond the in-process one's."""
        return {STORE_ROUTER_OPTIONS[f]: v for f, v in self._set_options().items()} | (
            {"workers": self.store_workers} if self.store_workers > 1 else {})

    def as_dict(self) -> dict:
        """The settings under the names the result file has always used (its command-line flags)."""
        return {"zoo": str(self.zoo_dir), "concurrency": list(self.concurrencies),
                "requests_per_round": self.requests_per_round, "rounds": self.rounds, "batch": self.batch_size,
                "backend": self.backend, "seed": self.seed, "defenses": self.defenses} | self._set_options() | (
                {} if self.store_workers == 1 else {"store_workers": self.store_workers})


def _routers(stack, zoo: str, tmp: str, endpoints, store_url: str, seed: int, backend: str, profile: str,
             store_extra: dict | None = None) -> dict:
    defenses, extra_common = PROFILES[profile]
    common = {"api_keys": KEYS, "defenses": defenses, "seed": seed, "backend": backend, "max_in_flight": None,
              "policy": "fastest_feasible", **extra_common}
    out = {}
    for name, extra in (("in-process", {}), ("store", {"state_store": store_url, **(store_extra or {})})):
        path = write_router_settings(Path(tmp), Path(zoo), endpoints, name, **common, **extra)
        out[name] = stack.enter_context(RouterProcess(path, log_path=Path(tmp) / f"{name}.log"))
    return out


def _cell(router, inputs, c: int, per_thread: int, req: dict, store_pid: int) -> dict:
    keys = itertools.cycle(KEYS)
    make = lambda: RouterClient(router.url, next(keys))  # noqa: E731  one client (key) per thread
    cpu0 = tree_cpu_s(router.process.pid), tree_cpu_s(store_pid)
    res = run_closed_loop(make, inputs, c, per_thread, req)
    cpu1 = tree_cpu_s(router.process.pid), tree_cpu_s(store_pid)
    return {"lat": res.latencies_ms, "elapsed": res.elapsed_s, "errors": res.errors,
            "router_cpu_s": cpu1[0] - cpu0[0], "store_cpu_s": cpu1[1] - cpu0[1]}


def _summary(name: str, c: int, runs: list[dict]) -> dict:
    lat = np.concatenate([r["lat"] for r in runs])
    n = len(lat)
    return {"system": name, "concurrency": c, "requests": n, "errors": sum(r["errors"] for r in runs),
            "throughput_per_s": n / sum(r["elapsed"] for r in runs), **percentile_summary(lat),
            "router_cpu_us": sum(r["router_cpu_s"] for r in runs) / n * 1e6,
            "store_cpu_us": sum(r["store_cpu_s"] for r in runs) / n * 1e6}


def _ratio(a: float, b: float) -> float | None:
    """a / b, None when b is 0: a short run can read 0 CPU seconds from /proc (its clock ticks are 10 ms)."""
    return a / b if b else None


def compare(cells: dict) -> dict:
    """The store-backed router against the in-process one, per request (pure: the two summaries in)."""
    base, store = cells["in-process"], cells["store"]
    added_cpu, added_p50 = store["router_cpu_us"] - base["router_cpu_us"], store["p50_ms"] - base["p50_ms"]
    return {"concurrency": base["concurrency"], "inproc_cpu_us": base["router_cpu_us"],
            "store_router_cpu_us": store["router_cpu_us"], "added_cpu_us": added_cpu,
            "cpu_ratio": _ratio(store["router_cpu_us"], base["router_cpu_us"]),
            "store_server_cpu_us": store["store_cpu_us"],
            "inproc_p50_ms": base["p50_ms"], "store_p50_ms": store["p50_ms"], "added_p50_ms": added_p50,
            "p50_ratio": _ratio(store["p50_ms"], base["p50_ms"]), "inproc_tput": base["throughput_per_s"],
            "store_tput": store["throughput_per_s"],
            "tput_ratio": _ratio(store["throughput_per_s"], base["throughput_per_s"]),
            "errors": base["errors"] + store["errors"],
            "cpu_target_met": added_cpu <= TARGET_CPU_US, "p50_target_met": added_p50 <= TARGET_P50_MS}


def paired(runs: dict) -> dict:
    """Round by round, the store-backed router against the in-process one measured next to it (the systems'
    order alternates), so that the machine's drift between rounds cancels: median and quartiles of the added router
    CPU per request and added p50 (pure: the recorded rounds in). On a shared 2-core host these moved far less
    between runs than the pooled figures."""
    cpu = [s["router_cpu_s"] / len(s["lat"]) * 1e6 - b["router_cpu_s"] / len(b["lat"]) * 1e6
           for b, s in zip(runs["in-process"], runs["store"])]
    p50 = [float(np.median(s["lat"]) - np.median(b["lat"])) for b, s in zip(runs["in-process"], runs["store"])]
    q = lambda v: [float(x) for x in np.percentile(v, [25, 50, 75])]  # noqa: E731
    return {"rounds": len(cpu), "added_cpu_us_q25_50_75": q(cpu), "added_p50_ms_q25_50_75": q(p50)}


def run(s: StateStoreCostSettings, log=functools.partial(print, flush=True)) -> dict:
    """Both routers at every concurrency, in alternating rounds; the result file's fields."""
    manifest = load_manifest(s.zoo_dir)
    model = min(manifest.pareto_models(), key=lambda m: m.selection_latency_ms)
    data = Dataset.load(Path(s.zoo_dir) / manifest.zoo.dataset.data_file)
    rng = np.random.default_rng(s.seed)
    inputs = [data.x["test"][rng.integers(0, len(data.x["test"]), s.batch_size)] for _ in range(256)]
    req = {"min_accuracy": model.accuracy}
    rows, raw = [], []
    with tempfile.TemporaryDirectory(prefix="psml-bench-") as tmp, contextlib.ExitStack() as stack:
        store = stack.enter_context(StoreServer(Path(tmp) / "store"))
        endpoints = (stack.enter_context(triton_for(s.zoo_dir, tmp)).endpoints if s.backend == "triton"
                     else SimpleNamespace(http_url="127.0.0.1:1", grpc_url="127.0.0.1:1"))
        routers = _routers(stack, s.zoo_dir, tmp, endpoints, store.url, s.seed, s.backend, s.defenses,
                           s.store_router())
        for c in s.concurrencies:
            per_thread = max(2, s.requests_per_round // c)
            for r in routers.values():  # warm-up: connections, scripts loaded, PRADA's first tests
                warm = lambda r=r: RouterClient(r.url, next(iter(KEYS)))  # noqa: E731
                run_closed_loop(warm, inputs, c, max(2, per_thread // 3), req)
            runs = {n: [] for n in routers}
            for rnd in range(s.rounds):
                for name in (list(routers) if rnd % 2 == 0 else list(reversed(routers))):
                    runs[name].append(_cell(routers[name], inputs, c, per_thread, req, store.process.pid))
            cells = {n: _summary(n, c, rs) for n, rs in runs.items()}
            raw += cells.values()
            rows.append(compare(cells) | paired(runs))
            log(f"c{c} done")
    met = all(r["cpu_target_met"] and r["p50_target_met"] for r in rows)
    return {"seed": s.seed, "targets": TARGETS, "targets_met": met,
            "settings": s.as_dict() | {"model": model.name, "zoo": manifest.zoo.name,
                                       "cores": len(os.sched_getaffinity(0)),
                                       "router": PROFILES[s.defenses]},
            "cells": raw, "table": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="model_repository/default")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--requests-per-round", type=int, default=600, help="requests per system per round (all threads)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per cell, the systems' order alternating")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--backend", choices=("null", "triton"), default="null")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--defenses", choices=tuple(PROFILES), default="budget_prada")
    ap.add_argument("--budget-lease-samples", type=int, default=None,
                    help="the store router's state_store_budget_lease_samples (0: off; default: the router's)")
    ap.add_argument("--prada-commit-ms", type=float, default=None,
                    help="the store router's state_store_prada_commit_ms (0: a commit a request; default: the router's)")
    ap.add_argument("--slot-hold-ms", type=float, default=None,
                    help="the store router's state_store_slot_hold_ms (0: a slot taken a request; default: the router's)")
    ap.add_argument("--store-workers", type=int, default=1, help="the store router's workers (in-process: always 1)")
    ap.add_argument("--out", default="results/state_store_cost.json")
    a = ap.parse_args(argv)
    try:
        s = StateStoreCostSettings(Path(a.zoo), tuple(a.concurrency), a.requests_per_round, a.rounds, a.batch,
                                   a.backend, a.seed, a.defenses, a.budget_lease_samples, a.prada_commit_ms,
                                   a.slot_hold_ms, a.store_workers)
    except ConfigError as e:
        ap.error(str(e))
    result = run(s)
    result["settings"] = s.as_dict() | {"out": a.out} | result["settings"]  # the keys in the order they always had
    table = format_table(result["table"], [
        ("concurrency", "conc"), ("inproc_cpu_us", "in-proc CPU us/req"), ("store_router_cpu_us", "store CPU us/req"),
        ("added_cpu_us", "added CPU us"), ("cpu_ratio", "CPU ratio"), ("store_server_cpu_us", "valkey CPU us/req"),
        ("inproc_p50_ms", "in-proc p50 ms"), ("store_p50_ms", "store p50 ms"), ("added_p50_ms", "added p50 ms"),
        ("p50_ratio", "p50 ratio"), ("tput_ratio", "tput ratio"), ("errors", "errors")])
    by_round = "\n".join(f"  concurrency {r['concurrency']}: added CPU {r['added_cpu_us_q25_50_75'][1]:+.0f} us "
                         f"[{r['added_cpu_us_q25_50_75'][0]:+.0f}, {r['added_cpu_us_q25_50_75'][2]:+.0f}], added p50 "
                         f"{r['added_p50_ms_q25_50_75'][1]:+.3f} ms [{r['added_p50_ms_q25_50_75'][0]:+.3f}, "
                         f"{r['added_p50_ms_q25_50_75'][2]:+.3f}] over {r['rounds']} rounds" for r in result["table"])
    leases = "".join(f", {k} {v:g}" for k, v in s.store_router().items())
    print(f"per-client state in the router vs in a store ({s.defenses}{leases}, batch {s.batch_size}, backend "
          f"{s.backend}), {result['settings']['cores']} cores shared by load generator, "
          f"router{', Triton' if s.backend == 'triton' else ''} and store\n"
          f"target: {TARGETS}: {'MET' if result['targets_met'] else 'NOT MET'}\n{table}\n"
          f"paired by round (median [quartiles] of each round's store minus in-process):\n{by_round}")
    write_result(a.out, "state_store_cost", result)
    print(f"result: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
