"""The attack harness: runs fingerprinting and extraction against a live stack and scores them.

Attacks see only the router's public API. The harness alone reads the router's audit log (which model really
served each query) and the zoo (the victim's true labels), to score them.
"""

from __future__ import annotations

import numpy as np

from common.stats import seed_summary
from stack.clients import DirectTriton, RouterClient, RouterRejected
from router.audit_log import read_audit_log
from zoo.export import open_session, run_onnx

from .fingerprint import FingerprintSettings, staircase
from .grid_scan import GridScanSettings, grid_scan
from .knockoff import KnockoffSettings, collect, train_and_score
from .oracle import SpecOracle

SETTINGS = ("explicit", "fingerprinted", "naive")
# naive: an attacker without fingerprinting states no requirements and takes whatever model answers.
# The paper's figures for these settings: psml_paper.py.


def front_by_accuracy(manifest) -> list:
    """Pareto models from most to least accurate: rank k of a fingerprinting target is index k-1."""
    return sorted(manifest.pareto_models(), key=lambda m: (-m.accuracy, m.selection_latency_ms))


def _audit_len(path) -> int:
    return sum(1 for _ in read_audit_log(path)) if path.exists() else 0


def consistency(router_url: str, api_key: str, audit_path, spec: dict | None, inputs: np.ndarray, target: str,
                endpoint: str = "/v1/infer") -> dict:
    """Send one query per input with ``spec``; the share of them the target model served, from the audit log.
    ``endpoint``: the router's path for the zoo's kind (/v1/embed for encoder zoos), here and below."""
    if spec is None:
        return {"consistency": 0.0, "queries": 0}
    start = _audit_len(audit_path)
    client = RouterClient(router_url, api_key, endpoint=endpoint)
    for i in range(len(inputs)):
        try:
            client.infer(inputs[i : i + 1], **spec)
        except RouterRejected:
            pass
    client.close()
    records = list(read_audit_log(audit_path))[start:]
    served = [r["model"] for r in records if r["outcome"] == "served"]
    return {"consistency": sum(m == target for m in served) / len(inputs), "queries": len(inputs),
            "served_by": {m: served.count(m) for m in sorted(set(served))}}


def signature_consistency(router_url: str, api_key: str, probe: np.ndarray, spec: dict | None,
                          target_signature: str | None, n: int, endpoint: str = "/v1/infer") -> dict:
    """Without an audit log: the share of ``n`` probe queries with ``spec`` answered with the target's signature."""
    if spec is None or target_signature is None:
        return {"consistency": 0.0, "queries": 0, "scored_by": "signature"}
    oracle = SpecOracle(RouterClient(router_url, api_key, endpoint=endpoint), probe)
    hits = sum(oracle.ask(spec["min_accuracy"], spec["max_latency_ms"]) == target_signature for _ in range(n))
    oracle.client.close()
    return {"consistency": hits / n, "queries": n, "scored_by": "signature"}


def run_fingerprint(method: str, router_url: str, api_key: str, probe: np.ndarray, target_rank: int,
                    grid_size: int = 25, repeats: int = 3, votes: int = 1, backoff: tuple[float, float] = (0.0, 0.0),
                    endpoint: str = "/v1/infer"):
    """Encoder zoos (``endpoint`` /v1/embed): unchanged, the probe's embedding is the answering model's signature."""
    client = RouterClient(router_url, api_key, endpoint=endpoint)
    oracle = SpecOracle(client, probe)
    info = client.zoo()
    if method == "staircase":
        result = staircase(oracle, info, FingerprintSettings(target_rank=target_rank, votes=votes,
                                                             accuracy_backoff=backoff[0], latency_backoff_ms=backoff[1]))
    else:
        result = grid_scan(oracle, info, GridScanSettings(target_rank=target_rank, grid_size=grid_size, repeats=repeats))
    client.close()
    return result


def victim_labels(zoo_dir, victim, x_test: np.ndarray) -> np.ndarray:
    return run_onnx(open_session(zoo_dir / victim.onnx_file), x_test).argmax(1)


NO_SPECIFICATION = {"accuracy": None, "fidelity": None, "failed": True, "answers": 0, "requests": 0,
                    "rejected_requests": 0, "retry_reasons": ["fingerprinting found no specification for the victim"]}


def collect_extraction(setting: str, router_url: str, api_key: str, triton_http_url: str, victim, spec: dict | None,
                       pool: np.ndarray, s: KnockoffSettings):
    """One extraction's transcript, or None for "fingerprinted" without a specification (the staircase found
    none): it is reported as failed, not run with no requirements, which would be the naive setting renamed."""
    if setting == "explicit":
        sut, req = DirectTriton.for_entry(triton_http_url, victim), {}
    elif setting == "fingerprinted":
        if spec is None:
            return None
        sut, req = RouterClient(router_url, api_key), dict(spec)
    else:
        sut, req = RouterClient(router_url, api_key), {}
    try:
        return collect(sut, pool, s, req)
    finally:
        sut.close()


