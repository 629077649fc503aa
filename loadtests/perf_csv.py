"""A perf_analyzer-style CSV per run, so psml's results sit beside Triton's own tools (times in microseconds).

Columns as perf_analyzer writes them (``-f``): the load ("Request Rate" for an open loop, "Concurrency" for
Locust's closed loop), Inferences/Second (samples answered 200 per second: a benign request carries 1..8
samples), Client Send (open loop: mean time from the scheduled send to the request leaving the generator, the
bodies being built before the run; blank for Locust), Network+Server Send/Recv (the mean latency less every
other column: network, the router's own work and its defenses), Server Queue and Server Compute
Input/Infer/Output (Triton's statistics extension, ``/v2/models/stats``, deltas over the run, mean per Triton
request over every model and every client, attackers included), Client Recv (mean time to decode the answer),
p50/p90/p95/p99 and Avg latency (open loop: from the scheduled send, requests answered 200).
"""

from __future__ import annotations

import csv
import json
import urllib.request
from pathlib import Path

COLUMNS = ["Inferences/Second", "Client Send", "Network+Server Send/Recv", "Server Queue", "Server Compute Input",
           "Server Compute Infer", "Server Compute Output", "Client Recv", "p50 latency", "p90 latency",
           "p95 latency", "p99 latency", "Avg latency"]
TRITON_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def triton_stats(http_url: str | None, timeout_s: float = 5.0) -> dict | None:
    """Triton's cumulative per-model statistics {model: {phase: (count, ns)}}; None without a Triton URL."""
    if not http_url:
        return None
    url = f"http://{http_url.split('://', 1)[-1].rstrip('/')}/v2/models/stats"
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        stats = json.loads(r.read())
    return {m["name"]: {p: (m["inference_stats"][p]["count"], m["inference_stats"][p]["ns"]) for p in TRITON_PHASES}
            for m in stats.get("model_stats", [])}


def server_means_us(before: dict | None, after: dict | None) -> dict[str, float | None]:
    """Mean microseconds per Triton request in each phase between two readings (None without both)."""
    if before is None or after is None:
        return {p: None for p in TRITON_PHASES}
    out = {}
    for p in TRITON_PHASES:
        count = sum(after[m][p][0] - before.get(m, {}).get(p, (0, 0))[0] for m in after)
        ns = sum(after[m][p][1] - before.get(m, {}).get(p, (0, 0))[1] for m in after)
        out[p] = ns / count / 1e3 if count else None
    return out


def perf_row(load_column: str, load: float, inferences_per_s: float | None, latency_ms: dict, server_us: dict,
             client_send_us: float | None = None, client_recv_us: float | None = None) -> dict:
    """One row; ``latency_ms``: p50_ms, p90_ms, p95_ms, p99_ms, mean_ms."""
    us = lambda k: None if latency_ms.get(k) is None else latency_ms[k] * 1e3
    avg = us("mean_ms")
    parts = [client_send_us, client_recv_us, *server_us.values()]
    rest = None if avg is None else max(0.0, avg - sum(p for p in parts if p is not None))
    row = {load_column: load, "Inferences/Second": inferences_per_s, "Client Send": client_send_us,
           "Network+Server Send/Recv": rest, "Server Queue": server_us["queue"],
           "Server Compute Input": server_us["compute_input"], "Server Compute Infer": server_us["compute_infer"],
           "Server Compute Output": server_us["compute_output"], "Client Recv": client_recv_us,
           "p50 latency": us("p50_ms"), "p90 latency": us("p90_ms"), "p95 latency": us("p95_ms"),
           "p99 latency": us("p99_ms"), "Avg latency": avg}
    # perf_analyzer writes whole microseconds; blank where psml has no figure
    return {k: ("" if v is None else round(v) if k != "Inferences/Second" else round(v, 2)) for k, v in row.items()}


def write_perf_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
