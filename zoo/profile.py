"""Latency profiles of zoo models, measured through a real Triton server.

Client side: wall-clock round trips of tritonclient HTTP calls (binary tensors), one client, after warm-up,
all models interleaved.
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
    requests_per_batch_size: int = 500
    warmup_requests: int = 20
    chunk_requests: int = 20  # models take turns, this many requests at a time (interleaved measurement)
    seed: int = 0  # which test samples are sent

    def as_dict(self):
        return {"batch_sizes": list(self.batch_sizes), "requests_per_batch_size": self.requests_per_batch_size,
                "warmup_requests": self.warmup_requests, "chunk_requests": self.chunk_requests, "seed": self.seed,
                "client": "tritonclient.http, 1 connection, models interleaved"}


def _stats(client, model: str) -> dict[str, int]:
    s = client.get_inference_statistics(model)["model_stats"][0]["inference_stats"]
    return {k: int(s[k]["ns"]) for k in ("queue", "compute_input", "compute_infer", "compute_output")} | {
        "count": int(s["success"]["count"])
    }


def profile_models(client, models: list[str], x: np.ndarray, s: ProfileSettings) -> dict[str, dict]:
    """Model -> {"client": [...], "triton": [...]} in the manifest's ModelLatency layout.

    Models are measured interleaved, ``chunk_requests`` at a time in turn, so that drift on a noisy machine
    (another process waking up, frequency changes) falls on every model alike instead of on whichever model
    happened to be measured at that moment."""
    import tritonclient.http as httpclient

    rng = np.random.default_rng(s.seed)
    want = [httpclient.InferRequestedOutput(OUTPUT_NAME, binary_data=True)]
    out = {m: {"client": [], "triton": []} for m in models}
    for batch in s.batch_sizes:
        inp = httpclient.InferInput(INPUT_NAME, [batch, x.shape[1]], "FP32")
        samples = [x[rng.integers(0, len(x), batch)] for _ in range(16)]

        def call(model: str, i: int) -> float:
            inp.set_data_from_numpy(samples[i % len(samples)], binary_data=True)
            t0 = time.perf_counter()
            client.infer(model, [inp], outputs=want)
            return (time.perf_counter() - t0) * 1e3

        for m in models:
            for i in range(s.warmup_requests):
                call(m, i)
        before = {m: _stats(client, m) for m in models}
        lat = {m: [] for m in models}
        busy_s = {m: 0.0 for m in models}
        for start in range(0, s.requests_per_batch_size, s.chunk_requests):
            for m in models:
                t0 = time.perf_counter()
                lat[m] += [call(m, i) for i in range(start, min(start + s.chunk_requests, s.requests_per_batch_size))]
                busy_s[m] += time.perf_counter() - t0
        for m in models:
            after = _stats(client, m)
            n = max(1, after["count"] - before[m]["count"])
            out[m]["client"].append({"batch_size": batch, "requests": s.requests_per_batch_size,
                                     **percentile_summary(lat[m]),
                                     "throughput_samples_per_s": batch * s.requests_per_batch_size / busy_s[m]})
            out[m]["triton"].append({"batch_size": batch} | {
                f"{k}_us": (after[k] - before[m][k]) / n / 1e3
                for k in ("queue", "compute_input", "compute_infer", "compute_output")})
    return out
