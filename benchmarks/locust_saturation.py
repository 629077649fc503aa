"""Where does the router saturate under Locust, and which process is the bottleneck?

Benign Locust users with no think time, in steps of rising user counts against one real router and Triton.
Per step: throughput and p50/p99 from Locust's CSV, and CPU used by each process (router; tritonserver with
its Python-backend stubs; Locust) in cores, i.e. CPU seconds per wall second. The machine has os.cpu_count()
cores in all; a single-process component is capped at 1 core. Saturation = the first step whose throughput
grows by less than 10% over the previous step.

    python -m benchmarks.locust_saturation [--users 2 4 8 16 32 64] [--step-s 15]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import psutil

from loadtests.config import LoadSettings
from loadtests.summary import exact_latencies, locust_stats
from loadtests.run import run_locust
from common.results import write_result
from stack.loopback import router_for, triton_for
from common.tables import format_table


def _cpu_s(pid: int, children: bool) -> float:
    try:
        p = psutil.Process(pid)
        procs = [p] + (p.children(recursive=True) if children else [])
        total = 0.0
        for q in procs:
            try:
                t = q.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total
    except psutil.NoSuchProcess:
        return 0.0


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="model_repository/default")
    ap.add_argument("--users", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    ap.add_argument("--step-s", type=float, default=15.0, help="seconds per step")
    ap.add_argument("--processes", type=int, default=0, help="Locust worker processes (0: one process)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/locust_saturation.json")
    a = ap.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="psml-sat-") as tmp, triton_for(a.zoo, tmp) as triton, \
            router_for(a.zoo, tmp, triton, seed=a.seed) as router:
        for users in a.users:
            step_dir = Path(tmp) / f"u{users}"
            step_dir.mkdir()
            s = LoadSettings(data_file=str(Path(a.zoo) / "data.npz"), out_dir=str(step_dir), benign_users=users,
                             attackers=0, spawn_rate_per_s=float(max(users, 1) * 4), warmup_s=a.step_s, attack_s=0,
                             cooldown_s=0, think_min_s=0.0, think_max_s=0.0, seed=a.seed)
            before = (_cpu_s(router.process.pid, False), _cpu_s(triton.process.pid, True), _children_cpu_s())
            t0 = time.perf_counter()
            prefix = run_locust(router.url, s, step_dir, a.processes)
            wall = time.perf_counter() - t0
            after = (_cpu_s(router.process.pid, False), _cpu_s(triton.process.pid, True), _children_cpu_s())
            # counts and rate from Locust, percentiles from every request's exact time (Locust's are rounded)
            st = locust_stats(prefix)["benign /v1/infer"] | {
                k: v for k, v in exact_latencies(step_dir)["benign /v1/infer"].items() if k.endswith("_ms")}
            cores = [(b - c) / wall for b, c in zip(after, before)]
            rows.append(dict(users=users, rps=st["rps"], p50_ms=st["p50_ms"], p99_ms=st["p99_ms"],
                             failures=st["failures"], requests=st["requests"], router_cores=cores[0],
                             triton_cores=cores[1], locust_cores=cores[2]))
            print(f"  {users:>3} users: {st['rps']:.0f} req/s, p99 {st['p99_ms']:.3f} ms, cores router {cores[0]:.2f} "
                  f"triton {cores[1]:.2f} locust {cores[2]:.2f}", flush=True)
    saturation = next((rows[i] for i in range(1, len(rows)) if rows[i]["rps"] < 1.10 * rows[i - 1]["rps"]), None)
    print(format_table(rows, [("users", "users"), ("rps", "req/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
                              ("router_cores", "router cores"), ("triton_cores", "triton cores"),
                              ("locust_cores", "locust cores"), ("failures", "non-200")]))
    if saturation:
        busiest = max(("router", "triton", "locust"), key=lambda k: saturation[f"{k}_cores"])
        print(f"saturates at {saturation['users']} users ({saturation['rps']:.0f} req/s); busiest process there: "
              f"{busiest} ({saturation[busiest + '_cores']:.2f} of {os.cpu_count()} cores)")
    else:
        print("no step grew by less than 10%: no saturation by that rule within the steps run")
    for r in rows:
        used = r["router_cores"] + r["triton_cores"] + r["locust_cores"]
        if used >= 0.9 * os.cpu_count():
            print(f"from {r['users']} users the three processes use {used:.2f} of {os.cpu_count()} cores: "
                  "the machine itself is CPU-bound")
            break
    write_result(a.out, "locust_saturation", {"seed": a.seed, "settings": vars(a), "steps": rows,
                                              "saturation": saturation})
    print(f"result: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
