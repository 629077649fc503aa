"""Closed-loop load: C threads, each with its own system-under-test client, send requests back to back.

The measurement core knows nothing of routers or Triton: it calls ``sut.infer`` and records wall-clock time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LoopResult:
    latencies_ms: np.ndarray
    elapsed_s: float
    errors: int

    @property
    def throughput_per_s(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run_closed_loop(make_sut, inputs: list[np.ndarray], concurrency: int, requests_per_thread: int,
                    requirements: dict | None = None) -> LoopResult:
    """``make_sut()`` is called once per thread; ``inputs`` are cycled through."""
    requirements = requirements or {}
    suts = [make_sut() for _ in range(concurrency)]
    lat = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    barrier = threading.Barrier(concurrency + 1)

    def worker(i: int) -> None:
        barrier.wait()
        for k in range(requests_per_thread):
            x = inputs[(i * requests_per_thread + k) % len(inputs)]
            t0 = time.perf_counter()
            try:
                suts[i].infer(x, **requirements)
            except Exception:  # counted, not raised: one failed request must not end the measurement
                errors[i] += 1
                continue
            lat[i].append((time.perf_counter() - t0) * 1e3)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for s in suts:
        s.close()
    return LoopResult(np.concatenate([np.asarray(l) for l in lat]), elapsed, sum(errors))
