"""The measurements made on one configuration's router before any extraction: benign clients (short sessions and
equal-volume ones), the timing side channel, each fingerprinting attacker; and detection read from the audit
log (which keys a per-client defense flagged or refused, and when)."""

from __future__ import annotations

import numpy as np

from attacks.box_centre import fingerprint_box_centre
from attacks.experiment import run_fingerprint, run_timing
from attacks.oracle import SpecOracle
from attacks.timing import TimingSettings
from common.proc_cpu import tree_cpu_s
from common.stats import latency_summary
from loadtests.benign import benign_indices, benign_requirements
from loadtests.config import LoadSettings
from loadtests.useful import benign_answer, useful_goodput
from router.audit_log import read_audit_log
from router.goodput import summarize
from stack.clients import RouterClient, RouterRejected
from stack.closed_loop import run_interleaved

from .settings import BOX_CENTRE, LONG_BENIGN_CLIENTS


def zoo_info(url: str) -> dict:
    """What the service publishes (GET /v1/zoo), on a connection of its own."""
    client = RouterClient(url, "timing")
    try:
        return client.zoo()
    finally:
        client.close()


class _Answers:
    """A router client whose ``infer`` answers the whole 200 answer (its labels; defenses may drop probabilities)."""

    def __init__(self, client: RouterClient):
        self.client = client

    def infer(self, x, min_accuracy=None, max_latency_ms=None) -> dict:
        return self.client.answer(x, min_accuracy, max_latency_ms)


def _refusals_only(i, k, request, ms, answer, error) -> None:
    """A refused request is a figure; anything else that failed ends the phase."""
    if error is not None and not isinstance(error, RouterRejected):
        raise error


def benign_phase(router, data, clients: int, per_client: int, seed: int) -> dict:
    """Interleaved benign clients (own keys); exact client times; router CPU per request; false positives."""
    s, rng = LoadSettings(), np.random.default_rng(seed)
    conns = [RouterClient(router.url, f"benign-{i:02d}") for i in range(clients)]
    info = conns[0].zoo()
    times, useful = [], []

    def request_for(i: int, k: int) -> tuple:
        idx = benign_indices(rng, len(data.x["test"]), s)
        acc, lat = benign_requirements(rng, info, s)
        return data.x["test"][idx], {"min_accuracy": acc, "max_latency_ms": lat}, idx

    def on_request(i, k, request, ms, answer, error) -> None:
        _refusals_only(i, k, request, ms, answer, error)
        times.append(ms)
        labels = None if answer is None else answer["labels"]
        useful.append(benign_answer(data.y["test"][request[2]], labels, ms, request[1]["max_latency_ms"]))

    cpu0 = tree_cpu_s(router.process.pid)
    run_interleaved([_Answers(c) for c in conns], per_client, request_for, on_request)
    cpu_us = (tree_cpu_s(router.process.pid) - cpu0) / len(times) * 1e6
    for c in conns:
        c.close()
    records = [r for r in read_audit_log(router.audit_path) if str(r["client"]).startswith("benign-")]
    flagged = {r["client"] for r in records if flagged_or_refused(r)}
    return summarize(records) | useful_goodput(useful) | {
                                 "latency_ms": latency_summary(times), "router_cpu_us_per_request": cpu_us,
                                 "false_positive_clients": len(flagged), "clients": clients,
                                 "false_positive_rate": len(flagged) / clients}


