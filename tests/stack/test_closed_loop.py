"""The closed-loop measurement core on a system that counts what it is sent (pure logic, no servers)."""

import threading
import time

import numpy as np
import pytest

from stack.closed_loop import run_closed_loop


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
