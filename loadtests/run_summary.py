"""One load run's psml summary: the audit log, the exact per-request latencies, the attackers' transcripts
scored against the victim, and the count check (every request the generator sent is in the audit log). The
command line prints it; the demo and the tests read it."""

from __future__ import annotations

from pathlib import Path

from zoo.manifest import ENDPOINTS


def summarize_run(out_dir: Path, prefix: Path, audit_path: Path, zoo_dir: Path, settings, knockoff,
                  since_ts: float = 0.0) -> dict:
    """``since_ts``: ignore audit records of requests that started before this run (a shared router's log)."""
    from attacks.experiment import front_by_accuracy, victim_labels
    from router.audit_log import read_audit_log
    from zoo.data import Dataset
    from zoo.manifest import load_manifest

    from .summary import (attacker_success, audit_summary, benign_useful_goodput, encoder_score,
                          exact_latencies, interrupted_requests, knockoff_score, locust_stats,
                          per_model_under_load)

    manifest = load_manifest(zoo_dir)
    data = Dataset.load(zoo_dir / manifest.zoo.dataset.data_file)
    victim = front_by_accuracy(manifest)[0]
    stats = locust_stats(prefix) if prefix is not None else {}  # None: an open loop (no Locust)
    records = [r for r in read_audit_log(audit_path) if r["ts"] >= since_ts]
    audit = audit_summary(records, victim.name, settings.attack_batch)
    transcripts = sorted(Path(settings.out_dir).glob("attacker-*.npz"))
    if manifest.zoo.kind == "encoder":  # a stolen encoder per transcript, scored by its downstream probe
        from attacks.encoder_extraction import VictimReference

        score = encoder_score(data, VictimReference.of_model(zoo_dir, victim, data), settings.seed)
    else:
        score = knockoff_score(data, victim_labels(zoo_dir, victim, data.x["test"]), knockoff)
    attackers = attacker_success(transcripts, score)
    interrupted = interrupted_requests(out_dir)
    latency = exact_latencies(out_dir)
    return {"victim": victim.name, "locust": stats, "latency": latency,
            "per_model": per_model_under_load(records, manifest), "audit": audit, "attackers": attackers,
            "benign_useful": benign_useful_goodput(out_dir),
            "interrupted_at_stop": interrupted, "count_check": count_check(latency, interrupted, audit["records"])}


def count_check(latency: dict, interrupted: dict, audit_records: int) -> dict:
    """Requests Locust reported (every request event, from the exact-latency files) plus those it cut off at
    stop, against the router's audit log; ``unaccounted`` != 0 means a request was lost or double-counted.

    Counted from the exact-latency files, not Locust's ``_stats.csv``: Locust rewrites that CSV once a second
    and does not write it again after its users stop, so it can miss the last second's requests."""
    served = tuple(ENDPOINTS.values())  # /v1/infer or /v1/embed: the requests the audit log records
    locust = sum(v["requests"] for k, v in latency.items() if k.endswith(served))
    cut = sum(v for k, v in interrupted.items() if k.endswith(served))
    return {"locust": locust, "interrupted": cut, "audit_records": audit_records,
            "unaccounted": audit_records - locust - cut, "match": audit_records == locust + cut}
