"""report.md from the steps' results and the claim lines."""

from __future__ import annotations

import json

from . import encoder
from .settings import StepRun

def _md_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, (list, tuple)):
            return ", ".join(cell(x) for x in v) or "-"
        return str(v).replace("|", "/")

    out = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(out)


def render(steps: dict[str, StepRun], lines: list[dict], meta: dict) -> str:
    zoo, fp = steps["zoo"].result, steps["fingerprint"].result
    md = [f"# psml report: zoo `{meta['zoo']}`", "",
          f"Created {meta['created_utc']} UTC by `{meta['command']}` in {meta['wall_s']:.0f} s "
          f"({', '.join(n + (' cached' if r.cached else f' {r.seconds:.0f} s') for n, r in steps.items())}). "
          f"Seeds {list(meta['settings']['seeds'])}. Every figure below is in `report.json`.", "",
          "## Claims", "", _md_table(lines, [("claim", "claim"), ("measured", "measured"), ("tolerance", "tolerance"),
                                              ("verdict", "verdict")]), "",
          "## The zoo", "", f"Data set {zoo['dataset']}; selection figure: {zoo['selection']}; front: "
          f"{', '.join(zoo['front'])}.", "",
          _md_table(zoo["rows"], [("name", "model"), ("params", "params"), ("accuracy", "accuracy")]
                    + ([("untrained", "untrained probe")] if "encoder_extraction" in steps else []) + [
                                  ("sel", "selection ms"), ("ci", "95% CI"), ("spread", "run spread ms"),
                                  ("pareto", "front")]), ""]
    v = zoo["validation"]
    if v.get("models"):
        md += ["Re-measured on this host (`psml zoo validate`):", "",
               _md_table(v["models"], [("model", "model"), ("manifest_ms", "manifest ms"), ("observed_ms", "observed ms"),
                                       ("drift", "drift"), ("verdict", "verdict")]), ""]
    if "accuracy_latency.png" in steps["zoo"].files:
        md += ["![accuracy vs latency](accuracy_latency.png)", ""]
    md += ["## Fingerprinting", "",
           _md_table([{"rank": r["rank"], "target": r["target"], "sq": r["staircase"]["queries"],
                       "sc": r["staircase"]["consistency"], "gq": r["grid_scan"]["queries"],
                       "gc": r["grid_scan"]["consistency"]} for r in fp["ranks"]],
                     [("rank", "rank"), ("target", "target (harness view)"), ("sq", "staircase queries"),
                      ("sc", "staircase consistency"), ("gq", "grid queries"), ("gc", "grid consistency")]),
           "", "![fingerprinting queries](fingerprint_queries.png)", ""]
    if "encoder_extraction" in steps:
        md += encoder.sections(steps, _md_table)
    else:
        md += _classifier_sections(steps)
    md += ["## Environment", "", f"- hardware: {json.dumps(meta['hardware'])}",
           f"- software: {json.dumps(meta['software'])}", f"- code version: {meta['code_version']}",
           f"- settings: {json.dumps(meta['settings'])}", ""]
    return "\n".join(md)


def _classifier_sections(steps: dict[str, StepRun]) -> list[str]:
    ex = steps["extraction"].result
    md = ["## Extraction", "", f"Victim {ex['victim']}; surrogate {ex['knockoff']['surrogate']}, "
           f"{ex['knockoff']['epochs']} epochs; budgets in samples: "
           f"{', '.join(f'{k} {v}' for k, v in ex['budget_samples'].items())}.", "",
           _md_table([r | {"outputs": "labels" if r["labels_only"] else "probabilities"} for r in ex["summary"]],
                     [("budget", "budget"), ("outputs", "outputs"), ("setting", "setting"), ("seeds", "seeds"),
                      ("accuracy", "accuracy"), ("accuracy_std", "sd"), ("accuracy_ci95", "95% CI"),
                      ("fidelity", "fidelity"), ("fidelity_std", "sd"), ("fidelity_ci95", "95% CI"),
                      ("failed_seeds", "failed seeds"), ("retried_seeds", "retried seeds")]),
           "", "![extraction](extraction.png)", ""]
    if "defense" in steps:
        d = steps["defense"].result
        md += ["## Defense", "", f"Budget {d['budget']} (every sample sent counted); victims "
               f"{', '.join(d['victims'])} (middle of the front, the paper's setting, and top); each row's attacker is "
               "the strongest of those psml fields against that victim, its differences to the undefended router "
               "paired over seeds with 95% intervals (benchmarks/defense_tradeoff/).", "",
               _md_table(d["rows"], [("config", "defense"), ("victim", "victim"), ("goodput", "benign goodput"),
                                     ("useful_goodput", "useful goodput"), ("benign_p99_ms", "p99 ms"),
                                     ("benign_fp_rate", "benign keys flagged"),
                                     ("strongest_attacker", "strongest attacker"), ("samples_sent", "samples sent"),
                                     ("accuracy", "accuracy"), ("fidelity", "fidelity"), ("d_accuracy", "d acc"),
                                     ("d_accuracy_ci95", "95% CI"), ("d_fidelity", "d fid"),
                                     ("d_fidelity_ci95", "95% CI"), ("paper_verdict", "vs paper"),
                                     ("timing_1", "timing id. m=1")]),
               "", "![defense trade-off](defense_tradeoff.png)", ""]
    return md


