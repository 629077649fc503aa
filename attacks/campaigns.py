"""Attack campaigns against a running stack: fingerprint a zoo's front, then extract its most accurate model in
PSML's three settings over budgets and seeds, each scored from the audit log and the victim's own labels. The
command line (psml/cli_attack.py), the demo and the report run these; they print and write nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from common.errors import ConfigError
from stack.loopback import DEMO_KEYS

ATTACKER_KEY = next(k for k, v in DEMO_KEYS.items() if v == "attacker")


def fingerprint_and_score(router, manifest, data, methods, target_rank: int, consistency_queries: int,
                          grid_size: int, repeats: int, api_key: str = ATTACKER_KEY) -> dict:
    """``router``: anything with ``url`` and ``audit_path`` (None: score from answer signatures only)."""
    from .experiment import consistency, front_by_accuracy, run_fingerprint, signature_consistency

    front = front_by_accuracy(manifest)
    if target_rank > len(front):
        raise ConfigError(f"target rank {target_rank} exceeds the {len(front)} models on the zoo's Pareto front")
    target = front[target_rank - 1]
    probe = data.x["attacker_pool"][:1]
    endpoint = manifest.zoo.endpoint
    results = {}
    for method in methods:
        r = run_fingerprint(method, router.url, api_key, probe, target_rank, grid_size, repeats,
                            endpoint=endpoint).as_dict()
        later = data.x["attacker_pool"][1 : 1 + consistency_queries]
        if router.audit_path is not None:
            r["consistency"] = consistency(router.url, api_key, router.audit_path, r["spec"], later, target.name,
                                           endpoint)
        else:  # no audit log: the share of repeated probe answers that carry the target's signature
            r["consistency"] = signature_consistency(router.url, api_key, probe, r["spec"], r["target_signature"],
                                                     consistency_queries, endpoint)
        results[method] = r
    return {"target": target.name, "target_rank": target_rank, "results": results}


def check_budgets(budgets, data, pool_name: str) -> dict[str, int]:
    """Every budget as samples, checked against the query pool before anything starts."""
    from .knockoff import resolve_budget
    from .query_pools import query_pool

    size = len(query_pool(pool_name, data, 0))
    return {str(b): resolve_budget(b, size) for b in budgets}


def extract_and_score(zoo_dir, manifest, data, triton, router, budgets, seeds, pool_name, base, log=print,
                      labels_only_budgets=(), progress=None) -> dict:
    """Fingerprint the victim, then Knockoff in the three settings for every budget and seed (probabilities, and
    top-1 labels for ``labels_only_budgets``). Every budget is checked before the first query."""
    from .experiment import (NO_SPECIFICATION, SETTINGS, collect_extraction, front_by_accuracy,
                             summarize_extraction, transcript_counts, victim_labels)
    from .parallel_training import train_many
    from .query_pools import query_pool

    samples = check_budgets(list(budgets) + [b for b in labels_only_budgets if b not in budgets], data, pool_name)
    fp = fingerprint_and_score(router, manifest, data, ["staircase"], 1, 50, 0, 0)
    spec = fp["results"]["staircase"]["spec"]
    if spec is None:
        log("  fingerprinting found no specification: the fingerprinted setting is reported as failed")
    victim = front_by_accuracy(manifest)[0]
    labels = victim_labels(Path(zoo_dir), victim, data.x["test"])
    plan = [(b, False) for b in budgets] + [(b, True) for b in labels_only_budgets]
    # collect every transcript first (network-bound, in order), then train them on every core
    runs, jobs, where = [], [], []
    for budget, labels_only in plan:
        for seed in seeds:
            pool = query_pool(pool_name, data, seed)
            for setting in SETTINGS:
                s = replace(base, budget=samples[str(budget)], seed=seed, labels_only=labels_only or base.labels_only)
                t = collect_extraction(setting, router.url, ATTACKER_KEY, triton.endpoints.http_url, victim, spec,
                                       pool, s)
                runs.append({"budget": str(budget), "budget_samples": s.budget, "setting": setting, "seed": seed,
                             "labels_only": s.labels_only} | (dict(NO_SPECIFICATION) if t is None else transcript_counts(t)))
                if t is not None:
                    where.append(len(runs) - 1)
                    jobs.append((t, tuple(data.sample_shape), data.n_classes, s, data.x["test"], data.y["test"], labels))
                elif progress is not None:
                    progress()
    for i, scored in zip(where, train_many(jobs, log=log, progress=progress)):
        runs[i] |= scored
    for r in runs:
        shown = "failed" if r["accuracy"] is None else f"acc {r['accuracy']:.3f} fid {r['fidelity']:.3f}"
        log(f"  {r['budget']:<6} seed {r['seed']} {r['setting']:<13} {'labels ' if r['labels_only'] else ''}{shown}"
            + (f" (after {r['attempts']} attempts)" if r.get("attempts", 1) > 1 else ""))
    return {"victim": victim.name, "fingerprint": fp, "runs": runs, "summary": summarize_extraction(runs),
            "budget_samples": samples}
