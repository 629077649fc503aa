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

import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from attacks import psml_paper
from attacks.experiment import consistency, front_by_accuracy, victim_labels
from attacks.knockoff import KnockoffSettings
from attacks.timing import TimingSettings
from common.verdict import VALID
from router.defenses import is_client_defense, is_output_defense, make_defense
from stack.loopback import router_for, triton_for
from zoo.data import Dataset
from zoo.manifest import load_manifest

from .extraction import budget_sweep, extraction
from .phases import benign_phase, fingerprints, long_benign_phase, timing_phase, zoo_info
from .scoring import budget_sent, compare_to_none, per_seed, strongest
from .settings import BOX_CENTRE, CONFIGS, DefenseTradeoffSettings, keys_for, resolve_victims, sweep_for


def _print(message: str) -> None:
    print(message, flush=True)


def run(s: DefenseTradeoffSettings, plot_dir: Path | None = None, log=_print) -> dict:
    """The whole run: checks ``s`` against the zoo (ConfigError before any server starts), measures every
    configuration, scores it, and returns the result (rows, details, the paper's figures); with ``plot_dir`` the
    two PNGs are drawn there. ``log`` gets one line per (configuration, victim) as it finishes."""
    started = time.time()
    manifest = load_manifest(s.zoo_dir)
    data = Dataset.load(Path(s.zoo_dir) / manifest.zoo.dataset.data_file)
    front = front_by_accuracy(manifest)
    victims = resolve_victims(front, s.victims)
    sweep = sweep_for(s, len(data.x["attacker_pool"]))
    names, budget = s.configs_run(), s.budget_samples
    rank_of = {m.name: k for k, m in enumerate(front, 1)}
    labels = {v.name: victim_labels(Path(s.zoo_dir), v, data.x["test"]) for v in victims}
    probe = data.x["attacker_pool"][:1]
    keys = keys_for(s.benign_clients, s.seeds, [rank_of[v.name] for v in victims])
    rows, details = [], {}
    with tempfile.TemporaryDirectory(prefix="psml-tradeoff-") as tmp, triton_for(s.zoo_dir, tmp) as triton:
        for i, name in enumerate(names):
            defenses = CONFIGS[name]
            built = [make_defense(d) for d in defenses]
            output_defended = any(map(is_output_defense, built))
            per_client = any(map(is_client_defense, built))
            with router_for(s.zoo_dir, tmp, triton, f"r{i}", defenses=defenses, seed=s.router_seed, api_keys=keys,
                            max_batch_size=64) as router:
                benign = benign_phase(router, data, s.benign_clients, s.benign_requests_per_client, s.router_seed)
                long_benign = long_benign_phase(router, data, budget, s.router_seed)
                info = zoo_info(router.url)
                timings, timing_who = timing_phase(router, manifest, data, probe)
                for victim in victims:
                    rank = rank_of[victim.name]
                    fps = fingerprints(router, info, probe, rank)
                    for who, f in fps.items():
                        f["consistency"] = consistency(router.url, f"fp-{who}-r{rank}", router.audit_path, f["spec"],
                                                       data.x["attacker_pool"][1:101], victim.name)["consistency"] \
                            if f["spec"] is not None else 0.0
                    ex, transcripts = extraction(router, info, fps, data, labels[victim.name], probe, budget,
                                                 s.seeds, rank, output_defended, per_client, s.surrogate_epochs,
                                                 tuple(s.attackers), collect_budget=sweep[-1] if sweep else None)
                    best = strongest(ex)
                    st = best["strongest"]
                    own = per_seed(ex, st["attacker"])
                    swept = budget_sweep(transcripts, st["attacker"], sweep, budget, own, data, labels[victim.name],
                                         s.surrogate_epochs) if sweep else {}
                    rows.append(_row(name, victim.name, rank, benign, long_benign, fps, ex, best, own, swept,
                                     timings, timing_who, defenses))
                    details[f"{name} | {victim.name}"] = {"fingerprint": fps, "extraction": ex,
                                                          "by_attacker": best["by_attacker"],
                                                          "budget_sweep": {str(b): v for b, v in swept.items()}}
                    log(f"  [{i + 1}/{len(names)}] {name}, victim {victim.name}: goodput {rows[-1]['goodput']:.3f}, "
                        f"strongest {st['attacker']} acc {st['accuracy']:.3f} fid {st['fidelity']:.3f}")
                details[name] = {"benign": benign, "long_benign": long_benign, "timing": timings}
    compare_to_none(rows, sweep, budget)
    pngs = []
    if plot_dir is not None:
        from .plots import plots

        Path(plot_dir).mkdir(parents=True, exist_ok=True)
        pngs = plots(rows, Path(plot_dir))
    return {"created_unix": started, "wall_s": time.time() - started, "seeds": list(s.seeds), "budget": s.budget,
            "settings": s.as_dict(), "sweep_budgets": sweep, "victims": [v.name for v in victims],
            "victim": victims[0].name,
            "zoo": {"path": str(s.zoo_dir), "seed": manifest.zoo.seed, "front": [m.name for m in front]},
            "paper": psml_paper.DEFENSE.as_dict(), "rows": rows, "details": details,
            "valid_against_paper": [f"{r['config']} ({r['victim']})" for r in rows if r["paper_verdict"] == VALID],
            "plots": pngs, "timing_settings": TimingSettings().as_dict(), "knockoff": KnockoffSettings().as_dict(),
            "box_centre": asdict(BOX_CENTRE)}


def _row(name: str, victim: str, rank: int, benign: dict, long_benign: dict, fps: dict, ex: list[dict], best: dict,
         own: dict, swept: dict, timings: dict, timing_who: str, defenses: list[dict]) -> dict:
    """One (configuration, victim) row as measured; compare_to_none completes it once "none" is in."""
    st, timing = best["strongest"], timings[timing_who]
    return {"config": name, "victim": victim, "victim_rank": rank,
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
