"""One open-loop run against a running router: the load, its figures, the router's goodput and Triton's own
statistics over the run. The CLI, the max-rate search and the benchmarks call this; it prints nothing."""

from __future__ import annotations

import time
from pathlib import Path

from .config import LoadSettings
from .open_loop import GENERATOR_FILE_GLOB, OPEN_RECORDS_GLOB, OpenLoopSettings, run_open_loop
from .open_summary import open_loop_figures, read_records
from .perf_csv import perf_row, server_means_us, triton_stats


def open_loop_run(router_url: str, load: LoadSettings, s: OpenLoopSettings, audit_path: Path | None = None,
                  triton_url: str | None = None) -> dict:
    """The figures of loadtests/open_summary.py, plus ``goodput`` (benign goodput share from the router's audit
    records of this run; None without ``audit_path``) and ``perf`` (the perf_analyzer-style row)."""
    out = Path(load.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob(OPEN_RECORDS_GLOB), *out.glob(GENERATOR_FILE_GLOB)]:
        old.unlink()
    before, started = triton_stats(triton_url), time.time()
    run_open_loop(router_url, load, s)
    after = triton_stats(triton_url)
    f = open_loop_figures(*read_records(out), s)
    f["goodput"] = benign_goodput(audit_path, started) if audit_path else None
    f["perf"] = perf_row("Request Rate", s.rate_per_s, f["samples_served_per_s"], f["latency_from_schedule"],
                         server_means_us(before, after), f["client_send_us"], f["client_recv_us"])
    return f


WARMUP_TRIAL = 10**6  # the warm-up's own streams, apart from every trial's


def warm_up(router_url: str, load: LoadSettings, rate_per_s: float, duration_s: float = 1.0) -> None:
    """A short open loop whose figures are thrown away: connections opened, router and models warm, so the
    first measured rate is not judged on a cold start (MLPerf LoadGen runs a warm-up too)."""
    from dataclasses import replace

    open_loop_run(router_url, replace(load, attackers=0), OpenLoopSettings(rate_per_s, duration_s, trial=WARMUP_TRIAL))


def benign_goodput(audit_path: Path, since_ts: float) -> float | None:
    from router.audit_log import read_audit_log
    from router.goodput import summarize

    return summarize([r for r in read_audit_log(audit_path) if r["ts"] >= since_ts and r["client"] == "benign"]
                     )["goodput_share"]


def trial_figures(f: dict) -> dict:
    """What a max-rate trial keeps of a run's figures."""
    lat = f["latency_from_schedule"]
    return {"achieved_rate_per_s": f["achieved_rate_per_s"], "scheduled": f["scheduled"], "served": f["served"],
            "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"], "p99_9_ms": lat["p99_9_ms"], "goodput": f["goodput"],
            "dropped_share": f["dropped_share"], "late_share": f["late_sends"]["share"],
            "generator_limited": f["generator"]["limited"], "perf": f["perf"]}