def long_benign_phase(router, data, samples: int, seed: int) -> dict:
    """False positives at equal volume: LONG_BENIGN_CLIENTS benign keys each send as many natural samples as one
    extraction (test-split samples, distinct within a key, 25 per request, no requirements), one key after the
    other. Short benign sessions alone would flatter a detector that flags any long stream."""
    rng = np.random.default_rng(seed + 7)
    for i in range(LONG_BENIGN_CLIENTS):
        c = RouterClient(router.url, f"long-benign-{i}")
        idx = rng.choice(len(data.x["test"]), min(samples, len(data.x["test"])), replace=False)
        batches = [data.x["test"][idx[start : start + 25]] for start in range(0, len(idx), 25)]
        run_interleaved([c], len(batches), lambda _, k: (batches[k], {}), _refusals_only)
        c.close()
    records = list(read_audit_log(router.audit_path))
    per_key = {key: detection(records, {key}) for key in (f"long-benign-{i}" for i in range(LONG_BENIGN_CLIENTS))}
    flagged = [d for d in per_key.values() if d["detected"]]
    return {"clients": LONG_BENIGN_CLIENTS, "samples_each": int(min(samples, len(data.x["test"]))),
            "false_positive_rate": len(flagged) / LONG_BENIGN_CLIENTS,
            "samples_until_detection": [d["samples_until_detection"] for d in flagged], "per_key": per_key}


def timing_phase(router, manifest, data, probe: np.ndarray) -> tuple[dict, str]:
    """The timing side channel for two attackers: a fixed probe (key ``timing``) and natural pool samples
    (``timing-natural``), each with its detection; and the stronger one (single-answer accuracy)."""
    timings = {}
    for who, pool in (("timing", None), ("timing-natural", data.x["attacker_pool"][101:])):
        try:
            timings[who] = run_timing(router.url, who, router.audit_path, manifest, probe, TimingSettings(), pool=pool)
        except RouterRejected as e:  # this attacker's stream was refused part-way
            timings[who] = {"refused": e.status, "accuracy_by_samples": {}, "chance": None}
        timings[who] |= {"detection": detection(list(read_audit_log(router.audit_path)), {who})}
    return timings, max(timings, key=lambda w: timings[w]["accuracy_by_samples"].get("1") or 0.0)


def flagged_or_refused(record: dict) -> bool:
    """A per-client defense acted on this request: PRADA had flagged its key, or it was refused."""
    return bool(record.get("prada_flagged")) or record["outcome"] == "refused"


def detection(records: list[dict], clients: set[str], within_samples: int | None = None) -> dict:
    """For an attacker's keys: flagged or refused at all, and the samples it had sent when it first was; with
    ``within_samples`` only the requests sent within that many samples count (a budget sweep's reference)."""
    sent, first = 0, None
    for r in records:
        if r["client"] not in clients:
            continue
        size = r.get("batch_size") or 0
        if within_samples is not None and sent + size > within_samples:
            break
        if first is None and flagged_or_refused(r):
            first = sent
        sent += size
    return {"detected": first is not None, "samples_until_detection": first, "samples_sent": sent}


def fingerprints(router, info: dict, probe: np.ndarray, rank: int) -> dict:
    """The victim's specification as each fingerprinting attacker finds it (keys fp-<who>-r<rank>): the plain and
    the adaptive staircase (their corner), and box_centre (the centre of the victim's box, with its signature,
    which signature_filter keeps answers by). Queries spent and, where refused part-way, the refusal."""
    out = {}
    for who, votes, back in (("plain", 1, (0.0, 0.0)), ("adaptive", 5, (0.0, 0.05))):
        try:
            fp = run_fingerprint("staircase", router.url, f"fp-{who}-r{rank}", probe, rank, votes=votes, backoff=back)
            out[who] = {"queries": fp.queries, "spec": fp.spec, "signature": fp.target_signature}
        except RouterRejected as e:  # refused by a per-client defense part-way: no specification
            out[who] = {"queries": None, "spec": None, "signature": None, "refused": e.status}
    client = RouterClient(router.url, f"fp-box_centre-r{rank}")
    try:
        fp = fingerprint_box_centre(SpecOracle(client, probe), info, rank, BOX_CENTRE)
        out["box_centre"] = {"queries": fp.queries, "spec": fp.spec, "signature": fp.target_signature}
    except RouterRejected as e:
        out["box_centre"] = {"queries": None, "spec": None, "signature": None, "refused": e.status}
    finally:
        client.close()
    return out
