"""Scoring a trade-off run (pure functions over its recorded rows): each configuration's strongest attacker, its
per-seed figures paired with the undefended router's, the cost multiplier, and the verdict against the PSML
paper (attacks/psml_paper.py)."""

from __future__ import annotations

import numpy as np

from attacks import psml_paper
from attacks.cost_multiplier import cost_multiplier
from common.stats import mean_ci95


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



def budget_sent(rows: list[dict], attacker: str) -> float | None:
    """Mean samples the attacker sent over seeds (its whole budget unless it stopped early)."""
    who = attacker.partition(" ")[0]
    sent = [r["samples_sent"] for r in rows if r["attacker"] == who and not r["labels_only"]]
    return float(np.mean(sent)) if sent else None


def paper_verdict(r: dict) -> str:
    """PSML's defense claim on this row: reductions at least the paper's (whole interval) at the paper's goodput
    (attacks/psml_paper.py, the one rule every verdict against the paper uses)."""
    return psml_paper.defense_verdict([r["goodput"]], r["d_accuracy_ci95"], r["d_fidelity_ci95"])


def compare_to_none(rows: list[dict], sweep: list[int], reference_budget: int) -> list[dict]:
    """Completes every row (in place; returned) once the whole run is in: its strongest attacker's per-seed
    figures (``_per_seed``, popped) paired with the undefended strongest attacker's on the same victim, the cost
    multiplier from the sweep, the p99 ratio to none, and the verdict against the paper."""
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
                                 none[r["victim"]]["fidelity"], reference_budget)
        r["p99_ratio"] = r["benign_p99_ms"] / none[r["victim"]]["benign_p99_ms"]
        r["paper_verdict"] = paper_verdict(r)
    return rows
