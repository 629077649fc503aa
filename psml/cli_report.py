"""``psml report``: the whole reproduction in one command (psml/report/)."""

from __future__ import annotations

import sys
from pathlib import Path

from common.errors import PsmlError


def report(a) -> None:
    from .report import check_inputs, run_report, settings_from_args

    try:  # bad input: one line and exit 2, before any work starts
        s = settings_from_args(a)
        check_inputs(Path(a.zoo), Path(a.out), s)
    except (PsmlError, ValueError) as e:
        print(f"psml: error: {e}", file=sys.stderr)
        raise SystemExit(2)
    run_report(Path(a.zoo), Path(a.out), s, fresh=a.fresh, command="psml " + " ".join(sys.argv[1:]),
               defense=not a.no_defense)


def register(sub) -> None:
    p = sub.add_parser("report", help="run the whole reproduction and write report.md, PNGs and report.json")
    p.add_argument("--zoo", default="model_repository/default", help="a built zoo (psml zoo build)")
    p.add_argument("--out", default="results/report", help="folder for report.md, report.json, the PNGs and the cache")
    p.add_argument("--quick", action="store_true", help="small budgets and short runs (a smoke run, e.g. on the test zoo)")
    p.add_argument("--seeds", type=int, nargs="+", help="extraction and defense seeds (default 0 1 2)")
    p.add_argument("--budgets", nargs="+", help="extraction budgets: names, sample counts or pool fractions "
                                                "(default small medium large; on an encoder zoo small medium)")
    p.add_argument("--labels-only-budgets", nargs="*", help="budgets also run with top-1 labels only (default medium)")
    p.add_argument("--epochs", type=int, help="surrogate training epochs (default 40; on an encoder zoo the stolen "
                                              "encoder's, default 60)")
    p.add_argument("--defense-budget", help="the defense step's named budget: small, medium or large (default "
                                            "medium; an imported zoo with a smaller pool needs small)")
    p.add_argument("--fresh", action="store_true", help="ignore cached steps and run everything again")
    p.add_argument("--no-defense", action="store_true", help="skip the defense step (the longest after extraction)")
    p.set_defaults(func=report)
