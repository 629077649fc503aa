"""Figures of an open-loop run from its exact per-request records (pure functions over what was recorded).

- offered_rate_per_s: the rate asked for; scheduled_rate_per_s: the send times this run's seed drew / duration
  (a Poisson count varies: sqrt(R * duration) requests either way);
- achieved_rate_per_s: benign requests answered (any HTTP status) / the time from the start to the later of
  the schedule's end and the last answer: below the scheduled rate when the server fell behind;
- latency percentiles (p50 ... p99.9) from the SCHEDULED send time of every request answered 200; service
  percentiles from the actual send, for contrast (the gap between them is queueing before the send);
- dropped: benign requests answered neither 200 nor 422 (refused for load, failed, never answered): dropping
  buys a low p99, so a max-rate trial checks the dropped share too (loadtests/max_rate.py);
- late sends: issued more than late_slack_ms after their scheduled time, and the generator check: the run is
  flagged generator-limited when late sends exceed late_share_limit or a generator process used more than
  cpu_share_limit of one core (then the offered rate was not what the server got).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .open_loop import GENERATOR_FILE_GLOB, OPEN_RECORDS_GLOB

QUANTILES = {"p50_ms": 50, "p90_ms": 90, "p95_ms": 95, "p99_ms": 99, "p99_9_ms": 99.9}


def read_records(out_dir: Path) -> tuple[list[dict], list[dict]]:
    """(every request record of every process, the generator processes' own figures)."""
    records = [json.loads(line) for p in sorted(Path(out_dir).glob(OPEN_RECORDS_GLOB))
               for line in p.read_text().splitlines()]
    generators = [json.loads(p.read_text()) for p in sorted(Path(out_dir).glob(GENERATOR_FILE_GLOB))]
    return records, generators


def quantiles_ms(values) -> dict[str, float | None]:
    a = np.asarray(values, dtype=float)
    if not len(a):
        return {k: None for k in QUANTILES} | {"mean_ms": None}
    return {k: float(np.percentile(a, q)) for k, q in QUANTILES.items()} | {"mean_ms": float(a.mean())}


def open_loop_figures(records: list[dict], generators: list[dict], s) -> dict:
    """``s``: the run's OpenLoopSettings."""
    benign = [r for r in records if r["name"].startswith("benign ")]
    served = [r for r in benign if r["status"] == 200]
    answered = [r for r in benign if r["status"] != 0]
    unfinished = sum(g["unfinished"] for g in generators)
    scheduled = sum(g["scheduled"] for g in generators)
    last = max([s.duration_s] + [r["sched_s"] + r["ms"] / 1e3 for r in answered])
    late = [r for r in benign if r["late_ms"] > s.late_slack_ms]
    dropped = sum(r["status"] not in (200, 422) for r in benign) + unfinished
    late_ms = np.array([r["late_ms"] for r in benign]) if benign else np.zeros(1)
    return {
        "arrival": "poisson", "offered_rate_per_s": s.rate_per_s, "duration_s": s.duration_s,
        "scheduled": scheduled, "scheduled_rate_per_s": scheduled / s.duration_s,
        "achieved_rate_per_s": len(answered) / last, "served": len(served), "answered": len(answered),
        "dropped": dropped, "dropped_share": dropped / scheduled if scheduled else None,
        "samples_served_per_s": sum(r["samples"] for r in served) / last,
        "client_send_us": float(np.mean([r["late_ms"] for r in served])) * 1e3 if served else None,
        "client_recv_us": float(np.mean([r["recv_us"] for r in served])) if served else None,
        "latency_from_schedule": quantiles_ms([r["ms"] for r in served]),
        "service_from_send": quantiles_ms([r["service_ms"] for r in served]),
        "late_sends": {"slack_ms": s.late_slack_ms, "count": len(late), "share": len(late) / len(benign) if benign else None,
                       "p99_late_ms": float(np.percentile(late_ms, 99)), "max_late_ms": float(late_ms.max())},
        "generator": generator_check(benign, late, generators, s),
    }


def generator_check(benign: list[dict], late: list[dict], generators: list[dict], s) -> dict:
    """Whether the generator, not the server, limited the offered rate; one reason per condition."""
    reasons = []
    share = len(late) / len(benign) if benign else 0.0
    if share > s.late_share_limit:
        reasons.append(f"{share:.1%} of sends left more than {s.late_slack_ms:g} ms after their scheduled time "
                       f"(limit {s.late_share_limit:.1%})")
    for g in generators:
        if (g["cpu_share_of_one_core"] or 0) > s.cpu_share_limit:
            reasons.append(f"generator process {g['process']} used {g['cpu_share_of_one_core']:.0%} of one core "
                           f"(limit {s.cpu_share_limit:.0%}): add --processes")
    return {"limited": bool(reasons), "reasons": reasons, "processes": generators}


def format_open_loop(f: dict) -> list[str]:
    """A few printed lines: rates, latency from the scheduled time, late sends, the generator check."""
    lat, svc = f["latency_from_schedule"], f["service_from_send"]
    fmt = lambda d: ", ".join(f"{k[:-3].replace('_', '.')} {v:.2f}" for k, v in d.items() if k in QUANTILES and v is not None)
    lines = [f"open loop (Poisson): offered {f['offered_rate_per_s']:.1f} req/s, scheduled {f['scheduled_rate_per_s']:.1f}, "
             f"achieved {f['achieved_rate_per_s']:.1f}; served {f['served']}, dropped {f['dropped']} "
             f"({(f['dropped_share'] or 0):.1%})",
             f"  latency from the scheduled send (ms): {fmt(lat)}",
             f"  service from the actual send (ms):    {fmt(svc)}",
             f"  late sends (> {f['late_sends']['slack_ms']:g} ms): {f['late_sends']['count']} "
             f"({(f['late_sends']['share'] or 0):.1%}), max {f['late_sends']['max_late_ms']:.1f} ms"]
    g = f["generator"]
    lines += ([f"  GENERATOR-LIMITED: {r}" for r in g["reasons"]] if g["limited"]
              else ["  generator check: not limited (late sends and generator CPU within their limits)"])
    return lines
