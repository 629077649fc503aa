"""Goodput from audit records (pure functions; the same code serves /metrics, the CLI and the load tests).

A request counts when it was authenticated and well formed (outcome served, no_model, unavailable, shed, refused
or error: a router fault on a valid request counts against the service).
- good: answered (200) by a model whose profiled accuracy meets the client's ORIGINAL min_accuracy, and within
  the client's ORIGINAL max_latency_ms measured end to end in the router (receipt to response);
- good_profiled (PSML's definition): answered by a model whose PROFILED accuracy and selection latency meet the
  client's original requirements (what the router believed when it chose);
- SLO attained: answered within max_latency_ms, whatever the model's accuracy;
- rejected: 422 because no model met the (possibly noised) requirements; dropped: 503/504 from the backend, a
  500 from the router, shed by admission control (503/429 at once, also reported apart as shed_rate), or refused
  by a client defense (blocked, rate-limited, budget spent; also reported apart as refused_rate: a benign client
  refused by a false positive loses service).
goodput share = good / counted; goodput rate = good / span of the records in seconds.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from .errors import Outcome

# authenticated, well-formed requests: everything but the client's own mistakes
COUNTED = tuple(o.value for o in Outcome if o not in (Outcome.INVALID, Outcome.UNAUTHORIZED))


def accuracy_met(r: dict) -> bool:
    return r["req_min_accuracy"] is None or (r["model_accuracy"] is not None and r["model_accuracy"] >= r["req_min_accuracy"])


def latency_met(r: dict) -> bool:
    return r["req_max_latency_ms"] is None or r["router_ms"] <= r["req_max_latency_ms"]


def profiled_met(r: dict) -> bool:
    return r["req_max_latency_ms"] is None or (r["model_latency_ms"] is not None
                                               and r["model_latency_ms"] <= r["req_max_latency_ms"])


def is_good_profiled(r: dict) -> bool:
    return r["outcome"] == "served" and accuracy_met(r) and profiled_met(r)


def is_good(r: dict) -> bool:
    return r["outcome"] == "served" and accuracy_met(r) and latency_met(r)


def summarize(records: list[dict]) -> dict:
    counted = [r for r in records if r["outcome"] in COUNTED]
    n = len(counted)
    good = sum(is_good(r) for r in counted)
    good_profiled = sum(is_good_profiled(r) for r in counted)
    slo = sum(r["outcome"] == "served" and latency_met(r) for r in counted)
    if counted:
        span_s = max(r["ts"] + r["router_ms"] / 1e3 for r in counted) - min(r["ts"] for r in counted)
    else:
        span_s = 0.0
    share = lambda k: k / n if n else None
    return {
        "requests": n,
        "served": sum(r["outcome"] == "served" for r in counted),
        "good": good,
        "goodput_share": share(good),
        "goodput_rate_per_s": good / span_s if span_s > 0 else None,
        "good_profiled": good_profiled,
        "goodput_share_profiled": share(good_profiled),
        "slo_attainment": share(slo),
        "reject_rate": share(sum(r["outcome"] == "no_model" for r in counted)),
        "drop_rate": share(sum(r["outcome"] in ("unavailable", "shed", "error", "refused") for r in counted)),
        "shed_rate": share(sum(r["outcome"] == "shed" for r in counted)),
        "refused_rate": share(sum(r["outcome"] == "refused" for r in counted)),
        "flagged": any(r.get("prada_flagged") for r in records),
        "invalid": sum(r["outcome"] in ("invalid", "unauthorized") for r in records),
        "span_s": span_s,
    }


def goodput_by_client(records: Iterable[dict]) -> dict[str, dict]:
    """{"overall": summary, "<client>": summary, ...}"""
    records = list(records)
    per: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        per[r["client"] or "(anonymous)"].append(r)
    return {"overall": summarize(records)} | {c: summarize(rs) for c, rs in sorted(per.items())}
