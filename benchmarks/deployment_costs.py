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

    python -m benchmarks.deployment_costs [--zoo model_repository/default] [--batch-sizes 1 32 256]
        [--requests 60] [--seed 0] [--out results/deployment_costs.json]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np

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


class _Recording:
    """A router client that keeps each answer's request id, in order (one thread: order = time order)."""

    def __init__(self, url: str, key: str, ids: list[str]):
        self.client, self.ids = RouterClient(url, key), ids

    def infer(self, x, min_accuracy=None, max_latency_ms=None):
        answer = self.client.answer(x, min_accuracy, max_latency_ms)
        self.ids.append(answer["request_id"])
        return answer["probabilities"]

    def close(self):
        self.client.close()


def padding_rows(zoo: str, batch_sizes: list[int], n: int, seed: int) -> list[dict]:
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
                    ids: list[str] = []
                    res = run_closed_loop(lambda: _Recording(router.url, key, ids), inputs, 1, n,
                                          {"min_accuracy": 0.0}, warmup_per_thread=5)
                    ids = ids[5:]  # the warm-up's answers
                    model = {r["request_id"]: r["model"] for r in read_audit_log(router.audit_path)}
                    by_model: dict[str, list[float]] = {}
                    for rid, t in zip(ids, res.latencies_ms):
                        by_model.setdefault(model[rid], []).append(float(t))
                    p50s = {m: float(np.median(v)) for m, v in sorted(by_model.items())}
                    rows.append({"config": name, "batch": batch, "requests": len(res.latencies_ms),
                                 **percentile_summary(res.latencies_ms), "p50_by_model_ms": p50s,
                                 "leak_ratio": max(p50s.values()) / min(p50s.values()) if len(p50s) > 1 else None})
                    print(f"{name}: batch {batch} done", flush=True)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="model_repository/default")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 256])
    ap.add_argument("--requests", type=int, default=60, help="measured requests per router and batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/deployment_costs.json")
    a = ap.parse_args(argv)
    rows = padding_rows(a.zoo, a.batch_sizes, a.requests, a.seed)
    deadline = deadline_cost_us()
    print(format_table(rows, [("config", "router"), ("batch", "batch"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
                              ("per_model", "p50 per model ms"), ("leak_ratio", "slowest/fastest model"),
                              ("benign_cost_p50_ms", "benign cost p50 ms")]))
    print(f"body deadline: {deadline['added_us_per_request']:.2f} us of CPU per request "
          f"({deadline['bare_us']:.2f} -> {deadline['with_deadline_us']:.2f} us per body read)")
    write_result(a.out, "deployment_costs", {"seed": a.seed, "settings": vars(a) | {"configs": CONFIGS},
                                             "padding": rows, "body_deadline": deadline})
    print(f"result: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
