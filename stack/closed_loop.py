"""Closed-loop load: C clients, each with its own system-under-test client, send requests back to back.

The measurement core knows nothing of routers or Triton: it calls ``sut.infer`` and records wall-clock time.
Used by zoo profiles, ``psml zoo validate`` and every benchmark, so every system is measured by the same code.
Three drivers with the same rules and the same result: ``run_closed_loop`` (C threads, blocking clients),
``run_closed_loop_async`` (C coroutines on one event loop, asyncio clients) and ``run_interleaved`` (one thread,
the caller's clients taking turns: request k of each client, then request k + 1). What each driver costs by
itself is measured against a null system (stack/clients.py; benchmarks/router_vs_direct.py prints it).

What a client sends and what is made of each answer are the caller's, through two optional callables:
- ``request_for(i, k)``: client i's k-th measured request, a tuple ``(x, requirements, *labels)`` (the labels, any
  number, are the caller's, handed back to ``on_request``); default: ``inputs`` cycled, with ``requirements``;
- ``on_request(i, k, request, ms, answer, error)``: after each measured request with its exact time (a failed
  one too: ``error`` is what it raised, ``answer`` None). It may return a pause in seconds the client waits
  before its next request (untimed; cut at the end of ``duration_s``); what it raises ends the measurement and
  is raised by the driver.
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


class _Tally:
    """Each client's successful times and error count (one list per client: no lock between threads)."""

    def __init__(self, clients: int):
        self.lat = [[] for _ in range(clients)]
        self.errors = [0] * clients
        self.first_error: list[str] = []

    def add(self, i: int, ms: float, error: BaseException | None) -> None:
        if error is None:
            self.lat[i].append(ms)
            return
        self.errors[i] += 1
        if not self.first_error:
            self.first_error.append(f"{type(error).__name__}: {error}")

    def result(self, elapsed_s: float) -> LoopResult:
        return LoopResult(np.concatenate([np.asarray(l, dtype=float) for l in self.lat]), elapsed_s,
                          sum(self.errors), self.first_error[0] if self.first_error else None)


def _cycled(inputs, requirements):
    """The default requests: inputs cycled from a different offset per client, the same requirements for all."""
    def request_for(i: int, k: int) -> tuple:
        return inputs[(i * 7919 + k) % len(inputs)], requirements
    return request_for


def _send(sut, request) -> tuple[float, object, Exception | None]:
    """One blocking request, timed: (ms, answer, error)."""
    t0 = time.perf_counter()
    try:
        answer, error = sut.infer(request[0], **request[1]), None
    except Exception as e:  # counted, not raised: one failed request must not end the measurement
        answer, error = None, e
    return (time.perf_counter() - t0) * 1e3, answer, error


def _pause(pause_s, stop_at: float | None) -> float:
    """How long a client waits after a request: the pause asked for, cut at the end of the duration."""
    if not pause_s:
        return 0.0
    return pause_s if stop_at is None else min(pause_s, max(0.0, stop_at - time.perf_counter()))


def run_closed_loop(make_sut, inputs: list[np.ndarray] | None, concurrency: int, requests_per_thread: int,
                    requirements: dict | None = None, duration_s: float | None = None,
                    warmup_per_thread: int = 0, after_warmup=None, *, request_for=None,
                    on_request=None) -> LoopResult:
    """``make_sut()`` is called once per thread; ``inputs`` are cycled through (or ``request_for`` says what).

    Each thread sends at least ``requests_per_thread`` requests; with ``duration_s`` it keeps sending until that
    much time has passed as well (so a slow system gets a bounded time, a fast one a bounded count).
    ``warmup_per_thread`` requests go first on the same clients (connections open, caches warm) and are not
    recorded; ``after_warmup()`` runs once they are all done, just before the measured requests start."""
    requirements = requirements or {}
    request_for = request_for or _cycled(inputs, requirements)
    suts = [make_sut() for _ in range(concurrency)]
    tally, raised = _Tally(concurrency), []
    barrier = threading.Barrier(concurrency + 1)
    go, aborted = threading.Event(), threading.Event()
    start = [0.0]

    def more(k: int) -> bool:
        if aborted.is_set():
            return False
        if k < requests_per_thread:
            return True
        return duration_s is not None and time.perf_counter() - start[0] < duration_s

    def measured(i: int) -> None:
        k = 0
        while more(k):
            request = request_for(i, k)
            ms, answer, error = _send(suts[i], request)
            tally.add(i, ms, error)
            if on_request is not None:
                _sleep(_pause(on_request(i, k, request, ms, answer, error), _stop(start[0], duration_s)))
            k += 1

    def worker(i: int) -> None:
        for k in range(warmup_per_thread):
            try:
                suts[i].infer(inputs[(i + k) % len(inputs)], **requirements)
            except Exception:  # a failing system shows in the measured requests, which count their errors
                pass
        barrier.wait()
        go.wait()
        try:
            measured(i)
        except BaseException as e:  # raised by on_request: every client stops, the caller sees it
            raised.append(e)
            aborted.set()

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
    if raised:
        raise raised[0]
    return tally.result(elapsed)


