"""The defense trade-off frontier: every defense configuration measured the same way, on one Triton, in one run,
each judged against the strongest attacker tried.

Per configuration (a router of its own, the same code, zoo and Triton):
- benign: a population of benign clients, each with its own API key, interleaved (loadtests/benign.py):
  goodput (both definitions) and useful goodput (answered within the SLO with the right label, in samples:
  loadtests/useful.py; a defense that flips labels is free to the other two), reject / drop / refused rates, end-to-end p50/p99 from exact client times, router
  CPU per request (/proc), and false positives: the share of benign keys a per-client defense flagged or refused,
  among short sessions and among long ones that send as many samples as one extraction (``long_benign_phase``);
- fingerprinting: the staircase, plain and adaptive (votes + back-off), queries and consistency (audit log);
- extraction (medium budget, --seeds): attackers, fresh API keys for every (attacker, seed), so a per-client
  defense's state never carries from one seed's attack to the next:
  * staircase: Knockoff through the plain staircase's specification;
  * staircase_adaptive: through the adaptive staircase's specification;
  * top_accuracy: no fingerprinting: ask for the published top accuracy with no latency bound, resend a
    rejected request up to 20 times (the independent check's attacker);
  * key_split: top_accuracy spread over 3 API keys (only where a per-client defense is configured);
  every transcript trains a soft-label and a labels-only surrogate; the strongest (highest mean fidelity over
  seeds) is the configuration's figure, named in the table; detection per attacker: first flag or refusal;
- timing: the side channel (attacks/timing.py): identification accuracy from 1..30 timing samples, for two
  attackers: a fixed probe (``timing``) and natural pool samples (``timing_natural``, the adaptive attacker
  against per-client detection); the stronger (single-answer accuracy) is the configuration's figure.
With ``--sweep-budgets 250 500 1000 2000`` every attacker sends the largest budget once; rows are scored on
the first ``--budget`` samples of that transcript (Transcript.up_to: exactly what an attacker stopping there
held), and the row's strongest attacker is scored again at every swept budget, which gives each defense its
cost multiplier (attacks/cost_multiplier.py): the budget at which it comes within 1 fidelity point of the
undefended attack, over the reference budget, or "not reached by N".
Writes JSON and two PNGs: strongest attacker's fidelity (and accuracy) against benign goodput with the
defenses' Pareto frontier and the PSML paper's point (-4.8 fidelity points at goodput 0.80, placed against
this zoo's undefended figure); and benign p99 cost against protection.

    python -m benchmarks.defense_tradeoff [--zoo model_repository/default] [--seeds 0 1 2] [--quick]
        [--victims all|top|middle|NAME ...] [--attackers ...] [--sweep-budgets 250 500 1000 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from attacks.box_centre import BoxCentreSettings, fingerprint_box_centre
from attacks.cost_multiplier import cost_multiplier
from attacks.experiment import consistency, front_by_accuracy, run_fingerprint, run_timing, victim_labels
from attacks.fingerprint import FingerprintSettings
from attacks.knockoff import BUDGETS, KnockoffSettings, collect
from attacks.parallel_training import train_many
from attacks.oracle import SpecOracle
from attacks.signature_filter import SignatureFilterSettings, collect_filtered
from common.errors import ConfigError
from common.verdict import INVALID, VALID, all_of, at_most
from attacks.timing import TimingSettings
from loadtests.benign import benign_indices, benign_requirements
from loadtests.useful import benign_answer, useful_goodput
from loadtests.config import LoadSettings
from common.proc_cpu import tree_cpu_s
from common.results import write_result
from stack.loopback import router_for, triton_for
from common.stats import latency_summary, mean_ci95
from stack.clients import RouterClient, RouterRejected
from common.tables import format_table
from router.audit_log import read_audit_log
from router.defenses import is_client_defense, is_output_defense, make_defense
from router.goodput import summarize
from zoo.data import Dataset
from zoo.manifest import load_manifest

NOISE = {"name": "metric_noise", "distribution": "laplace"}
CONFIGS = {
    "none": [],
    "metric_noise 0.02/0.1ms": [NOISE | {"accuracy_scale": 0.02, "latency_scale_ms": 0.1}],
    "metric_noise 0.05/0.5ms": [NOISE | {"accuracy_scale": 0.05, "latency_scale_ms": 0.5}],
    "exponential eps=4": [{"name": "exponential_mechanism", "epsilon": 4.0}],
    "round 2 decimals": [{"name": "round_probabilities", "decimals": 2}],
    "round 1 decimal": [{"name": "round_probabilities", "decimals": 1}],
    "top_k 2": [{"name": "top_k", "k": 2}],
    "labels_only": [{"name": "labels_only"}],
    "reverse_sigmoid 0.5/1": [{"name": "reverse_sigmoid", "beta": 0.5, "gamma": 1.0}],
    "output_noise 0.1": [{"name": "output_noise", "sigma": 0.1}],
    "prada block": [{"name": "prada", "action": "block"}],
    "query_budget 500": [{"name": "query_budget", "max_samples": 500}],
    "latency_padding slowest": [{"name": "latency_padding", "floor": "slowest_front", "margin_ms": 1.0}],
    "noise+round2+prada": [NOISE | {"accuracy_scale": 0.02, "latency_scale_ms": 0.1},
                           {"name": "round_probabilities", "decimals": 2}, {"name": "prada", "action": "block"}],
}
QUICK = ("none", "metric_noise 0.02/0.1ms", "labels_only", "prada block", "latency_padding slowest")
SPLIT_KEYS = 3
FINGERPRINTERS = ("plain", "adaptive", "box_centre")
ATTACKERS = ("staircase", "staircase_adaptive", "box_centre", "signature_filter", "top_accuracy", "key_split")
# box_centre's staircase against noise: votes and back-offs that found every front model through Laplace
# 0.02 / 0.1 ms noise on the test zoo (tests/attacks/test_box_centre.py)
BOX_CENTRE = BoxCentreSettings(fingerprint=FingerprintSettings(votes=9, accuracy_backoff=0.05, latency_backoff_ms=0.2,
                                                               margin=0.25))
PAPER = {"d_accuracy": -0.098, "d_fidelity": -0.048, "min_goodput": 0.80}


LONG_BENIGN_CLIENTS = 5  # benign keys that each send as many samples as one extraction (equal-volume FP rate)


def keys_for(n_benign: int, seeds, ranks) -> dict[str, str]:
    """Every key is its own client. Each (victim, attacker, seed) extraction is an independent attack instance with
    fresh keys: a per-client defense's state (a PRADA flag, a spent budget) must not carry from one to the next."""
    names = [f"benign-{i:02d}" for i in range(n_benign)] + [f"long-benign-{i}" for i in range(LONG_BENIGN_CLIENTS)]
    names += ["timing", "timing-natural"]
    for k in ranks:
        names += [f"fp-{who}-r{k}" for who in FINGERPRINTERS]
        for seed in seeds:
            names += [f"{who}-r{k}-s{seed}" for who in ATTACKERS if who != "key_split"]
            names += [f"split-{j}-r{k}-s{seed}" for j in range(SPLIT_KEYS)]
    return {k: k for k in names}


