"""The benchmarks' settings objects: bad values raise before any server starts, and the result files keep the
settings under the names they always had (older result files and the docs read them)."""

import pytest

from benchmarks.defense_at_load import DefenseAtLoadSettings
from benchmarks.defense_over_builds import DefenseOverBuildsSettings
from benchmarks.defense_vs_none import DefenseVsNoneSettings, against_none
from benchmarks.deployment_attacks import DeploymentAttacksSettings
from benchmarks.deployment_costs import DeploymentCostsSettings
from benchmarks.locust_saturation import LocustSaturationSettings
from benchmarks.router_vs_direct import RouterVsDirectSettings
from benchmarks.state_store_locust import StateStoreLocustSettings
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


@pytest.mark.parametrize("make", [
    lambda: DefenseOverBuildsSettings(()), lambda: DefenseOverBuildsSettings(("r.json",), config=""),
    lambda: DefenseOverBuildsSettings(("r.json",), victim="")])
def test_defense_over_builds_settings(make):
    """Catches settings that pool nothing (no result file: a verdict over zero builds, mean_ci95 of an empty list)
    and an as_dict that writes the field names (``result_files``) where the file has always had ``inputs``, or
    Paths where it had the paths as given."""
    with pytest.raises(ConfigError):
        make()
    d = DefenseOverBuildsSettings(("a.json", "b.json"), victim="top").as_dict()
    assert d == {"config": "metric_noise 0.02/0.1ms", "victim": "top", "inputs": ["a.json", "b.json"]}


@pytest.mark.parametrize("make", [
    lambda: StateStoreLocustSettings(duration_s=0.0), lambda: StateStoreLocustSettings(workers=0),
    lambda: StateStoreLocustSettings(budget_samples=199), lambda: StateStoreLocustSettings(benign_keys=0),
    lambda: StateStoreLocustSettings(attack_batch_samples=0), lambda: StateStoreLocustSettings(prada_action="throttle")])
def test_state_store_locust_settings(make):
    """Catches a budget below PRADA's first test (the synthetic key would be refused for its budget before PRADA
    could flag it: the flag claim UNDETERMINED after the whole stack ran), bad load settings found only when
    Locust starts, and an as_dict that writes ``attack_batch_samples`` / ``zoo_dir`` where the file has always
    had the flags' names (older result files and docs/router.md read them)."""
    with pytest.raises(ConfigError):
        make()
    d = StateStoreLocustSettings(attack_batch_samples=20).as_dict()
    assert list(d) == ["zoo", "duration_s", "budget_samples", "benign_keys", "attacker_users", "attack_batch",
                       "synthetic_batch", "prada_delta", "workers", "seed"] and d["attack_batch"] == 20
    assert StateStoreLocustSettings(zoo_dir="z", synthetic_batch_samples=5).load().synthetic_batch == 5
    assert StateStoreLocustSettings(prada_action="log").as_dict()["prada_action"] == "log"  # recorded when not block


@pytest.mark.parametrize("make", [
    lambda: LocustSaturationSettings(users=()), lambda: LocustSaturationSettings(users=(4, 0)),
    lambda: LocustSaturationSettings(step_s=0.0), lambda: LocustSaturationSettings(processes=-1)])
def test_locust_saturation_settings(make):
    """Catches a step of 0 users (Locust would send nothing and the step's statistics be missing, after Triton and
    the router started) or of no time, and an as_dict with the field names (``zoo_dir``) or a tuple of users
    where the file has always had ``zoo`` and a list."""
    with pytest.raises(ConfigError):
        make()
    d = LocustSaturationSettings(users=(2, 8)).as_dict()
    assert d == {"zoo": "model_repository/default", "users": [2, 8], "step_s": 15.0, "processes": 0, "seed": 0}


def test_state_store_cost_settings_take_the_budget_lease_size():
    """Catches a negative lease size found only once both routers started, and a result file whose settings lose
    the lease size the store router ran with (or gain the key when the router's default was used: older files)."""
    from benchmarks.state_store_cost import StateStoreCostSettings

    with pytest.raises(ConfigError):
        StateStoreCostSettings(budget_lease_samples=-1)
    assert "budget_lease_samples" not in StateStoreCostSettings().as_dict()
    assert StateStoreCostSettings(budget_lease_samples=0).as_dict()["budget_lease_samples"] == 0


def test_state_store_cost_settings_reach_the_store_router():
    """The store router's commit time, slot hold and workers are checked before any server starts, reach its
    settings under the router's names, and are recorded in the result file. Catches an option parsed but never
    passed to the router (the figures would be the defaults' under another name)."""
    from benchmarks.state_store_cost import StateStoreCostSettings

    for bad in ({"prada_commit_ms": -1}, {"slot_hold_ms": 2000}, {"store_workers": 0}):
        with pytest.raises(ConfigError):
            StateStoreCostSettings(**bad)
    s = StateStoreCostSettings(prada_commit_ms=0, slot_hold_ms=0, store_workers=2, budget_lease_samples=8)
    assert s.store_router() == {"state_store_budget_lease_samples": 8, "state_store_prada_commit_ms": 0,
                                "state_store_slot_hold_ms": 0, "workers": 2}
    assert {"prada_commit_ms": 0, "slot_hold_ms": 0, "store_workers": 2}.items() <= s.as_dict().items()
    assert StateStoreCostSettings().store_router() == {}


def test_state_store_cost_compares_a_run_too_short_for_the_cpu_clock():
    """A short run can read 0 CPU seconds for the in-process router from /proc (10 ms ticks): the comparison must
    still come out (its CPU ratio None), not raise ZeroDivisionError after both routers ran (the smoke test hit
    it once in a full suite)."""
    from benchmarks.state_store_cost import compare

    cell = {"concurrency": 2, "router_cpu_us": 0.0, "store_cpu_us": 0.0, "p50_ms": 0.3, "throughput_per_s": 100.0,
            "errors": 0}
    row = compare({"in-process": cell, "store": cell | {"router_cpu_us": 500.0, "p50_ms": 0.4}})
    assert row["cpu_ratio"] is None and row["added_cpu_us"] == 500.0 and abs(row["p50_ratio"] - 4 / 3) < 1e-9
