"""The open loop against a real router and Triton on loopback: rates, latency from the scheduled send, the
max-rate search on a router of known capacity, and bad arguments refused before any work."""

import json
import os
import signal
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

from loadtests.config import LoadSettings
from loadtests.max_rate import SearchSettings, search_max_rate
from loadtests.open_loop import OpenLoopSettings
from loadtests.open_run import open_loop_run, trial_figures
from psml.cli import main
from stack.closed_loop import run_closed_loop
from stack.clients import RouterClient


def load_settings(zoo_dir, out, **kw) -> LoadSettings:
    return LoadSettings(**{"data_file": str(zoo_dir / "data.npz"), "out_dir": str(out), "benign_key": "k-benign",
                           "attackers": 0} | kw)


@contextmanager
def stalls(pid: int, every_s: float, stall_s: float):
    """A deliberately slowed router: stopped (SIGSTOP) for stall_s every every_s, as a GC pause or a noisy
    neighbour would; the kernel keeps accepting and buffering requests meanwhile, so they queue."""
    done = threading.Event()

    def loop():
        while not done.wait(every_s - stall_s):
            os.kill(pid, signal.SIGSTOP)
            time.sleep(stall_s)
            os.kill(pid, signal.SIGCONT)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()
        os.kill(pid, signal.SIGCONT)


def test_open_loop_keeps_its_rate_and_counts_from_the_scheduled_send(zoo_dir, start_router, tmp_path):
    """Modest rate on a quiet router: every scheduled request sent and answered, achieved within 5% of the rate
    the schedule drew. Catches a generator whose sends wait for answers (the rate falls by the latency share), one
    that drops sends when behind, and latency taken from the actual send (then schedule-based >= send-based fails).

    Then the same router stalled 400 ms every 2 s: the closed loop psml's benchmarks use (stack/closed_loop.py,
    one client back to back) sees about one slow request per stall and keeps a low p99; the open loop at the rate
    the closed loop achieved sees every request that arrived during a stall wait for it. Catches latency measured
    from the actual send (the open loop would then hide the queue too) and a generator that pauses with the server."""
    router = start_router()
    # an attacker mixes in (its own process, from 1 s to 3 s): its requests are recorded and its transcript saved
    load = load_settings(zoo_dir, tmp_path / "ol", attackers=1, warmup_s=1.0, attack_s=2.0, attack_budget=100,
                         attacker_key="k-attacker")
    f = open_loop_run(router.url, load, OpenLoopSettings(rate_per_s=40.0, duration_s=6.0), router.audit_path)
    attacker = [json.loads(line) for line in (tmp_path / "ol" / "latencies-open-attackers.jsonl").read_text().splitlines()]
    assert len(attacker) > 10 and (tmp_path / "ol" / "attacker-open-0.npz").is_file(), len(attacker)
    figures = {k: f[k] for k in ("scheduled", "answered", "dropped", "scheduled_rate_per_s", "achieved_rate_per_s")}
    assert f["scheduled"] == f["answered"] and f["dropped"] == 0, figures
    # achieved counts to the last answer: 5% of 6 s leaves the last request 300 ms on a busy shared host
    assert abs(f["achieved_rate_per_s"] - f["scheduled_rate_per_s"]) <= 0.05 * f["scheduled_rate_per_s"], figures
    assert f["latency_from_schedule"]["p50_ms"] >= f["service_from_send"]["p50_ms"]
    assert f["goodput"] is not None and 0 < f["goodput"] <= 1
    assert {"Request Rate", "Server Queue", "Server Compute Infer", "p99 latency"} <= set(f["perf"])

    load = load_settings(zoo_dir, tmp_path / "ol")
    x = np.load(zoo_dir / "data.npz")["x_test"][:32]
    with stalls(router.process.pid, every_s=2.0, stall_s=0.4):
        closed = run_closed_loop(lambda: RouterClient(router.url, "k-benign"), list(x[:, None]), 1, 1,
                                 duration_s=6.0)
        rate = closed.throughput_per_s
        f = open_loop_run(router.url, load, OpenLoopSettings(rate_per_s=rate, duration_s=6.0))
    closed_p99 = float(np.percentile(closed.latencies_ms, 99))
    open_p99 = f["latency_from_schedule"]["p99_ms"]
    assert open_p99 > 200.0 and open_p99 > 2 * closed_p99, (open_p99, closed_p99, rate)


def test_the_search_finds_the_capacity_of_a_router_admitting_one_request_at_a_time(zoo_dir, start_router, tmp_path):
    """max_in_flight=1 and every answer held to a 25 ms floor: the router serves at most one request per ~25 ms and
    refuses the others at once (503/429). With Poisson arrivals that is a loss system whose served share is
    1 / (1 + rate x 25 ms): goodput 0.5 exactly at 1/25 ms = 40 req/s. Catches a search whose trials send at the
    wrong rate, a goodput that counts the refused requests as good, and a generator limited by its own connections
    (a pool of one connection would never be refused: goodput 1 at every rate)."""
    floor_ms = 25.0
    router = start_router(max_in_flight=1, defenses=[{"name": "latency_padding", "floor_ms": floor_ms,
                                                      "per_sample_ms": 0.0, "learn_quantile": None}])
    load = load_settings(zoo_dir, tmp_path / "search", benign_unconstrained_share=1.0)  # good = served
    s = SearchSettings(p99_ms=500.0, min_goodput=0.5, start_rate_per_s=10.0, trial_s=2.0, min_requests=80,
                       max_trial_s=5.0, resolution=0.25, max_trials=7)
    r = search_max_rate(lambda rate, d, i: trial_figures(open_loop_run(
        router.url, load, OpenLoopSettings(rate_per_s=rate, duration_s=d, trial=i), router.audit_path)), s,
        log=lambda _: None)
    capacity = 1e3 / floor_ms
    assert r["max_rate_per_s"] is not None and 0.6 * capacity <= r["max_rate_per_s"] <= 1.5 * capacity, r["trials"]
    assert r["first_failing_rate_per_s"] is not None and all("passed" in t for t in r["trials"])


