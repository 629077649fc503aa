"""The report's steps, each a function of its folder that writes its files there and returns its result."""

from __future__ import annotations

import json
from pathlib import Path

from common.errors import ConfigError

from .plots import extraction_plot, fingerprint_plot
from .settings import DEFENSE_CONFIG, REPORT_ATTACKERS, ReportSettings

def zoo_step(zoo_dir: Path, s: ReportSettings, log):
    def run(folder: Path) -> dict:
        from zoo.manifest import load_manifest

        from zoo.table import zoo_rows
        from ..zoo_validation import run_validation

        manifest = load_manifest(zoo_dir)
        try:
            valid = run_validation(zoo_dir, concurrency=tuple(s.validate_concurrency), duration_s=s.validate_duration_s,
                                   out_dir=folder, log=lambda *_: None)
            report = json.loads((folder / "validate.json").read_text())["report"]
            models = [{k: r[k] for k in ("model", "accuracy", "manifest_ms", "observed_ms", "drift")}
                      | {"verdict": "VALID" if r["valid"] else "INVALID"} for r in report["models"]]
            validation = {"valid": valid, "models": models, "front": report["front"], "tolerance": report["tolerance"]}
        except ConfigError as e:  # e.g. a zoo whose selection path needs a router URL: the report says so
            validation = {"valid": None, "error": str(e)}
        (folder / "validate.json").unlink(missing_ok=True)  # its figures are in this step's result
        (folder / "latency_vs_concurrency.png").unlink(missing_ok=True)
        return {"rows": zoo_rows(manifest), "front": [m.name for m in manifest.pareto_models()],
                "selection": manifest.profile.selection_describe(), "front_check": manifest.profile.front_check,
                "validation": validation, "dataset": manifest.zoo.dataset.name}
    return run


def fingerprint_step(zoo_dir: Path, manifest, data, s: ReportSettings, log):
    def run(folder: Path) -> dict:
        from attacks.experiment import front_by_accuracy

        from attacks.campaigns import fingerprint_and_score
        from stack.loopback import router_for, triton_for

        ranks = []
        with triton_for(zoo_dir, folder) as triton, router_for(zoo_dir, folder, triton) as router:
            for k in range(1, len(front_by_accuracy(manifest)) + 1):
                out = fingerprint_and_score(router, manifest, data, ["staircase", "grid_scan"], k,
                                            s.consistency_queries, s.grid_size, s.grid_repeats)
                ranks.append({"rank": k, "target": out["target"]} | {
                    m: {"queries": r["queries"], "spec": r["spec"], "consistency": r["consistency"]["consistency"]}
                    for m, r in out["results"].items()})
                log(f"    rank {k} ({out['target']}): staircase {ranks[-1]['staircase']['queries']} queries, "
                    f"consistency {ranks[-1]['staircase']['consistency']:.2f}")
        _clean(folder)
        fingerprint_plot(ranks, folder / "fingerprint_queries.png")
        return {"ranks": ranks}
    return run


def extraction_step(zoo_dir: Path, manifest, data, s: ReportSettings, log):
    def run(folder: Path) -> dict:
        from tqdm import tqdm

        from attacks.knockoff import KnockoffSettings

        from attacks.campaigns import extract_and_score
        from stack.loopback import router_for, triton_for

        total = (len(s.budgets) + len(s.labels_only_budgets)) * len(s.seeds) * 3
        base = KnockoffSettings(surrogate=s.surrogate, epochs=s.surrogate_epochs)
        with triton_for(zoo_dir, folder) as triton, router_for(zoo_dir, folder, triton) as router, \
                tqdm(total=total, desc="    extraction runs", unit="run", leave=False) as bar:
            out = extract_and_score(zoo_dir, manifest, data, triton, router, list(s.budgets), list(s.seeds),
                                    "attacker_pool", base, log=lambda m: bar.write(m) if "failed" in m else None,
                                    labels_only_budgets=list(s.labels_only_budgets), progress=bar.update)
        _clean(folder)
        extraction_plot(out["summary"], folder / "extraction.png")
        return out | {"knockoff": base.as_dict()}
    return run


def defense_step(zoo_dir: Path, s: ReportSettings, log):
    def run(folder: Path) -> dict:
        from benchmarks.defense_tradeoff import DefenseTradeoffSettings, summary
        from benchmarks.defense_tradeoff import run as run_tradeoff

        # two victims within the report's 15 minutes: the paper's corner attacker and the strongest measured
        # against metric noise (box_centre); the whole attacker set is the benchmark's (README: defense_tradeoff)
        settings = DefenseTradeoffSettings(
            zoo_dir=zoo_dir, configs=(DEFENSE_CONFIG,), victims=("middle", "top"), attackers=REPORT_ATTACKERS,
            seeds=tuple(s.seeds), budget=s.defense_budget, surrogate_epochs=s.defense_epochs,
            benign_clients=s.benign_clients, benign_requests_per_client=s.benign_per_client)
        result = run_tradeoff(settings, plot_dir=folder, log=log)
        log(summary(result))
        victims = result["victims"]  # [middle, top], one name when the front's middle is its top
        picked = {"rows": result["rows"], "victims": victims, "budget": result["budget"],
                  "victims_by_role": {"middle": victims[0], "top": victims[-1]},
                  "by_attacker": {k: v["by_attacker"] for k, v in result["details"].items() if "by_attacker" in v},
                  "paper": result["paper"]}
        # plain JSON values (lists, string keys), as a cached run reads them back: fresh and cached render alike
        return json.loads(json.dumps(picked))
    return run


def _clean(folder: Path) -> None:
    """Logs, settings and audit logs of the step's servers are not part of the report."""
    for p in folder.iterdir():
        if p.is_file() and p.suffix != ".png":
            p.unlink()


