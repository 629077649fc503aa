"""What the deployment's hardening costs per request, measured side by side in one run on one Triton.

1. Padding at every batch size: three routers on the same zoo (pareto_uniform, same seed): no padding; padding
   to the slowest front model with a floor fixed at the profile's batch size (``per_sample_ms: 0``, how psml
   padded before); padding whose floor grows per sample (the default). For batches of 1, 32 and 256 samples,
   one client back to back (stack/closed_loop.py, concurrency 1, so every time maps to its request id and the
   audit log's serving model): p50/p99 over all requests, p50 per serving model, and the leak: the ratio of the
   slowest to the fastest model's p50 (1.0 = the models cannot be told apart by time). Benign cost = p50 with
   padding minus p50 without.
2. The body deadline: CPU per request of reading a body under ``asyncio.timeout`` against reading it bare, on
   uvloop (the router's loop), from a receive callable that answers at once.

    from benchmarks.deployment_costs import DeploymentCostsSettings, run
    result = run(DeploymentCostsSettings(batch_sizes=(1,), requests=20))

    python -m benchmarks.deployment_costs [--zoo model_repository/default] [--batch-sizes 1 32 256]
        [--requests 60] [--seed 0] [--out results/deployment_costs.json]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import ConfigError
from common.results import write_result
from common.stats import percentile_summary
from common.tables import format_table
from router.audit_log import read_audit_log
from stack.clients import RouterClient
from stack.closed_loop import run_closed_loop
from stack.loopback import DEMO_KEYS, router_for, triton_for
from zoo.data import Dataset
from zoo.manifest import load_manifest

CONFIGS = {
    "none": [],
    "padding, floor at batch 1": [{"name": "latency_padding", "floor": "slowest_front", "per_sample_ms": 0.0,
                                   "learn_quantile": None}],
    "padding per batch size": [{"name": "latency_padding", "floor": "slowest_front"}],
}


@dataclass(frozen=True)
class DeploymentCostsSettings:
    zoo_dir: Path = Path("model_repository/default")
    batch_sizes: tuple[int, ...] = (1, 32, 256)  # samples per request
    requests: int = 60  # measured requests per router and batch size (after 5 warm-up requests)
    seed: int = 0  # the inputs drawn; the routers' seed
    deadline_iterations: int = 200_000  # body reads timed for the deadline's CPU cost

    def __post_init__(self):
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"--batch-sizes: give one or more sizes of at least 1, got {self.batch_sizes}")
        if self.requests < 1 or self.deadline_iterations < 1:
            raise ConfigError(f"--requests and deadline_iterations must be at least 1, got {self.requests} and "
                              f"{self.deadline_iterations}")

    def as_dict(self) -> dict:
        """The settings under the names the result file has always used (its command-line flags)."""
        return {"zoo": str(self.zoo_dir), "batch_sizes": list(self.batch_sizes), "requests": self.requests,
                "seed": self.seed}


class _Answers:
    """A router client whose ``infer`` answers the whole answer (its request id with it)."""

    def __init__(self, url: str, key: str):
        self.client = RouterClient(url, key)

    def infer(self, x, min_accuracy=None, max_latency_ms=None) -> dict:
        return self.client.answer(x, min_accuracy, max_latency_ms)

    def close(self):
        self.client.close()


def padding_rows(zoo: str, batch_sizes: list[int], n: int, seed: int, log=print) -> list[dict]:
    manifest = load_manifest(zoo)
    data = Dataset.load(Path(zoo) / manifest.zoo.dataset.data_file)
    rng = np.random.default_rng(seed)
    key = next(iter(DEMO_KEYS))
    rows = []
    with tempfile.TemporaryDirectory(prefix="psml-costs-") as tmp, triton_for(zoo, tmp) as triton:
        for name, defenses in CONFIGS.items():
            tag = name.replace(" ", "_").replace(",", "")
            with router_for(zoo, tmp, triton, tag, defenses=defenses, seed=seed) as router:
                for batch in batch_sizes:
                    inputs = [data.x["test"][rng.integers(0, len(data.x["test"]), batch)] for _ in range(16)]
                    ids: list[str] = []  # each measured answer's request id, in order (one client)
                    res = run_closed_loop(lambda: _Answers(router.url, key), inputs, 1, n, {"min_accuracy": 0.0},
                                          warmup_per_thread=5, on_request=lambda i, k, req, ms, answer, error:
                                          None if error else ids.append(answer["request_id"]))
                    model = {r["request_id"]: r["model"] for r in read_audit_log(router.audit_path)}
                    by_model: dict[str, list[float]] = {}
                    for rid, t in zip(ids, res.latencies_ms):
                        by_model.setdefault(model[rid], []).append(float(t))
                    p50s = {m: float(np.median(v)) for m, v in sorted(by_model.items())}
                    rows.append({"config": name, "batch": batch, "requests": len(res.latencies_ms),
                                 **percentile_summary(res.latencies_ms), "p50_by_model_ms": p50s,
                                 "leak_ratio": max(p50s.values()) / min(p50s.values()) if len(p50s) > 1 else None})
                    log(f"{name}: batch {batch} done")
    base = {r["batch"]: r["p50_ms"] for r in rows if r["config"] == "none"}
    for r in rows:
        r["benign_cost_p50_ms"] = r["p50_ms"] - base[r["batch"]]
        r["per_model"] = " / ".join(f"{v:.1f}" for v in r["p50_by_model_ms"].values())
    return rows


def deadline_cost_us(iterations: int = 200_000) -> dict:
    import uvloop

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def bare():
        t0 = time.process_time()
        for _ in range(iterations):
            await receive()
        return time.process_time() - t0

    async def deadline():
        t0 = time.process_time()
        for _ in range(iterations):
            async with asyncio.timeout(5.0):
                await receive()
        return time.process_time() - t0

    runner = uvloop.new_event_loop()
    try:
        b = min(runner.run_until_complete(bare()) for _ in range(3))
        d = min(runner.run_until_complete(deadline()) for _ in range(3))
    finally:
        runner.close()
    return {"bare_us": b / iterations * 1e6, "with_deadline_us": d / iterations * 1e6,
            "added_us_per_request": (d - b) / iterations * 1e6, "iterations": iterations}


def run(s: DeploymentCostsSettings, log=functools.partial(print, flush=True)) -> dict:
    """Padding at every batch size, then the body deadline's CPU cost; the result file's fields."""
    rows = padding_rows(s.zoo_dir, list(s.batch_sizes), s.requests, s.seed, log)
    return {"seed": s.seed, "settings": s.as_dict() | {"configs": CONFIGS}, "padding": rows,
            "body_deadline": deadline_cost_us(s.deadline_iterations)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="model_repository/default")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 256])
    ap.add_argument("--requests", type=int, default=60, help="measured requests per router and batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/deployment_costs.json")
    a = ap.parse_args(argv)
    try:
        s = DeploymentCostsSettings(Path(a.zoo), tuple(a.batch_sizes), a.requests, a.seed)
    except ConfigError as e:
        print(f"error: {e}")
        return 2
    result = run(s)
    result["settings"] = s.as_dict() | {"out": a.out, "configs": CONFIGS}  # the keys in the order they always had
    deadline = result["body_deadline"]
    print(format_table(result["padding"], [
        ("config", "router"), ("batch", "batch"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
        ("per_model", "p50 per model ms"), ("leak_ratio", "slowest/fastest model"),
        ("benign_cost_p50_ms", "benign cost p50 ms")]))
    print(f"body deadline: {deadline['added_us_per_request']:.2f} us of CPU per request "
          f"({deadline['bare_us']:.2f} -> {deadline['with_deadline_us']:.2f} us per body read)")
    write_result(a.out, "deployment_costs", result)
    print(f"result: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
