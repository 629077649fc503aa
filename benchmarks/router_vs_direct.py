"""Router vs direct Triton, interleaved in one run, at several concurrencies.

Both systems serve the same model with the same inputs: the router is asked for that model's exact accuracy
under the fastest_feasible policy (so it always selects it), the direct client calls it by name. Rounds
alternate router/direct so drift on a noisy machine hits both alike. A null system measures the client
harness itself, and a second router with the null backend measures the router's own cost. Prints p50/p99 and throughput ratios and writes a JSON result with settings and versions.

    python -m benchmarks.router_vs_direct [--zoo model_repository/default] [--model NAME]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from psml.atomic import write_json_atomic
from psml.stack import DEMO_KEYS, router_for, triton_for
from psml.stats import percentile_summary
from psml.sut import DirectTriton, NullSystem, RouterClient
from psml.tables import format_table
from psml.versions import hardware, software_versions
from zoo.data import Dataset
from zoo.manifest import load_manifest

from psml.closed_loop import run_closed_loop


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="model_repository/default")
    ap.add_argument("--model", help="zoo model to serve (default: the fastest Pareto model)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests-per-round", type=int, default=400, help="requests per system per round (all threads)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating router/direct rounds per concurrency")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/router_vs_direct.json")
    a = ap.parse_args(argv)

    manifest = load_manifest(a.zoo)
    model = manifest.model(a.model) if a.model else min(manifest.pareto_models(), key=lambda m: m.selection_latency_ms)
    data = Dataset.load(Path(a.zoo) / manifest.zoo.dataset.data_file)
    rng = np.random.default_rng(a.seed)
    inputs = [data.x["test"][rng.integers(0, len(data.x["test"]), a.batch_size)] for _ in range(256)]
    key = next(iter(DEMO_KEYS))
    rows, raw = [], {}
    with tempfile.TemporaryDirectory(prefix="psml-bench-") as tmp, triton_for(a.zoo, tmp) as triton, \
            router_for(a.zoo, tmp, triton, policy="fastest_feasible", seed=a.seed) as router, \
            router_for(a.zoo, tmp, triton, "router_null", backend="null", seed=a.seed) as router_null:
        systems = {
            "router": (lambda: RouterClient(router.url, key), {"min_accuracy": model.accuracy}),
            "direct": (lambda: DirectTriton(triton.endpoints.http_url, model.name), {}),
            "router_null": (lambda: RouterClient(router_null.url, key), {}),  # the router's own cost, no Triton
            "null": (lambda: NullSystem(), {}),  # the client harness's own cost
        }
        for c in a.concurrency:
            per_thread = max(1, a.requests_per_round // c)
            for make, req in systems.values():  # warm-up: connections, stubs, caches
                run_closed_loop(make, inputs, c, max(2, per_thread // 10), req)
            lat = {n: [] for n in systems}
            elapsed = {n: 0.0 for n in systems}
            errors = {n: 0 for n in systems}
            for r in range(a.rounds):
                order = list(systems) if r % 2 == 0 else list(reversed(systems))
                for name in order:
                    make, req = systems[name]
                    res = run_closed_loop(make, inputs, c, per_thread, req)
                    lat[name].append(res.latencies_ms)
                    elapsed[name] += res.elapsed_s
                    errors[name] += res.errors
            summary = {}
            for name in systems:
                l = np.concatenate(lat[name])
                summary[name] = percentile_summary(l) | {"requests": int(len(l)), "errors": errors[name],
                                                         "throughput_per_s": len(l) / elapsed[name]}
            raw[str(c)] = summary
            r_, d_ = summary["router"], summary["direct"]
            rows.append(dict(concurrency=c, router_p50=r_["p50_ms"], direct_p50=d_["p50_ms"],
                             p50_ratio=r_["p50_ms"] / d_["p50_ms"], p99_ratio=r_["p99_ms"] / d_["p99_ms"],
                             router_tput=r_["throughput_per_s"], direct_tput=d_["throughput_per_s"],
                             tput_ratio=r_["throughput_per_s"] / d_["throughput_per_s"],
                             router_null_p50=summary["router_null"]["p50_ms"],
                             router_null_tput=summary["router_null"]["throughput_per_s"],
                             null_p50=summary["null"]["p50_ms"], errors=r_["errors"] + d_["errors"]))
    table = format_table(rows, [("concurrency", "conc"), ("router_p50", "router p50 ms"), ("direct_p50", "direct p50 ms"),
                                ("p50_ratio", "p50 ratio"), ("p99_ratio", "p99 ratio"), ("router_tput", "router req/s"),
                                ("direct_tput", "direct req/s"), ("tput_ratio", "tput ratio"),
                                ("router_null_p50", "router+null p50 ms"), ("router_null_tput", "router+null req/s"),
                                ("null_p50", "harness p50 ms"), ("errors", "errors")])
    print(f"router vs direct Triton, model {model.name}, batch {a.batch_size} (targets: p50 ratio <= 1.15, "
          f"throughput ratio >= 0.85 at concurrency 16)\n{table}")
    write_json_atomic(Path(a.out), {
        "benchmark": "router_vs_direct", "created_unix": time.time(), "seed": a.seed,
        "settings": vars(a) | {"model": model.name, "zoo": manifest.zoo.name},
        "results": raw, "table": rows, "hardware": hardware(), "software": software_versions(),
    })
    print(f"result: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
