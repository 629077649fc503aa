"""Closed-loop load: C clients, each with its own system-under-test client, send requests back to back.

The measurement core knows nothing of routers or Triton: it calls ``sut.infer`` and records wall-clock time.
Used by zoo profiles, ``psml zoo validate`` and the benchmarks alike, so every system is measured by the same
code. Two drivers with the same rules and the same result: ``run_closed_loop`` (C threads, blocking clients)
and ``run_closed_loop_async`` (C coroutines on one event loop, asyncio clients). What each driver costs by
itself is measured against a null system (stack/clients.py; benchmarks/router_vs_direct.py prints it).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LoopResult:
    latencies_ms: np.ndarray  # exact per-request wall-clock times of successful requests
    elapsed_s: float
    errors: int
    first_error: str | None = None

    @property
    def throughput_per_s(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run_closed_loop(make_sut, inputs: list[np.ndarray], concurrency: int, requests_per_thread: int,
                    requirements: dict | None = None, duration_s: float | None = None,
                    warmup_per_thread: int = 0, after_warmup=None) -> LoopResult:
    """``make_sut()`` is called once per thread; ``inputs`` are cycled through.

    Each thread sends at least ``requests_per_thread`` requests; with ``duration_s`` it keeps sending until that
    much time has passed as well (so a slow system gets a bounded time, a fast one a bounded count).
    ``warmup_per_thread`` requests go first on the same clients (connections open, caches warm) and are not
    recorded; ``after_warmup()`` runs once they are all done, just before the measured requests start."""
    requirements = requirements or {}
    suts = [make_sut() for _ in range(concurrency)]
    lat = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    first_error: list[str] = []
    barrier = threading.Barrier(concurrency + 1)
    go, aborted = threading.Event(), threading.Event()
    start = [0.0]

    def more(k: int) -> bool:
        if aborted.is_set():
            return False
        if k < requests_per_thread:
            return True
        return duration_s is not None and time.perf_counter() - start[0] < duration_s

    def worker(i: int) -> None:
        for k in range(warmup_per_thread):
            try:
                suts[i].infer(inputs[(i + k) % len(inputs)], **requirements)
            except Exception:  # a failing system shows in the measured requests, which count their errors
                pass
        barrier.wait()
        go.wait()
        k = 0
        while more(k):
            x = inputs[(i * 7919 + k) % len(inputs)]
            k += 1
            t0 = time.perf_counter()
            try:
                suts[i].infer(x, **requirements)
            except Exception as e:  # counted, not raised: one failed request must not end the measurement
                errors[i] += 1
                if not first_error:
                    first_error.append(f"{type(e).__name__}: {e}")
                continue
            lat[i].append((time.perf_counter() - t0) * 1e3)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()  # released once every thread has warmed up ...
    try:
        if after_warmup is not None:
            after_warmup()
    except BaseException:
        aborted.set()  # the threads send nothing more and end; the caller sees the error
        raise
    finally:
        start[0] = time.perf_counter()
        go.set()  # ... and the measured requests start together
        for t in threads:
            t.join()
    elapsed = time.perf_counter() - start[0]
    for s in suts:
        s.close()
    return LoopResult(np.concatenate([np.asarray(l, dtype=float) for l in lat]), elapsed, sum(errors),
                      first_error[0] if first_error else None)


def run_closed_loop_async(make_sut, inputs: list[np.ndarray], concurrency: int, requests_per_client: int,
                          requirements: dict | None = None, duration_s: float | None = None,
                          warmup_per_client: int = 0, after_warmup=None) -> LoopResult:
    """The asyncio driver: ``concurrency`` coroutines on one event loop in this thread (started and ended here),
    each with its own client from ``make_sut()``, called inside the loop (an asyncio system: ``await
    sut.infer(x, **requirements)``, ``await sut.close()``). The same rules as ``run_closed_loop``: inputs cycled
    in the same order per client, at least ``requests_per_client`` each and, with ``duration_s``, until that much
    time has passed too; warm-up requests first on the same clients, not recorded; ``after_warmup()`` between;
    failed requests counted, not raised. A request's time is the client's: from the call to the answer back in
    the coroutine, so it includes the loop's turn, as an asyncio client sees it."""
    return asyncio.run(_drive(make_sut, inputs, concurrency, requests_per_client, requirements or {}, duration_s,
                              warmup_per_client, after_warmup))


async def _drive(make_sut, inputs, concurrency, requests_per_client, requirements, duration_s, warmup_per_client,
                 after_warmup) -> LoopResult:
    suts = [make_sut() for _ in range(concurrency)]
    lat = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    first_error: list[str] = []
    start = 0.0

    async def warm(i: int) -> None:
        for k in range(warmup_per_client):
            try:
                await suts[i].infer(inputs[(i + k) % len(inputs)], **requirements)
            except Exception:  # a failing system shows in the measured requests, which count their errors
                pass

    async def client(i: int) -> None:
        k = 0
        while k < requests_per_client or (duration_s is not None and time.perf_counter() - start < duration_s):
            x = inputs[(i * 7919 + k) % len(inputs)]
            k += 1
            t0 = time.perf_counter()
            try:
                await suts[i].infer(x, **requirements)
            except Exception as e:  # counted, not raised: one failed request must not end the measurement
                errors[i] += 1
                if not first_error:
                    first_error.append(f"{type(e).__name__}: {e}")
                continue
            lat[i].append((time.perf_counter() - t0) * 1e3)

    try:
        await asyncio.gather(*(warm(i) for i in range(concurrency)))
        if after_warmup is not None:
            after_warmup()
        start = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
    finally:
        for s in suts:
            await s.close()
    return LoopResult(np.concatenate([np.asarray(l, dtype=float) for l in lat]), elapsed, sum(errors),
                      first_error[0] if first_error else None)
