"""Where does the router saturate under Locust, and which process is the bottleneck?

Benign Locust users with no think time, in steps of rising user counts against one real router and Triton.
Per step: throughput and p50/p99 from Locust's CSV, and CPU used by each process (router; tritonserver with
its Python-backend stubs; Locust) in cores, i.e. CPU seconds per wall second. The machine has os.cpu_count()
cores in all; a single-process component is capped at 1 core. Saturation = the first step whose throughput
grows by less than 10% over the previous step.

    from benchmarks.locust_saturation import LocustSaturationSettings, run
    result = run(LocustSaturationSettings(users=(2, 8), step_s=5.0))

    python -m benchmarks.locust_saturation [--users 2 4 8 16 32 64] [--step-s 15]
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from loadtests.config import LoadSettings
from loadtests.summary import exact_latencies, locust_stats
from loadtests.run import run_locust
from common.errors import ConfigError
from common.results import write_result
from stack.loopback import router_for, triton_for
from common.tables import format_table


@dataclass(frozen=True)
class LocustSaturationSettings:
    zoo_dir: Path = Path("model_repository/default")
    users: tuple[int, ...] = (2, 4, 8, 16, 32, 64)  # benign Locust users per step, in the order run
    step_s: float = 15.0  # seconds per step
    processes: int = 0  # Locust worker processes (0: one process)
    seed: int = 0

    def __post_init__(self):
        if not self.users or min(self.users) < 1:
            raise ConfigError(f"--users: give user counts >= 1, got {list(self.users)}")
        if not self.step_s > 0:
            raise ConfigError(f"--step-s must be > 0 seconds, got {self.step_s:g}")
        if self.processes < 0:
            raise ConfigError(f"--processes must be >= 0 (0: one process), got {self.processes}")

    def as_dict(self) -> dict:
        """The settings under the names the result file has always used (its command-line flags)."""
        return {"zoo": str(self.zoo_dir), "users": list(self.users), "step_s": self.step_s,
                "processes": self.processes, "seed": self.seed}


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


def run(s: LocustSaturationSettings, log=functools.partial(print, flush=True)) -> dict:
    """One Locust step per user count against one router and Triton, a line logged per step; the result file's
    fields (``saturation``: the first step that grew by less than 10%, or None)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="psml-sat-") as tmp, triton_for(s.zoo_dir, tmp) as triton, \
            router_for(s.zoo_dir, tmp, triton, seed=s.seed) as router:
        for users in s.users:
            step_dir = Path(tmp) / f"u{users}"
            step_dir.mkdir()
            load = LoadSettings(data_file=str(Path(s.zoo_dir) / "data.npz"), out_dir=str(step_dir),
                                benign_users=users, attackers=0, spawn_rate_per_s=float(max(users, 1) * 4),
                                warmup_s=s.step_s, attack_s=0, cooldown_s=0, think_min_s=0.0, think_max_s=0.0,
                                seed=s.seed)
            before = (_cpu_s(router.process.pid, False), _cpu_s(triton.process.pid, True), _children_cpu_s())
            t0 = time.perf_counter()
            prefix = run_locust(router.url, load, step_dir, s.processes)
            wall = time.perf_counter() - t0
            after = (_cpu_s(router.process.pid, False), _cpu_s(triton.process.pid, True), _children_cpu_s())
            # counts and rate from Locust, percentiles from every request's exact time (Locust's are rounded)
            st = locust_stats(prefix)["benign /v1/infer"] | {
                k: v for k, v in exact_latencies(step_dir)["benign /v1/infer"].items() if k.endswith("_ms")}
            cores = [(b - c) / wall for b, c in zip(after, before)]
            rows.append(dict(users=users, rps=st["rps"], p50_ms=st["p50_ms"], p99_ms=st["p99_ms"],
                             failures=st["failures"], requests=st["requests"], router_cores=cores[0],
                             triton_cores=cores[1], locust_cores=cores[2]))
            log(f"  {users:>3} users: {st['rps']:.0f} req/s, p99 {st['p99_ms']:.3f} ms, cores router {cores[0]:.2f} "
                f"triton {cores[1]:.2f} locust {cores[2]:.2f}")
    saturation = next((rows[i] for i in range(1, len(rows)) if rows[i]["rps"] < 1.10 * rows[i - 1]["rps"]), None)
    return {"seed": s.seed, "settings": s.as_dict(), "steps": rows, "saturation": saturation}


def summary(result: dict) -> str:
    """The table, where it saturates and which process is busiest there, and whether the machine is CPU-bound."""
    rows, saturation = result["steps"], result["saturation"]
    lines = [format_table(rows, [("users", "users"), ("rps", "req/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
                                 ("router_cores", "router cores"), ("triton_cores", "triton cores"),
                                 ("locust_cores", "locust cores"), ("failures", "non-200")])]
    if saturation:
        busiest = max(("router", "triton", "locust"), key=lambda k: saturation[f"{k}_cores"])
        lines.append(f"saturates at {saturation['users']} users ({saturation['rps']:.0f} req/s); busiest process "
                     f"there: {busiest} ({saturation[busiest + '_cores']:.2f} of {os.cpu_count()} cores)")
    else:
        lines.append("no step grew by less than 10%: no saturation by that rule within the steps run")
    for r in rows:
        used = r["router_cores"] + r["triton_cores"] + r["locust_cores"]
        if used >= 0.9 * os.cpu_count():
            lines.append(f"from {r['users']} users the three processes use {used:.2f} of {os.cpu_count()} cores: "
                         "the machine itself is CPU-bound")
            break
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="model_repository/default")
    ap.add_argument("--users", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    ap.add_argument("--step-s", type=float, default=15.0, help="seconds per step")
    ap.add_argument("--processes", type=int, default=0, help="Locust worker processes (0: one process)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/locust_saturation.json")
    a = ap.parse_args(argv)
    try:
        s = LocustSaturationSettings(Path(a.zoo), tuple(a.users), a.step_s, a.processes, a.seed)
    except ConfigError as e:
        ap.error(str(e))
    result = run(s)
    result["settings"] |= {"out": a.out}
    print(summary(result))
    write_result(a.out, "locust_saturation", result)
    print(f"result: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
