"""Extraction against one victim on one configuration's router: every attacker of the set, a fresh key set per
seed, every sample sent counted; surrogates trained after all transcripts are in (attacks/parallel_training.py).
And the budget sweep: the strongest attacker's surrogates retrained on the first B samples of its transcripts."""

from __future__ import annotations

import numpy as np

from attacks.knockoff import KnockoffSettings, collect
from attacks.parallel_training import train_many
from attacks.signature_filter import SignatureFilterSettings, collect_filtered
from common.stats import mean_ci95
from router.audit_log import read_audit_log
from stack.clients import RouterClient

from .phases import detection
from .settings import ATTACKERS, SPLIT_KEYS


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

