"""The psml summary of one load test: Locust's per-class latencies, goodput and SLO attainment from the
router's audit log, the attackers' extraction success, and goals checked line by line (VALID / INVALID)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from common.stats import latency_summary
from router.goodput import goodput_by_client, latency_met
from zoo.manifest import ENDPOINTS

from .config import INTERRUPTED_FILE, LATENCY_FILE_GLOB, USEFUL_FILE_GLOB
from .useful import BenignAnswer, useful_goodput

PERCENTILES = ("50%", "95%", "99%")


def locust_stats(csv_prefix: Path) -> dict[str, dict]:
    """Name -> {requests, failures, p50_ms, p95_ms, p99_ms, rps} from Locust's <prefix>_stats.csv."""
    out = {}
    with open(f"{csv_prefix}_stats.csv", newline="") as f:
        for row in csv.DictReader(f):
            out[row["Name"]] = {
                "requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                "p50_ms": _num(row["50%"]), "p95_ms": _num(row["95%"]), "p99_ms": _num(row["99%"]),
                "rps": _num(row["Requests/s"]),
            }
    return out


def exact_latencies(out_dir: Path) -> dict[str, dict]:
    """Name -> {requests, failures, p50_ms, p95_ms, p99_ms, mean_ms, ci95} from every request's exact time
    (all Locust processes' files). Percentiles cover every request, failed ones included, as Locust's do."""
    import json

    times: dict[str, list[float]] = {}
    failures: dict[str, int] = {}
    for path in sorted(Path(out_dir).glob(LATENCY_FILE_GLOB)):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            times.setdefault(r["name"], []).append(r["ms"])
            failures[r["name"]] = failures.get(r["name"], 0) + (not r["ok"])
    return {n: {"requests": len(t), "failures": failures[n]} | latency_summary(t, resamples=500)
            for n, t in sorted(times.items())}


def benign_useful_goodput(out_dir: Path) -> dict | None:
    """Useful goodput of the benign users (loadtests/useful.py) from every Locust process's file; None on an
    encoder zoo (no labels to check)."""
    import json

    answers = [BenignAnswer(**json.loads(line)) for path in sorted(Path(out_dir).glob(USEFUL_FILE_GLOB))
               for line in path.read_text().splitlines()]
    return useful_goodput(answers) if answers else None


def per_model_under_load(records: list[dict], manifest) -> list[dict]:
    """Per model that served (audit log): latency in the router under load against the manifest's profile,
    and SLO attainment of the requests it served that stated a latency bound."""
    rows = []
    for m in manifest.models:
        served = [r for r in records if r["outcome"] == "served" and r["model"] == m.name]
        if not served:
            continue
        lat = np.array([r["router_ms"] for r in served])
        bounded = [r for r in served if r["req_max_latency_ms"] is not None]
        router_c1 = m.latency.cell("router", 1, 1)
        rows.append({"model": m.name, "served": len(served), "pareto": m.pareto,
                     "profile_selection_ms": m.selection_latency_ms,
                     "profile_router_p99_ms": router_c1.p99_ms if router_c1 else None,
                     **{f"load_{k}": v for k, v in latency_summary(lat, resamples=300).items()},
                     "within_profile": float(np.mean(lat <= m.selection_latency_ms)),
                     "slo_attainment": (sum(latency_met(r) for r in bounded) / len(bounded)) if bounded else None})
    return rows