def resolve_victims(front: list, asked: list[str]) -> list:
    """``asked``: ["all"], or any of "top", "middle" (the front's middle model; of an even front the faster of
    the two middle ones) and model names, each on the front. Front most accurate first."""
    if asked == ["all"]:
        return list(front)
    names = {m.name: m for m in front}
    out = []
    for a in asked:
        m = front[0] if a == "top" else front[len(front) // 2] if a == "middle" else names.get(a)
        if m is None:
            raise ConfigError(f"--victims: {a!r} is not on this zoo's front ({', '.join(names)}); use all, top, "
                              "middle or a front model's name")
        if m not in out:
            out.append(m)
    return out


def zoo_info(url: str) -> dict:
    """What the service publishes (GET /v1/zoo), on a connection of its own."""
    client = RouterClient(url, "timing")
    try:
        return client.zoo()
    finally:
        client.close()


def benign_phase(router, data, clients: int, per_client: int, seed: int) -> dict:
    """Interleaved benign clients (own keys); exact client times; router CPU per request; false positives."""
    s, rng = LoadSettings(), np.random.default_rng(seed)
    conns = [RouterClient(router.url, f"benign-{i:02d}") for i in range(clients)]
    info = conns[0].zoo()
    times, useful, cpu0 = [], [], tree_cpu_s(router.process.pid)
    for _ in range(per_client):
        for c in conns:
            idx = benign_indices(rng, len(data.x["test"]), s)
            req = benign_requirements(rng, info, s)
            t0 = time.perf_counter()
            try:
                labels = c.answer(data.x["test"][idx], *req)["labels"]
            except RouterRejected:
                labels = None
            times.append((time.perf_counter() - t0) * 1e3)
            useful.append(benign_answer(data.y["test"][idx], labels, times[-1], req[1]))
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
    extraction (test-split samples, distinct within a key, 25 per request, no requirements). Short benign
    sessions alone would flatter a detector that flags any long stream."""
    rng = np.random.default_rng(seed + 7)
    for i in range(LONG_BENIGN_CLIENTS):
        key = f"long-benign-{i}"
        c = RouterClient(router.url, key)
        idx = rng.choice(len(data.x["test"]), min(samples, len(data.x["test"])), replace=False)
        for start in range(0, len(idx), 25):
            try:
                c.infer(data.x["test"][idx[start : start + 25]])
            except RouterRejected:
                pass
        c.close()
    records = list(read_audit_log(router.audit_path))
    per_key = {key: detection(records, {key}) for key in (f"long-benign-{i}" for i in range(LONG_BENIGN_CLIENTS))}
    flagged = [d for d in per_key.values() if d["detected"]]
    return {"clients": LONG_BENIGN_CLIENTS, "samples_each": int(min(samples, len(data.x["test"]))),
            "false_positive_rate": len(flagged) / LONG_BENIGN_CLIENTS,
            "samples_until_detection": [d["samples_until_detection"] for d in flagged], "per_key": per_key}


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


def extraction(router, info: dict, fps: dict, data, labels, probe: np.ndarray, budget: int, seeds, rank: int,
               output_defended: bool, per_client: bool, epochs: int, attackers=ATTACKERS,
               collect_budget: int | None = None) -> tuple[list[dict], dict]:
    """Every attacker against one victim (front rank ``rank``), one fresh key set per seed, ``budget`` samples
    sent each (rejected, resent, discarded and probe rows included). Each transcript trains a soft-label
    surrogate, and a labels-only one where an output defense is configured. With a budget sweep the attacker
    sends ``collect_budget`` samples and is scored here on the first ``budget`` of them (``Transcript.up_to``);
    the transcripts, keyed (attacker, seed), go back for the sweep."""
    rows, transcripts, jobs = [], {}, []
    collect_budget = max(collect_budget or budget, budget)
    # top_accuracy / key_split: no fingerprinting, ask for the published top accuracy less 0.001 (the published
    # figure is rounded to 4 places), resend a rejected request up to 20 times within the budget: rank 1 only
    top = {"min_accuracy": info["accuracy_range"][1] - 0.001}
    plans = {"staircase": (["staircase"], fps["plain"]["spec"], 0),
             "staircase_adaptive": (["staircase_adaptive"], fps["adaptive"]["spec"], 0),
             "box_centre": (["box_centre"], fps["box_centre"]["spec"], 0),
             "signature_filter": (["signature_filter"], fps["box_centre"]["spec"], 0)}
    if rank == 1:
        plans["top_accuracy"] = (["top_accuracy"], top, 20)
        if per_client:
            plans["key_split"] = ([f"split-{j}" for j in range(SPLIT_KEYS)], top, 20)
    for who, (base_keys, spec, resend) in plans.items():
        if who not in attackers:
            continue
        for seed in seeds:
            keys = [f"{k}-r{rank}-s{seed}" for k in base_keys]
            base = {"attacker": who, "seed": seed}
            signature = fps["box_centre"]["signature"] if who == "signature_filter" else "-"
            if spec is None or signature is None:
                # its fingerprint found no specification (or no victim signature): no extraction to run (with no
                # requirements it would be the naive setting under another name); it stole nothing
                rows += [base | {"labels_only": lo, "answers": 0, "requests": 0, "rejected_requests": 0,
                                 "samples_sent": 0, "accuracy": None, "fidelity": None, "note": "fingerprint failed",
                                 "detected": False, "samples_until_detection": None}
                         for lo in ((False, True) if output_defended else (False,))]
                continue
            clients = [RouterClient(router.url, k) for k in keys]
            if who == "signature_filter":
                t = collect_filtered(clients[0], data.x["attacker_pool"], probe, signature,
                                     SignatureFilterSettings(budget_samples=collect_budget, seed=seed), dict(spec))
                transcripts[(who, seed)] = t
                t = t.up_to(budget)
                base |= {"answers": t.answers_kept, "requests": t.batches_sent, "rejected_requests": t.rejected,
                         "samples_sent": t.samples_sent, "discarded_requests": t.outcomes.count("discarded")}
            else:
                s = KnockoffSettings(budget=collect_budget, seed=seed, resend_rejected=resend, epochs=epochs)
                t = collect(clients, data.x["attacker_pool"], s, dict(spec))
                transcripts[(who, seed)] = t
                t = t.up_to(budget)
                base |= {"answers": int(len(t.x)), "requests": t.requests, "rejected_requests": t.rejected_requests,
                         "samples_sent": t.samples_sent}
            for c in clients:
                c.close()
            base |= detection(list(read_audit_log(router.audit_path)), set(keys), within_samples=budget)
            for labels_only in ((False, True) if output_defended else (False,)):
                if len(t.x) == 0:
                    rows.append(base | {"labels_only": labels_only, "accuracy": None, "fidelity": None,
                                        "note": "no answers"})
                    continue
                rows.append(base | {"labels_only": labels_only})
                jobs.append((len(rows) - 1, (t, tuple(data.sample_shape), data.n_classes,
                                             KnockoffSettings(budget=budget, seed=seed, labels_only=labels_only,
                                                              epochs=epochs), data.x["test"], data.y["test"], labels)))
    # every transcript collected (in order, through the router), then every surrogate trained on every core
    for (i, _), scored in zip(jobs, train_many([job for _, job in jobs])):
        rows[i] |= scored
    return rows, transcripts


def budget_sweep(transcripts: dict, attacker: str, budgets: list[int], reference_budget: int, reference: dict,
                 data, labels, epochs: int) -> dict:
    """The strongest attacker's fidelity at every swept budget, from the first B samples of the transcripts it
    collected (one per seed); the reference budget's figures are the row's own (``reference``: seed -> (acc,
    fid)). Mean and 95% interval over seeds per budget; failed surrogates left out as in ``strongest``."""
    who, _, lo = attacker.partition(" ")
    per = {b: ({seed: f for seed, (_, f) in reference.items()} if b == reference_budget else {}) for b in budgets}
    jobs = []
    for b in budgets:
        if b == reference_budget:
            continue
        for (w, seed), t in sorted(transcripts.items(), key=lambda kv: kv[0][1]):
            cut = t.up_to(b) if w == who else None
            if cut is None:
                continue
            if len(cut.x) == 0:
                per[b][seed] = 0.0  # it holds nothing yet: it stole nothing
                continue
            jobs.append(((b, seed), (cut, tuple(data.sample_shape), data.n_classes,
                                     KnockoffSettings(budget=b, seed=seed, labels_only=bool(lo), epochs=epochs),
                                     data.x["test"], data.y["test"], labels)))
    for ((b, seed), _), scored in zip(jobs, train_many([job for _, job in jobs])):
        if not scored["failed"]:
            per[b][seed] = scored["fidelity"]
    out = {}
    for b in budgets:
        m, ci_lo, ci_hi = mean_ci95(list(per[b].values())) if per[b] else (None, None, None)
        out[b] = {"fidelity": m, "fidelity_ci95": [ci_lo, ci_hi] if len(per[b]) > 1 else None,
                  "per_seed": {str(k): v for k, v in sorted(per[b].items())}}
    return out


def strongest(rows: list[dict]) -> dict:
    """Group per (attacker, labels_only): mean and 95% interval over seeds; the strongest by mean fidelity.
    An attacker that got no answers, or whose fingerprint failed, scores 0 (it stole nothing; its rows say
    "no answers" or "fingerprint failed"). A surrogate whose
    training failed after its retries (attacks/knockoff.py) is left out of the mean and counted in
    ``failed_seeds``: a training failure is not a defense's success."""
    groups = {}
    for r in rows:
        groups.setdefault((r["attacker"], r["labels_only"]), []).append(r)
    summary = []
    for (who, lo), rs in groups.items():
        kept = [r for r in rs if not r.get("failed")] or rs
        acc = mean_ci95([r["accuracy"] or 0.0 for r in kept])
        fid = mean_ci95([r["fidelity"] or 0.0 for r in kept])
        summary.append({"attacker": who + (" labels" if lo else ""), "accuracy": acc[0], "accuracy_ci95": acc[1:],
                        "fidelity": fid[0], "fidelity_ci95": fid[1:], "answers": float(np.mean([r["answers"] for r in rs])),
                        "failed_seeds": [r["seed"] for r in rs if r.get("failed")],
                        "detected": any(r["detected"] for r in rs), "detected_seeds": sum(r["detected"] for r in rs),
                        "seeds": len(rs), "samples_until_detection": [r["samples_until_detection"] for r in rs]})
    return {"by_attacker": summary, "strongest": max(summary, key=lambda s: (s["fidelity"], s["accuracy"]))}


def per_seed(rows: list[dict], attacker: str) -> dict[int, tuple[float, float]]:
    """Seed -> (accuracy, fidelity) of one attacker (name as ``strongest`` gives it: "<who>[ labels]"); an
    attacker that stole nothing scores 0, a failed surrogate is left out (as in ``strongest``)."""
    who, _, lo = attacker.partition(" ")
    return {r["seed"]: (r["accuracy"] or 0.0, r["fidelity"] or 0.0) for r in rows
            if r["attacker"] == who and r["labels_only"] == bool(lo) and not r.get("failed")}


def paired_to_none(defended: dict[int, tuple[float, float]], none: dict[int, tuple[float, float]]) -> dict:
    """The defense's effect on its strongest attacker against the undefended strongest attacker, paired by seed
    (same seed: same pool draw, same surrogate initialisation): mean differences with Student-t 95% intervals."""
    seeds = sorted(set(defended) & set(none))
    if not seeds:
        return {"paired_seeds": 0, "d_accuracy": None, "d_accuracy_ci95": None, "d_fidelity": None,
                "d_fidelity_ci95": None}
    out = {"paired_seeds": len(seeds)}
    for i, metric in enumerate(("accuracy", "fidelity")):
        m, lo, hi = mean_ci95([defended[k][i] - none[k][i] for k in seeds])
        out |= {f"d_{metric}": m, f"d_{metric}_ci95": [lo, hi] if len(seeds) > 1 else None}
    return out


def pareto_frontier(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Points (goodput, fidelity, name) not dominated by another with goodput >= and fidelity <=."""
    front = [p for p in points if not any((q[0] >= p[0] and q[1] <= p[1]) and (q[0] > p[0] or q[1] < p[1])
                                          for q in points)]
    return sorted(front)


def plots(rows: list[dict], out_dir: Path) -> list[str]:
    """Per victim (one row of panels each): the strongest attacker's fidelity and accuracy against benign goodput
    with the defenses' frontier and the paper's point; then benign p99 cost against protection."""
    from zoo.plots import _plt

    plt, paths = _plt(), []
    victims = list(dict.fromkeys(r["victim"] for r in rows))
    fig, axes = plt.subplots(len(victims), 2, figsize=(12, 4.8 * len(victims)), squeeze=False)
    for row_axes, victim in zip(axes, victims):
        mine = [r for r in rows if r["victim"] == victim]
        base = next(r for r in mine if r["config"] == "none")
        for ax, metric in zip(row_axes, ("fidelity", "accuracy")):
            pts = [(r["goodput"], r[metric], r["config"]) for r in mine]
            for g, v, name in pts:
                ax.scatter(g, v, s=25)
                ax.annotate(name, (g, v), fontsize=6, xytext=(3, 3), textcoords="offset points")
            front = pareto_frontier(pts)
            ax.plot([p[0] for p in front], [p[1] for p in front], "k--", alpha=0.5, label="defense frontier")
            paper = base[metric] + PAPER["d_" + metric]
            ax.scatter([PAPER["min_goodput"]], [paper], marker="*", s=160, c="red",
                       label=f"PSML paper ({PAPER['d_' + metric]:+.1%} at goodput {PAPER['min_goodput']})")
            ax.set_xlabel("benign goodput (end to end)")
            ax.set_ylabel(f"strongest attacker's surrogate {metric}")
            ax.set_title(f"victim {victim}", fontsize=9)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(str(out_dir / "defense_tradeoff.png"))
    fig.savefig(paths[-1], dpi=130)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in rows:
        base = next(b for b in rows if b["config"] == "none" and b["victim"] == r["victim"])
        x, y = base["fidelity"] - r["fidelity"], r["benign_p99_ms"] / base["benign_p99_ms"]
        ax.scatter(x, y, s=25)
        ax.annotate(f"{r['config']} ({r['victim']})", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("protection: fidelity points taken from the strongest attacker")
    ax.set_ylabel("benign p99 latency / undefended")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(str(out_dir / "defense_latency_cost.png"))
    fig.savefig(paths[-1], dpi=130)
    plt.close(fig)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="model_repository/default")
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), help="default: all")
    ap.add_argument("--victims", nargs="+", default=["all"],
                    help="all (default: every front model), top, middle, or front model names")
    ap.add_argument("--attackers", nargs="+", default=list(ATTACKERS),
                    help=f"the attacker set, the same for every row (default all: {', '.join(ATTACKERS)}; "
                         "top_accuracy and key_split attack the top victim only)")
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}; one seed; small budget")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", default="medium", choices=list(BUDGETS))
    ap.add_argument("--sweep-budgets", type=int, nargs="+", metavar="SAMPLES",
                    help="also score each row's strongest attacker at these budgets (samples sent; e.g. 250 500 1000 "
                         "2000) from one collection at the largest, and give each defense its cost multiplier")
    ap.add_argument("--benign-clients", type=int, default=20)
    ap.add_argument("--benign-per-client", type=int, default=30, help="requests per benign client")
    ap.add_argument("--epochs", type=int, default=KnockoffSettings().epochs, help="surrogate training epochs")
    ap.add_argument("--router-seed", type=int, default=0)
    ap.add_argument("--out", default="results/defense_tradeoff.json")
    a = ap.parse_args(argv)
    names = a.configs or (list(QUICK) if a.quick else list(CONFIGS))
    if "none" not in names:
        names = ["none", *names]  # every difference is against the undefended router of the same run
    seeds, budget = (a.seeds[:1], "small") if a.quick else (a.seeds, a.budget)

    started = time.time()
    manifest = load_manifest(a.zoo)
    data = Dataset.load(Path(a.zoo) / manifest.zoo.dataset.data_file)
    front = front_by_accuracy(manifest)
    try:  # bad input: one line and exit 2 before any work
        victims = resolve_victims(front, a.victims)
        unknown = sorted(set(a.attackers) - set(ATTACKERS))
        if unknown:
            raise ConfigError(f"--attackers: unknown {', '.join(unknown)}; choose from {', '.join(ATTACKERS)}")
        if BUDGETS[budget] > len(data.x["attacker_pool"]):
            raise ConfigError(f"budget {budget} ({BUDGETS[budget]} samples) exceeds the attacker pool of "
                              f"{len(data.x['attacker_pool'])} samples")
        sweep = sorted(set(a.sweep_budgets or []) | ({BUDGETS[budget]} if a.sweep_budgets else set()))
        if sweep and (sweep[0] < 25 or sweep[-1] > len(data.x["attacker_pool"])):
            raise ConfigError(f"--sweep-budgets: every budget must lie in [25, {len(data.x['attacker_pool'])}] "
                              f"(one request, the attacker pool), got {a.sweep_budgets}")
    except ConfigError as e:
        print(f"defense_tradeoff: error: {e}", file=sys.stderr)
        return 2
    rank_of = {m.name: k for k, m in enumerate(front, 1)}
    labels = {v.name: victim_labels(Path(a.zoo), v, data.x["test"]) for v in victims}
    probe = data.x["attacker_pool"][:1]
    keys = keys_for(a.benign_clients, seeds, [rank_of[v.name] for v in victims])
    rows, details = [], {}
    with tempfile.TemporaryDirectory(prefix="psml-tradeoff-") as tmp, triton_for(a.zoo, tmp) as triton:
        for i, name in enumerate(names):
            defenses = CONFIGS[name]
            built = [make_defense(d) for d in defenses]
            output_defended = any(map(is_output_defense, built))
            per_client = any(map(is_client_defense, built))
            with router_for(a.zoo, tmp, triton, f"r{i}", defenses=defenses, seed=a.router_seed, api_keys=keys,
                            max_batch_size=64) as router:
                benign = benign_phase(router, data, a.benign_clients, a.benign_per_client, a.router_seed)
                long_benign = long_benign_phase(router, data, BUDGETS[budget], a.router_seed)
                info = zoo_info(router.url)
                timings = {}
                for who, pool in (("timing", None), ("timing-natural", data.x["attacker_pool"][101:])):
                    try:
                        timings[who] = run_timing(router.url, who, router.audit_path, manifest, probe,
                                                  TimingSettings(), pool=pool)
                    except RouterRejected as e:  # this attacker's stream was refused part-way
                        timings[who] = {"refused": e.status, "accuracy_by_samples": {}, "chance": None}
                    timings[who] |= {"detection": detection(list(read_audit_log(router.audit_path)), {who})}
                timing_who = max(timings, key=lambda w: timings[w]["accuracy_by_samples"].get("1") or 0.0)
                timing = timings[timing_who]
                for victim in victims:
                    rank = rank_of[victim.name]
                    fps = fingerprints(router, info, probe, rank)
                    for who, f in fps.items():
                        f["consistency"] = consistency(router.url, f"fp-{who}-r{rank}", router.audit_path, f["spec"],
                                                       data.x["attacker_pool"][1:101], victim.name)["consistency"] \
                            if f["spec"] is not None else 0.0
                    ex, transcripts = extraction(router, info, fps, data, labels[victim.name], probe,
                                                 BUDGETS[budget], seeds, rank, output_defended, per_client, a.epochs,
                                                 tuple(a.attackers), collect_budget=sweep[-1] if sweep else None)
                    best = strongest(ex)
                    st = best["strongest"]
                    own = per_seed(ex, st["attacker"])
                    swept = budget_sweep(transcripts, st["attacker"], sweep, BUDGETS[budget], own, data,
                                         labels[victim.name], a.epochs) if sweep else {}
                    row = {"config": name, "victim": victim.name, "victim_rank": rank,
                           "goodput": benign["goodput_share"], "goodput_profiled": benign["goodput_share_profiled"],
                           "useful_goodput": benign["useful_goodput_share"],
                           "benign_label_accuracy": benign["label_accuracy"],
                           "reject_rate": benign["reject_rate"], "drop_rate": benign["drop_rate"],
                           "benign_p50_ms": benign["latency_ms"]["p50_ms"], "benign_p99_ms": benign["latency_ms"]["p99_ms"],
                           "router_cpu_us": benign["router_cpu_us_per_request"],
                           "benign_fp_rate": benign["false_positive_rate"],
                           "long_benign_fp_rate": long_benign["false_positive_rate"],
                           "fp_queries": fps["plain"]["queries"],
                           "fp_consistency": max(f["consistency"] for f in fps.values()),
                           "strongest_attacker": st["attacker"], "accuracy": st["accuracy"],
                           "accuracy_ci95": st["accuracy_ci95"], "fidelity": st["fidelity"],
                           "fidelity_ci95": st["fidelity_ci95"], "samples_sent": budget_sent(ex, st["attacker"]),
                           "answers": st["answers"],
                           "detected": [b["attacker"] for b in best["by_attacker"] if b["detected"]],
                           "timing_1": timing["accuracy_by_samples"].get("1"),
                           "timing_30": timing["accuracy_by_samples"].get("30"),
                           "timing_chance": timing["chance"], "timing_attacker": timing_who,
                           "timing_detected": [w for w, t in timings.items() if t["detection"]["detected"]],
                           "defenses": defenses, "_per_seed": own,
                           "fidelity_by_budget": {str(b): v["fidelity"] for b, v in swept.items()}}
                    rows.append(row)
                    details[f"{name} | {victim.name}"] = {"fingerprint": fps, "extraction": ex,
                                                          "by_attacker": best["by_attacker"],
                                                          "budget_sweep": {str(b): v for b, v in swept.items()}}
                    print(f"  [{i + 1}/{len(names)}] {name}, victim {victim.name}: goodput {row['goodput']:.3f}, "
                          f"strongest {st['attacker']} acc {st['accuracy']:.3f} fid {st['fidelity']:.3f}", flush=True)
                details[name] = {"benign": benign, "long_benign": long_benign, "timing": timings}
    none = {r["victim"]: r for r in rows if r["config"] == "none"}
    none_seeds = {v: r["_per_seed"] for v, r in none.items()}  # the undefended strongest attacker, per seed
    for r in rows:
        own = r.pop("_per_seed")
        r |= paired_to_none(own, none_seeds[r["victim"]])
        undefended = none_seeds[r["victim"]]
        r["per_seed"] = {str(k): {"accuracy": acc, "fidelity": fid, "none_accuracy": undefended[k][0],
                                  "none_fidelity": undefended[k][1]}
                         for k, (acc, fid) in own.items() if k in undefended}  # pooled by defense_over_builds
        if sweep:
            r |= cost_multiplier({int(b): f for b, f in r["fidelity_by_budget"].items()},
                                 none[r["victim"]]["fidelity"], BUDGETS[budget])
        r["p99_ratio"] = r["benign_p99_ms"] / none[r["victim"]]["benign_p99_ms"]
        r["paper_verdict"] = paper_verdict(r)
    shown = [r | {k: "[{:+.3f}, {:+.3f}]".format(*r[k]) if r[k] else "-" for k in ("d_accuracy_ci95", "d_fidelity_ci95")}
             for r in rows]
    print(format_table(shown, [("config", "defense"), ("victim", "victim"), ("goodput", "goodput"),
                              ("useful_goodput", "useful goodput"), ("reject_rate", "rejected"),
                              ("benign_p99_ms", "p99 ms"), ("benign_fp_rate", "benign FP"),
                              ("strongest_attacker", "strongest attacker"), ("samples_sent", "samples sent"),
                              ("answers", "answers kept"), ("accuracy", "acc"), ("d_accuracy", "d acc"),
                              ("d_accuracy_ci95", "95% CI"), ("fidelity", "fid"), ("d_fidelity", "d fid"),
                              ("d_fidelity_ci95", "95% CI"), ("timing_1", "timing m=1"),
                              *([("reading", "cost multiplier")] if sweep else []), ("paper_verdict", "vs paper")]))
    beating = [f"{r['config']} ({r['victim']})" for r in rows if r["paper_verdict"] == VALID]
    print(f"victims {', '.join(v.name for v in victims)}; {budget} budget ({BUDGETS[budget]} samples sent, "
          f"every sample counted), seeds {seeds}. PSML paper: -9.8 acc / -4.8 fid points at goodput >= 0.80; "
          f"VALID (whole interval past it): {', '.join(beating) or 'none'}.")
    if sweep:
        print(f"cost multiplier: the smallest of {sweep} samples at which the row's strongest attacker's mean "
              f"fidelity comes within 1 point of the undefended one at {BUDGETS[budget]}, over {BUDGETS[budget]}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pngs = plots(rows, out.parent)
    write_result(out, "defense_tradeoff", {
        "wall_s": time.time() - started, "seeds": seeds, "budget": budget, "settings": vars(a), "sweep_budgets": sweep,
        "victims": [v.name for v in victims], "victim": victims[0].name,
        "zoo": {"path": a.zoo, "seed": manifest.zoo.seed, "front": [m.name for m in front]},
        "paper": PAPER, "rows": rows, "details": details, "valid_against_paper": beating, "plots": pngs,
        "timing_settings": TimingSettings().as_dict(), "knockoff": KnockoffSettings().as_dict(),
        "box_centre": asdict(BOX_CENTRE)}, created_unix=started)
    print(f"result: {out}; plots: {', '.join(pngs)}")
    return 0


def budget_sent(rows: list[dict], attacker: str) -> float | None:
    """Mean samples the attacker sent over seeds (its whole budget unless it stopped early)."""
    who = attacker.partition(" ")[0]
    sent = [r["samples_sent"] for r in rows if r["attacker"] == who and not r["labels_only"]]
    return float(np.mean(sent)) if sent else None


def paper_verdict(r: dict) -> str:
    """PSML's defense claim on this row: reductions at least the paper's (whole interval) at goodput >= 0.80."""
    return all_of(VALID if r["goodput"] >= PAPER["min_goodput"] else INVALID,
                  at_most(r["d_accuracy_ci95"], PAPER["d_accuracy"]), at_most(r["d_fidelity_ci95"], PAPER["d_fidelity"]))


if __name__ == "__main__":
    raise SystemExit(main())