@pytest.mark.parametrize("args, says", [
    (["--arrival", "poisson", "--rate", "0"], "--rate must be > 0"),
    (["--arrival", "poisson", "--rate", "-3"], "--rate must be > 0"),
    (["--arrival", "poisson"], "needs --rate"),
    (["--rate", "10"], "needs --arrival poisson"),
    (["--find-max-rate"], "needs --p99-ms"),
    (["--find-max-rate", "--p99-ms", "0.001"], "below the zoo's fastest profiled latency"),
    (["--find-max-rate", "--p99-ms", "50", "--min-goodput", "1.5"], "--min-goodput must be"),
])
def test_bad_arguments_get_one_line_and_exit_2_before_any_work(zoo_dir, tmp_path, capsys, args, says):
    """Catches a rate <= 0 that reaches the schedule (a division by zero or an endless run after Triton started),
    a bound no model can meet searched for minutes, and a traceback instead of one line."""
    out = tmp_path / "never"
    t0 = time.perf_counter()
    code = main(["loadtest", "--zoo", str(zoo_dir), "--out-dir", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0], err
    assert not out.exists() and time.perf_counter() - t0 < 5.0  # refused before the run folder or any server


def test_poisson_cli_run_with_two_generator_processes(zoo_dir, tmp_path):
    """``psml loadtest --arrival poisson --processes 2``: summary.json's open-loop fields, exact times of both
    generator processes merged (one file each, counts matching the router's audit log) and perf.csv in
    perf_analyzer's columns. Catches a split that sends R from each process (achieved 2R), latencies of one
    process only, and a CSV with other columns. (No attacker here: scoring its transcript trains a surrogate for
    ~25 s; the open loop's attacker is checked in the first test, the scoring in test_loadtest.py.)"""
    import csv
    import subprocess
    import sys

    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "psml.cli", "loadtest", "--zoo", str(zoo_dir), "--out-dir", str(out),
                        "--arrival", "poisson", "--rate", "30", "--duration-s", "4", "--processes", "2",
                        "--attackers", "0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["arrival"] == "poisson" and s["offered_rate_per_s"] == 30.0
    assert abs(s["achieved_rate_per_s"] - s["scheduled_rate_per_s"]) <= 0.08 * s["scheduled_rate_per_s"]
    assert 0.7 * 30 <= s["scheduled_rate_per_s"] <= 1.3 * 30  # 120 expected sends: a Poisson count, not 2 x 120
    lat = s["latency_from_schedule"]
    assert set(lat) >= {"p50_ms", "p90_ms", "p95_ms", "p99_ms", "p99_9_ms"} and lat["p50_ms"] <= lat["p99_9_ms"]
    assert {"count", "share", "slack_ms"} <= set(s["late_sends"]) and "limited" in s["generator"]
    assert len(list(out.glob("latencies-open-[01].jsonl"))) == 2 and len(s["generator"]["processes"]) == 2
    assert s["count_check"]["match"] and s["count_check"]["audit_records"] == s["scheduled"]
    with open(out / "perf.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and list(rows[0])[:3] == ["Request Rate", "Inferences/Second", "Client Send"]
    assert float(rows[0]["p99 latency"]) >= float(rows[0]["p50 latency"]) > 0 and rows[0]["Server Compute Infer"]


def test_find_max_rate_cli_writes_every_rate_tried(zoo_dir, tmp_path):
    """``psml loadtest --find-max-rate``: max_rate.json holds the answer (the highest passing rate, or none) and
    every trial with its pass/fail and why, perf.csv one row per trial. Catches a search result without its
    trials (nothing to judge the answer by) and a CSV of the last trial only. Two short trials: the stopping
    rule itself is tested without a server (test_max_rate.py) and on a known capacity above."""
    import csv
    import subprocess
    import sys

    out = tmp_path / "fmr"
    r = subprocess.run([sys.executable, "-m", "psml.cli", "loadtest", "--zoo", str(zoo_dir), "--out-dir", str(out),
                        "--find-max-rate", "--p99-ms", "200", "--start-rate", "150", "--trial-s", "1", "--max-trials", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((out / "max_rate.json").read_text())
    assert len(m["trials"]) == 2 and all({"offered_rate_per_s", "p99_ms", "passed", "why"} <= set(t) for t in m["trials"])
    passed = [t["offered_rate_per_s"] for t in m["trials"] if t["passed"]]
    assert m["max_rate_per_s"] == (max(passed) if passed else None) and "max rate within p99 200 ms" in r.stdout
    assert m["search"]["p99_ms"] == 200.0 and m["seed"] == 0 and "seed_streams" in m
    with open(out / "perf.csv") as f:
        assert [float(row["Request Rate"]) for row in csv.DictReader(f)] == [t["offered_rate_per_s"] for t in m["trials"]]