def _num(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


def interrupted_requests(out_dir: Path) -> dict[str, int]:
    """Requests Locust killed on the wire at stop, by "<class> <path>" (written by loadtests/users.py)."""
    import json

    counts: dict[str, int] = {}
    path = Path(out_dir) / INTERRUPTED_FILE
    if path.is_file():
        for line in path.read_text().splitlines():
            name = json.loads(line)["name"]
            counts[name] = counts.get(name, 0) + 1
    return counts


def attacker_success(transcripts: list[Path], score) -> list[dict]:
    """One row per attacker transcript (inputs, answers, fingerprinting queries); ``score(transcript)`` trains
    and scores its copy (``knockoff_score`` or ``encoder_score``) where it collected any answer."""
    from attacks.knockoff import Transcript

    rows = []
    for path in transcripts:
        with np.load(path) as f:
            t = Transcript(f["x"], f["probs"], 0, 0)
            row = {"transcript": path.name, "answers": int(len(t.x)), "fingerprint_queries": int(f["fingerprint_queries"])}
        rows.append(row | (score(t) if len(t.x) else {}))
    return rows


def knockoff_score(data, victim_labels: np.ndarray, knockoff):
    """A Knockoff surrogate per classifier transcript, its budget the answers collected."""
    from dataclasses import replace

    from attacks.knockoff import train_and_score

    return lambda t: train_and_score(t, tuple(data.sample_shape), data.n_classes, replace(knockoff, budget=len(t.x)),
                                     data.x["test"], data.y["test"], victim_labels)


def encoder_score(data, reference, seed: int):
    """A stolen encoder per encoder transcript (direct extraction, attacks/encoder_extraction.py defaults: MSE),
    scored like ``psml attack extract --kind encoder``."""
    from attacks.encoder_extraction import EncoderExtractionSettings, score_stolen, train_stolen

    def score(t):
        s = EncoderExtractionSettings(budget=len(t.x), seed=seed)
        return score_stolen(train_stolen(t, tuple(data.sample_shape), s), data, reference, len(t.x), seed)

    return score


def check_goals(latency: dict, goodput: dict, max_p99_ms: float | None, min_goodput: float | None) -> list[str]:
    """One line per goal: 'VALID ...' or 'INVALID ...'."""
    lines = []
    benign = next((latency[f"benign {e}"] for e in ENDPOINTS.values() if f"benign {e}" in latency), {})
    if max_p99_ms is not None:
        p99 = benign.get("p99_ms")
        ok = p99 is not None and p99 <= max_p99_ms
        lines.append(f"{'VALID' if ok else 'INVALID'}: benign p99 {p99 if p99 is None else round(p99, 3)} ms {'<=' if ok else '>'} goal {max_p99_ms} ms")
    if min_goodput is not None:
        g = goodput.get("benign", {}).get("goodput_share")
        ok = g is not None and g >= min_goodput
        lines.append(f"{'VALID' if ok else 'INVALID'}: benign goodput {g if g is None else round(g, 4)} "
                     f"{'>=' if ok else '<'} goal {min_goodput}")
    return lines


def audit_summary(records: list[dict], victim: str, attack_batch: int) -> dict:
    # extraction requests carry attack_batch samples; the attacker's batch-1 requests are its fingerprinting probes
    attacker_served = [r["model"] for r in records if r["client"] == "attacker" and r["outcome"] == "served"
                       and r["batch_size"] == attack_batch]
    return {
        "goodput": goodput_by_client(records),
        "defense_actions": defense_actions(records),
        "records": len(records),
        "attacker_served_by": {m: attacker_served.count(m) for m in sorted(set(attacker_served))},
        "attacker_victim_share": attacker_served.count(victim) / len(attacker_served) if attacker_served else None,
    }


def defense_actions(records: list[dict]) -> dict[str, dict]:
    """Per client: what per-client defenses did to it (detections, blocked / rate-limited / budget refusals) and
    after how many of its samples it was first flagged. Clients nothing happened to are left out."""
    out: dict[str, dict] = {}
    sent: dict[str, int] = {}
    for r in records:
        c = r["client"] or "(anonymous)"
        row = out.setdefault(c, {"flagged_after_samples": None, "blocked": 0, "rate_limited": 0,
                                 "budget_exhausted": 0, "detections": []})
        if r.get("prada_flagged") and row["flagged_after_samples"] is None:
            row["flagged_after_samples"] = sent.get(c, 0)
        if r.get("detected"):
            row["detections"].append(r["detected"])
        if r["outcome"] == "refused":
            kind = {403: "blocked", 429: "rate_limited"}.get(r["status"], "blocked")
            if "budget" in (r.get("detail") or ""):
                kind = "budget_exhausted"
            row[kind] += 1
        sent[c] = sent.get(c, 0) + (r.get("batch_size") or 0)
    return {c: row for c, row in out.items()
            if row["flagged_after_samples"] is not None or row["blocked"] or row["rate_limited"] or row["budget_exhausted"]}