def transcript_counts(t) -> dict:
    return {"answers": int(len(t.x)), "requests": t.requests, "rejected_requests": t.rejected_requests}


def run_extraction(setting: str, router_url: str, api_key: str, triton_http_url: str, victim, spec: dict | None,
                   pool: np.ndarray, data, labels: np.ndarray, s: KnockoffSettings, log=print) -> dict:
    """One extraction and its score (collect_extraction, then train_and_score)."""
    t = collect_extraction(setting, router_url, api_key, triton_http_url, victim, spec, pool, s)
    if t is None:
        return dict(NO_SPECIFICATION)
    scored = train_and_score(t, tuple(data.sample_shape), data.n_classes, s, data.x["test"], data.y["test"], labels,
                             log=log)
    return scored | transcript_counts(t)


def summarize_extraction(runs: list[dict]) -> list[dict]:
    """Per (budget, setting, labels_only): mean, standard deviation and 95% interval over the seeds whose
    surrogate trained; failed runs are counted and named (``failed_seeds``), never averaged in."""
    rows = []
    keys = dict.fromkeys((r["budget"], r.get("labels_only", False)) for r in runs)
    for budget, labels_only in keys:
        for setting in SETTINGS:
            sel = [r for r in runs if r["budget"] == budget and r["setting"] == setting
                   and r.get("labels_only", False) == labels_only]
            if not sel:
                continue
            ok = [r for r in sel if not r.get("failed")]
            row = {"budget": budget, "setting": setting, "labels_only": labels_only, "seeds": len(ok),
                   "failed_seeds": [r["seed"] for r in sel if r.get("failed")],
                   "retried_seeds": [r["seed"] for r in sel if r.get("attempts", 1) > 1 and not r.get("failed")]}
            for metric in ("accuracy", "fidelity"):
                values = [r[metric] for r in ok]
                mean, sd, ci = seed_summary(values)
                row |= {metric: mean, f"{metric}_std": sd, f"{metric}_ci95": ci}
            rows.append(row)
    return rows


def run_timing(router_url: str, api_key: str, audit_path, manifest, probe: np.ndarray, s,
               pool: np.ndarray | None = None) -> dict:
    """The timing side channel end to end: the staircase's corners for every front rank (from 200/422 answers
    only), timed templates at each, then identification scored against the audit log's serving model. With
    ``pool``, every query sends the next pool sample instead of the fixed probe (attacks/timing.py)."""
    from .timing import identification_accuracy, templates, timed_answers

    front = front_by_accuracy(manifest)
    rank_of = {m.name: k for k, m in enumerate(front, 1)}
    client = RouterClient(router_url, api_key)
    oracle = SpecOracle(client, probe, pool=pool)
    fp = staircase(oracle, client.zoo(), FingerprintSettings(target_rank=len(front), verify_queries=1))
    corners = {k: c for k, c in enumerate(fp.corners, 1)}
    inputs = probe if pool is None else pool
    sent = fp.queries  # natural streams go on through the pool where the staircase stopped
    template_times = {}
    for k, c in corners.items():
        template_times[k] = np.array([t for t, _ in timed_answers(client, inputs, c, s.template_queries, sent,
                                                                  s.batch_size)])
        sent += s.template_queries
    test = []
    for c in corners.values():
        test += timed_answers(client, inputs, c, s.test_queries, sent, s.batch_size)
        sent += s.test_queries
    client.close()
    # looked up by request id, so one pass over the log serves (no offset to read the log for first)
    served = {r["request_id"]: r["model"] for r in read_audit_log(audit_path) if r["outcome"] == "served"}
    test_by_rank: dict[int, list[float]] = {k: [] for k in corners}
    for t, rid in test:
        k = rank_of.get(served.get(rid))
        if k in test_by_rank:
            test_by_rank[k].append(t)
    medians = templates(template_times)
    acc = identification_accuracy(medians, {k: np.array(v) for k, v in test_by_rank.items()}, s) if medians else {}
    return {"ranks": len(corners), "front": len(front), "chance": 1 / max(1, len(corners)),
            "accuracy_by_samples": {str(m): a for m, a in acc.items()},
            "template_median_ms": {str(k): float(np.exp(v)) for k, v in medians.items()},
            "queries": fp.queries + sum(len(t) for t in template_times.values()),
            "inputs": "fixed probe" if pool is None else "natural pool samples", "settings": s.as_dict()}
