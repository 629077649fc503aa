"""The benchmarks' settings objects: bad values raise before any server starts, and the result files keep the
settings under the names they always had (older result files and the docs read them)."""

import pytest

from benchmarks.defense_at_load import DefenseAtLoadSettings
from benchmarks.defense_vs_none import DefenseVsNoneSettings, against_none
from benchmarks.deployment_attacks import DeploymentAttacksSettings
from benchmarks.deployment_costs import DeploymentCostsSettings
from benchmarks.router_vs_direct import RouterVsDirectSettings
from common.errors import ConfigError


@pytest.mark.parametrize("make", [
    lambda: RouterVsDirectSettings(batch_sizes=()), lambda: RouterVsDirectSettings(concurrencies=(0,)),
    lambda: RouterVsDirectSettings(formats=("xml",)), lambda: RouterVsDirectSettings(rounds=0),
    lambda: DefenseVsNoneSettings(budget="huge"), lambda: DefenseVsNoneSettings(seeds=()),
    lambda: DefenseVsNoneSettings(votes=0), lambda: DeploymentCostsSettings(batch_sizes=(0,)),
    lambda: DeploymentCostsSettings(requests=0), lambda: DeploymentAttacksSettings(oracle_requests=0),
    lambda: DefenseAtLoadSettings(configs=("no such defense",)), lambda: DefenseAtLoadSettings(trial_s=0.0)])
def test_bad_settings_raise(make):
    """Catches settings accepted silently (an empty sweep would write an empty table; a zero-round cell would
    divide by zero after Triton started)."""
    with pytest.raises(ConfigError):
        make()


def test_settings_keep_the_result_file_s_names():
    """Catches fields renamed into the result file (``concurrencies`` for ``concurrency``, ``overhead`` for
    ``no_overhead`` with its meaning turned around)."""
    d = RouterVsDirectSettings(overhead=False).as_dict()
    assert list(d) == ["zoo", "model", "batch_sizes", "concurrency", "workers", "formats", "requests_per_round",
                       "rounds", "seed", "no_overhead"] and d["no_overhead"] is True
    assert list(DefenseVsNoneSettings().as_dict()) == ["zoo", "benign_requests", "budget", "seeds", "router_seed",
                                                       "votes", "accuracy_backoff", "latency_backoff_ms"]
    assert list(DeploymentCostsSettings().as_dict()) == ["zoo", "batch_sizes", "requests", "seed"]
    assert list(DeploymentAttacksSettings().as_dict()) == ["zoo", "batch_size", "requests", "oracle_requests", "seed"]


def test_against_none_pairs_each_row_with_none_for_the_same_attacker():
    """Catches differences taken against the other attacker's row, or a failed extraction reported as a
    difference (it must be None)."""
    rows = [{"defense": "none", "attacker": "plain", "goodput": 0.8, "accuracy": 0.9, "fidelity": 0.95},
            {"defense": "none", "attacker": "adaptive", "goodput": 0.8, "accuracy": 0.7, "fidelity": 0.75},
            {"defense": "noise", "attacker": "adaptive", "goodput": 0.4, "accuracy": 0.6, "fidelity": 0.7},
            {"defense": "noise", "attacker": "plain", "goodput": 0.4, "accuracy": None, "fidelity": None}]
    against_none(rows)
    assert rows[2]["goodput_ratio"] == 0.5 and rows[2]["d_accuracy"] == pytest.approx(-0.1)
    assert rows[2]["d_fidelity"] == pytest.approx(-0.05) and rows[3]["d_accuracy"] is None


def test_defense_at_load_searches_none_first_and_records_that_order():
    """Catches a search that starts with a defense (every later search starts at the first one's rate, so the
    baseline must come first) or a result whose settings list another order than the one searched."""
    s = DefenseAtLoadSettings(configs=("PRADA (log)", "none"))
    assert s.configs_run() == ["none", "PRADA (log)"] and s.as_dict()["configs"] == ["none", "PRADA (log)"]
    assert DefenseAtLoadSettings(configs=("PRADA (log)",)).configs_run() == ["PRADA (log)"]
    assert list(s.as_dict())[:6] == ["zoo", "p99_ms", "min_goodput", "trial_s", "min_requests", "start_rate"]
