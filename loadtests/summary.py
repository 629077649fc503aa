"""The psml summary of one load test: Locust's per-class latencies, goodput and SLO attainment from the
router's audit log, the attackers' extraction success, and goals checked line by line (VALID / INVALID)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from router.goodput import goodput_by_client

from .config import INTERRUPTED_FILE

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


def attacker_success(transcripts: list[Path], data, victim_labels: np.ndarray, knockoff) -> list[dict]:
    from dataclasses import replace

    from attacks.knockoff import Transcript, score, train_surrogate

    rows = []
    for path in transcripts:
        with np.load(path) as f:
            t = Transcript(f["x"], f["probs"], 0, 0)
            fp_queries = int(f["fingerprint_queries"])
        if len(t.x) == 0:
            rows.append({"transcript": path.name, "answers": 0, "fingerprint_queries": fp_queries})
            continue
        s = replace(knockoff, budget=len(t.x))
        surrogate = train_surrogate(t, tuple(data.sample_shape), data.n_classes, s)
        rows.append({"transcript": path.name, "answers": int(len(t.x)), "fingerprint_queries": fp_queries}
                    | score(surrogate, data.x["test"], data.y["test"], victim_labels))
    return rows


def check_goals(stats: dict, goodput: dict, max_p99_ms: float | None, min_goodput: float | None) -> list[str]:
    """One line per goal: 'VALID ...' or 'INVALID ...'."""
    lines = []
    benign = stats.get("benign /v1/infer", {})
    if max_p99_ms is not None:
        p99 = benign.get("p99_ms")
        ok = p99 is not None and p99 <= max_p99_ms
        lines.append(f"{'VALID' if ok else 'INVALID'}: benign p99 {p99} ms {'<=' if ok else '>'} goal {max_p99_ms} ms")
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
        "records": len(records),
        "attacker_served_by": {m: attacker_served.count(m) for m in sorted(set(attacker_served))},
        "attacker_victim_share": attacker_served.count(victim) / len(attacker_served) if attacker_served else None,
    }
