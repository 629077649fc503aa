"""The defense trade-off frontier: every defense configuration measured the same way, on one Triton, in one run,
each judged against the strongest attacker tried (what is measured: experiment.py's docstring, or ``--help``).

    from benchmarks.defense_tradeoff import DefenseTradeoffSettings, run
    result = run(DefenseTradeoffSettings(zoo_dir=..., configs=("metric_noise 0.02/0.1ms",), victims=("middle",)))

    python -m benchmarks.defense_tradeoff [--zoo model_repository/default] [--seeds 0 1 2] [--quick] ...

- settings.py: the configurations, the attacker set, DefenseTradeoffSettings and its checks against the zoo;
- phases.py: benign clients, equal-volume benign clients, the timing side channel, fingerprinting, detection;
- extraction.py: every attacker against one victim, and the budget sweep;
- scoring.py: the strongest attacker, paired differences to none, the verdict against the paper (pure);
- plots.py: the two PNGs; experiment.py: ``run(settings) -> result``; cli.py: ``main(argv)``, the table.
"""

from .cli import main, summary
from .experiment import run
from .scoring import paired_to_none, paper_verdict, pareto_frontier, per_seed, strongest
from .settings import ATTACKERS, CONFIGS, QUICK, DefenseTradeoffSettings, keys_for, resolve_victims

__all__ = ["ATTACKERS", "CONFIGS", "QUICK", "DefenseTradeoffSettings", "keys_for", "main", "paired_to_none",
           "paper_verdict", "pareto_frontier", "per_seed", "resolve_victims", "run", "strongest", "summary"]
