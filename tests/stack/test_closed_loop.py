"""The closed-loop measurement core on a system that counts what it is sent (pure logic, no servers)."""

import asyncio
import threading
import time

import numpy as np
import pytest

from stack.closed_loop import LoopResult, run_closed_loop, run_closed_loop_async, run_interleaved


class Counting:
    """Answers after ``delay_s``; records, across all its clients, how many requests came before the mark."""

    def __init__(self, log, delay_s=0.0):
        self.log, self.delay_s = log, delay_s

    def infer(self, x, **_):
        time.sleep(self.delay_s)
        with self.log["lock"]:
            self.log["calls"] += 1

    def close(self):
        pass


def test_warmup_is_sent_on_the_same_clients_and_not_recorded():
    log = {"calls": 0, "lock": threading.Lock(), "clients": 0}

    def make():
        log["clients"] += 1
        return Counting(log)

    seen_at_mark = []
    r = run_closed_loop(make, [np.zeros((1, 4), np.float32)], 3, 5, warmup_per_thread=4,
                        after_warmup=lambda: seen_at_mark.append(log["calls"]))
    assert log["clients"] == 3  # one client per thread, warm-up included (a new client would reconnect)
    assert seen_at_mark == [12]  # the mark comes after all 3 x 4 warm-up requests and before any measured one
    assert len(r.latencies_ms) == 15 and log["calls"] == 27 and r.errors == 0


def test_duration_bounds_a_fast_system_and_the_count_a_slow_one():
    log = {"calls": 0, "lock": threading.Lock()}
    fast = run_closed_loop(lambda: Counting(log), [np.zeros(1)], 2, 3, duration_s=0.2)
    assert len(fast.latencies_ms) > 6 and 0.2 <= fast.elapsed_s < 5.0  # bounded, with room for a busy host
    slow = run_closed_loop(lambda: Counting(log, 0.05), [np.zeros(1)], 1, 3, duration_s=0.01)
    assert len(slow.latencies_ms) == 3  # at least the minimum, even past the duration


def test_a_failing_mark_stops_the_threads_and_raises():
    log = {"calls": 0, "lock": threading.Lock()}

    def boom():
        raise RuntimeError("stats unavailable")

    with pytest.raises(RuntimeError, match="stats unavailable"):
        run_closed_loop(lambda: Counting(log), [np.zeros(1)], 2, 1000, after_warmup=boom)
    assert log["calls"] == 0


class AsyncCounting:
    """Counting for the asyncio driver: answers after ``delay_s`` on the event loop (or fails: ``fail``)."""

    def __init__(self, log, delay_s=0.0, fail=False):
        self.log, self.delay_s, self.fail = log, delay_s, fail
        log["clients"] = log.get("clients", 0) + 1

    async def infer(self, x, **requirements):
        await asyncio.sleep(self.delay_s)
        self.log["calls"] += 1
        self.log.setdefault("requirements", []).append(requirements)
        if self.fail:
            raise RuntimeError("refused")

    async def close(self):
        self.log["closed"] = self.log.get("closed", 0) + 1


def test_async_driver_keeps_the_thread_driver_s_rules_and_result():
    """Catches an asyncio driver that records warm-up requests, makes a client per request (a reconnect each),
    leaves clients open, drops the requirements, or returns another shape than the thread driver."""
    log = {"calls": 0}
    seen_at_mark = []
    r = run_closed_loop_async(lambda: AsyncCounting(log), [np.zeros((1, 4), np.float32)], 3, 5,
                              requirements={"min_accuracy": 0.5}, warmup_per_client=4,
                              after_warmup=lambda: seen_at_mark.append(log["calls"]))
    assert isinstance(r, LoopResult) and log["clients"] == 3 and log["closed"] == 3
    assert seen_at_mark == [12] and len(r.latencies_ms) == 15 and log["calls"] == 27 and r.errors == 0
    assert all(req == {"min_accuracy": 0.5} for req in log["requirements"])


def test_async_driver_times_each_request_exactly_and_overlaps_the_clients():
    """Four clients each waiting 50 ms: every request's time is at least its own 50 ms (not a share of the
    elapsed time, not 0), and the clients overlap (the whole run takes ~3 x 50 ms, not 12 x 50 ms). Catches a
    driver that awaits its clients one after another or times the batch instead of the request."""
    log = {"calls": 0}
    r = run_closed_loop_async(lambda: AsyncCounting(log, 0.05), [np.zeros(1)], 4, 3)
    assert len(r.latencies_ms) == 12 and r.latencies_ms.min() >= 50.0
    assert r.elapsed_s < 12 * 0.05 and r.throughput_per_s > 1 / 0.05


