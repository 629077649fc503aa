"""Latency profiles of zoo models, measured through a real Triton server.

Client side: wall-clock round trips of tritonclient HTTP calls (binary tensors), one client, after warm-up.
Server side: Triton's cumulative /v2/models/<m>/stats, differenced over the same run and divided by the
request count, which splits each request into queue and compute (input, infer, output) time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from psml.stats import percentile_summary

from .export import INPUT_NAME, OUTPUT_NAME


@dataclass(frozen=True)
class ProfileSettings:
    batch_sizes: tuple[int, ...] = (1, 32)
    requests_per_batch_size: int = 300
    warmup_requests: int = 20
    seed: int = 0  # which test samples are sent

    def as_dict(self):
        return {"batch_sizes": list(self.batch_sizes), "requests_per_batch_size": self.requests_per_batch_size,
                "warmup_requests": self.warmup_requests, "seed": self.seed, "client": "tritonclient.http, 1 connection"}


def _stats(client, model: str) -> dict[str, int]:
    s = client.get_inference_statistics(model)["model_stats"][0]["inference_stats"]
    return {k: int(s[k]["ns"]) for k in ("queue", "compute_input", "compute_infer", "compute_output")} | {
        "count": int(s["success"]["count"])
    }


def profile_model(client, model: str, x: np.ndarray, s: ProfileSettings) -> dict:
    """Returns {"client": [...], "triton": [...]} in the manifest's ModelLatency layout."""
    import tritonclient.http as httpclient

    rng = np.random.default_rng(s.seed)
    out = {"client": [], "triton": []}
    for batch in s.batch_sizes:
        inp = httpclient.InferInput(INPUT_NAME, [batch, x.shape[1]], "FP32")
        want = [httpclient.InferRequestedOutput(OUTPUT_NAME, binary_data=True)]
        samples = [x[rng.integers(0, len(x), batch)] for _ in range(min(16, s.requests_per_batch_size))]
        for i in range(s.warmup_requests):
            inp.set_data_from_numpy(samples[i % len(samples)], binary_data=True)
            client.infer(model, [inp], outputs=want)
        before = _stats(client, model)
        lat = np.empty(s.requests_per_batch_size)
        start = time.perf_counter()
        for i in range(s.requests_per_batch_size):
            inp.set_data_from_numpy(samples[i % len(samples)], binary_data=True)
            t0 = time.perf_counter()
            client.infer(model, [inp], outputs=want)
            lat[i] = (time.perf_counter() - t0) * 1e3
        elapsed = time.perf_counter() - start
        after = _stats(client, model)
        n = max(1, after["count"] - before["count"])
        out["client"].append({"batch_size": batch, "requests": s.requests_per_batch_size, **percentile_summary(lat),
                              "throughput_samples_per_s": batch * s.requests_per_batch_size / elapsed})
        out["triton"].append({"batch_size": batch} | {
            f"{k}_us": (after[k] - before[k]) / n / 1e3 for k in ("queue", "compute_input", "compute_infer", "compute_output")
        })
    return out
