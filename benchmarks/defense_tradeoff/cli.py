"""``python -m benchmarks.defense_tradeoff``: parses the command line into DefenseTradeoffSettings, calls run,
prints the table and writes the result file beside its plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attacks import psml_paper
from attacks.knockoff import BUDGETS, KnockoffSettings
from common.errors import ConfigError
from common.results import write_result
from common.tables import format_table

from .experiment import __doc__ as DESCRIPTION
from .experiment import run
from .settings import ATTACKERS, CONFIGS, QUICK, DefenseTradeoffSettings

COLUMNS = [("config", "defense"), ("victim", "victim"), ("goodput", "goodput"), ("useful_goodput", "useful goodput"),
           ("reject_rate", "rejected"), ("benign_p99_ms", "p99 ms"), ("benign_fp_rate", "benign FP"),
           ("strongest_attacker", "strongest attacker"), ("samples_sent", "samples sent"), ("answers", "answers kept"),
           ("accuracy", "acc"), ("d_accuracy", "d acc"), ("d_accuracy_ci95", "95% CI"), ("fidelity", "fid"),
           ("d_fidelity", "d fid"), ("d_fidelity_ci95", "95% CI"), ("timing_1", "timing m=1")]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.defense_tradeoff", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
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
    return ap


def settings_from_args(a: argparse.Namespace) -> DefenseTradeoffSettings:
    """``--quick``: the QUICK configurations (unless --configs names others), the first seed, the small budget."""
    return DefenseTradeoffSettings(
        zoo_dir=Path(a.zoo), configs=tuple(a.configs or (QUICK if a.quick else CONFIGS)), victims=tuple(a.victims),
        attackers=tuple(a.attackers), seeds=tuple(a.seeds[:1] if a.quick else a.seeds),
        budget="small" if a.quick else a.budget, sweep_budgets_samples=tuple(a.sweep_budgets or ()),
        benign_clients=a.benign_clients, benign_requests_per_client=a.benign_per_client, surrogate_epochs=a.epochs,
        router_seed=a.router_seed)


def summary(result: dict) -> str:
    """The table (one row per configuration and victim), the paper's figures and the rows that beat them."""
    rows, sweep, budget = result["rows"], result["sweep_budgets"], result["budget"]
    shown = [r | {k: "[{:+.3f}, {:+.3f}]".format(*r[k]) if r[k] else "-" for k in ("d_accuracy_ci95", "d_fidelity_ci95")}
             for r in rows]
    columns = [*COLUMNS, *([("reading", "cost multiplier")] if sweep else []), ("paper_verdict", "vs paper")]
    lines = [format_table(shown, columns),
             f"victims {', '.join(result['victims'])}; {budget} budget ({BUDGETS[budget]} samples sent, "
             f"every sample counted), seeds {result['seeds']}. PSML paper: {psml_paper.defense_points()}; "
             f"VALID (whole interval past it): {', '.join(result['valid_against_paper']) or 'none'}."]
    if sweep:
        lines.append(f"cost multiplier: the smallest of {sweep} samples at which the row's strongest attacker's mean "
                     f"fidelity comes within 1 point of the undefended one at {BUDGETS[budget]}, over {BUDGETS[budget]}")
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    out = Path(a.out)
    try:  # bad input: one line and exit 2 before any work
        result = run(settings_from_args(a), plot_dir=out.parent)
    except ConfigError as e:
        print(f"defense_tradeoff: error: {e}", file=sys.stderr)
        return 2
    print(summary(result))
    # the file's "settings" stay the command line as given (keys: the flags), as before the settings class
    write_result(out, "defense_tradeoff", result | {"settings": vars(a)}, created_unix=result["created_unix"])
    print(f"result: {out}; plots: {', '.join(result['plots'])}")
    return 0