def test_async_driver_counts_failures_and_bounds_a_fast_system_by_duration():
    log = {"calls": 0}
    failing = run_closed_loop_async(lambda: AsyncCounting(log, fail=True), [np.zeros(1)], 2, 3)
    assert failing.errors == 6 and len(failing.latencies_ms) == 0 and failing.first_error == "RuntimeError: refused"
    fast = run_closed_loop_async(lambda: AsyncCounting(log), [np.zeros(1)], 2, 3, duration_s=0.2)
    assert len(fast.latencies_ms) > 6 and 0.2 <= fast.elapsed_s < 5.0


class Echo:
    """Answers its input back after ``delay_s`` (fails on a negative input); records every input it is sent."""

    def __init__(self, sent, delay_s=0.0):
        self.sent, self.delay_s = sent, delay_s

    def infer(self, x, **requirements):
        time.sleep(self.delay_s)
        self.sent.append((x, requirements))
        if x < 0:
            raise RuntimeError("refused")
        return x

    def close(self):
        pass


def test_interleaved_clients_take_turns_and_every_request_reaches_on_request():
    """Catches an interleaved driver that sends client by client (a shared random stream would then draw other
    requests than the hand-written loop it replaced), drops the caller's labels, or hands on_request the time of
    successful requests only (a refused request's time counts in the benign figures)."""
    sent, seen = [], []
    draws = iter(range(100))

    def request_for(i, k):
        return (next(draws) * (-1 if (i, k) == (1, 0) else 1), {"max_latency_ms": 5.0}, f"label-{i}-{k}")

    r = run_interleaved([Echo(sent), Echo(sent, 0.02)], 2, request_for,
                        lambda i, k, req, ms, answer, error: seen.append((i, k, req[2], ms, answer, error)))
    assert [x for x, _ in sent] == [0, -1, 2, 3] and all(q == {"max_latency_ms": 5.0} for _, q in sent)
    assert [(i, k, label) for i, k, label, *_ in seen] == [(0, 0, "label-0-0"), (1, 0, "label-1-0"),
                                                           (0, 1, "label-0-1"), (1, 1, "label-1-1")]
    refused = seen[1]
    assert refused[4] is None and isinstance(refused[5], RuntimeError) and refused[3] >= 20.0
    assert r.errors == 1 and len(r.latencies_ms) == 3 and r.first_error == "RuntimeError: refused"


def test_what_on_request_raises_ends_every_driver_and_reaches_the_caller():
    """Catches a driver that swallows the caller's error (a thread dying silently, an ExceptionGroup instead of
    the error) and keeps sending after it."""
    def strict(i, k, req, ms, answer, error):
        if error is not None:
            raise error

    for drive in (lambda: run_interleaved([Echo([])], 5, lambda i, k: (-1, {}), strict),
                  lambda: run_closed_loop(lambda: Echo([]), [-1], 2, 1000, on_request=strict)):
        with pytest.raises(RuntimeError, match="refused"):
            drive()

    class AsyncEcho(Echo):
        async def infer(self, x, **requirements):
            return Echo.infer(self, x, **requirements)

        async def close(self):
            pass

    sent = []
    with pytest.raises(RuntimeError, match="refused"):
        run_closed_loop_async(lambda: AsyncEcho(sent), [-1], 3, 1000, on_request=strict)
    assert len(sent) < 10


def test_a_pause_is_untimed_and_cut_at_the_end_of_the_duration_and_alongside_ends_with_the_run():
    """A client asked to wait 10 s (a Retry-After) waits only until the duration ends, and the wait is in no
    request's time; the run lasts until the probe beside it ends. Catches a pause timed as part of the request,
    one that outlives the measurement, or a probe the elapsed time leaves out."""
    log, probe = {"calls": 0}, []

    async def beside(stop_at):
        probe.append(stop_at)
        await asyncio.sleep(0.3)

    r = run_closed_loop_async(lambda: AsyncCounting(log), [np.zeros(1)], 2, 0, duration_s=0.1,
                              on_request=lambda *_: 10.0, alongside=beside)
    assert len(r.latencies_ms) == 2 and r.latencies_ms.max() < 100.0  # one request each, then the cut pause
    assert probe[0] is not None and 0.3 <= r.elapsed_s < 5.0
    t = run_closed_loop(lambda: Echo([]), [1], 2, 0, duration_s=0.1, on_request=lambda *_: 10.0)
    assert len(t.latencies_ms) == 2 and t.elapsed_s < 5.0