def _stop(start: float, duration_s: float | None) -> float | None:
    return None if duration_s is None else start + duration_s


def _sleep(pause_s: float) -> None:
    if pause_s:
        time.sleep(pause_s)


def run_interleaved(suts: list, requests_per_client: int, request_for, on_request=None) -> LoopResult:
    """The caller's clients (it opens and closes them) take turns in this thread: request k of client 0, 1, ...,
    then request k + 1, ``requests_per_client`` each; requests made by ``request_for`` in that order (a shared
    random stream draws the same requests as a loop written by hand). Failed requests are counted and handed to
    ``on_request``, which raises what should end the measurement."""
    tally = _Tally(len(suts))
    start = time.perf_counter()
    for k in range(requests_per_client):
        for i, sut in enumerate(suts):
            request = request_for(i, k)
            ms, answer, error = _send(sut, request)
            tally.add(i, ms, error)
            if on_request is not None:
                _sleep(_pause(on_request(i, k, request, ms, answer, error), None))
    return tally.result(time.perf_counter() - start)


def run_closed_loop_async(make_sut, inputs: list[np.ndarray] | None, concurrency: int, requests_per_client: int,
                          requirements: dict | None = None, duration_s: float | None = None,
                          warmup_per_client: int = 0, after_warmup=None, *, request_for=None, on_request=None,
                          alongside=None) -> LoopResult:
    """The asyncio driver: ``concurrency`` coroutines on one event loop in this thread (started and ended here),
    each with its own client from ``make_sut()``, called inside the loop (an asyncio system: ``await
    sut.infer(x, **requirements)``, ``await sut.close()``). The same rules as ``run_closed_loop``: inputs cycled
    in the same order per client, at least ``requests_per_client`` each and, with ``duration_s``, until that much
    time has passed too; warm-up requests first on the same clients, not recorded; ``after_warmup()`` between;
    failed requests counted, not raised. A request's time is the client's: from the call to the answer back in
    the coroutine, so it includes the loop's turn, as an asyncio client sees it. ``alongside(stop_at)``: a
    coroutine started with the measured clients (a probe; ``stop_at`` is the perf_counter time ``duration_s``
    ends, or None); the measurement ends when it has ended too."""
    return asyncio.run(_drive(make_sut, inputs, concurrency, requests_per_client, requirements or {}, duration_s,
                              warmup_per_client, after_warmup, request_for, on_request, alongside))


async def _drive(make_sut, inputs, concurrency, requests_per_client, requirements, duration_s, warmup_per_client,
                 after_warmup, request_for, on_request, alongside) -> LoopResult:
    request_for = request_for or _cycled(inputs, requirements)
    suts = [make_sut() for _ in range(concurrency)]
    tally = _Tally(concurrency)
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
            request = request_for(i, k)
            t0 = time.perf_counter()
            try:
                answer, error = await suts[i].infer(request[0], **request[1]), None
            except Exception as e:  # counted, not raised: one failed request must not end the measurement
                answer, error = None, e
            ms = (time.perf_counter() - t0) * 1e3
            tally.add(i, ms, error)
            if on_request is not None:
                pause_s = _pause(on_request(i, k, request, ms, answer, error), _stop(start, duration_s))
                if pause_s:
                    await asyncio.sleep(pause_s)
            k += 1

    try:
        await asyncio.gather(*(warm(i) for i in range(concurrency)))
        if after_warmup is not None:
            after_warmup()
        start = time.perf_counter()
        try:
            async with asyncio.TaskGroup() as group:  # what on_request raises cancels the other clients
                for i in range(concurrency):
                    group.create_task(client(i))
                if alongside is not None:
                    group.create_task(alongside(_stop(start, duration_s)))
        except BaseExceptionGroup as raised:  # the caller sees the first error as it was raised
            raise raised.exceptions[0] from None
        elapsed = time.perf_counter() - start
    finally:
        for s in suts:
            await s.close()
    return tally.result(elapsed)
