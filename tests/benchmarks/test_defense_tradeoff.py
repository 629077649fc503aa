"""The trade-off benchmark end to end on the test zoo (two configurations, one seed, tiny surrogates)."""

import json

import pytest

from benchmarks import defense_tradeoff


@pytest.mark.timeout(1200)  # end to end through real servers: minutes, not a hang
def test_tradeoff_judges_each_defense_by_its_strongest_attacker_for_every_victim(zoo_dir, manifest, tmp_path):
    """Catches a figure taken from one fixed attacker instead of the strongest, a labels-only surrogate never
    tried against output perturbation, an attacker that sends more than the budget (free resends), the new
    attackers not fielded, and a result file or plot not written. The middle victim (the paper's setting) keeps
    it to one victim's attacks; which victims "all" means is tested on its own below."""
    from attacks.experiment import front_by_accuracy
    from attacks.knockoff import BUDGETS

    out = tmp_path / "tradeoff.json"
    rc = defense_tradeoff.main(["--zoo", str(zoo_dir), "--configs", "labels_only", "--seeds", "0", "--budget", "small",
                                "--epochs", "3", "--benign-clients", "4", "--benign-per-client", "5", "--victims", "middle",
                                "--sweep-budgets", "100", "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    full = front_by_accuracy(manifest)
    front = [full[len(full) // 2].name]
    assert [(r["config"], r["victim"]) for r in result["rows"]] == [(c, v) for c in ("none", "labels_only") for v in front]
    for row in result["rows"]:
        d = result["details"][f"{row['config']} | {row['victim']}"]
        by = d["by_attacker"]
        assert row["fidelity"] == max(b["fidelity"] for b in by)
        assert row["strongest_attacker"] in {b["attacker"] for b in by}
        assert {"box_centre", "signature_filter", "staircase"} <= {b["attacker"] for b in by}
        assert ("top_accuracy" in {b["attacker"] for b in by}) == (row["victim_rank"] == 1)  # rank 1 only
        assert all(e["samples_sent"] <= BUDGETS["small"] for e in d["extraction"])
        assert 0 < row["useful_goodput"] <= row["goodput"] + 1e-9 or row["goodput"] == 0
    tried = {b["attacker"] for b in result["details"][f"labels_only | {front[0]}"]["by_attacker"]}
    assert "staircase labels" in tried and "staircase labels" not in {
        b["attacker"] for b in result["details"][f"none | {front[0]}"]["by_attacker"]}
    # the sweep: the reference budget's figure is the row's own, the smaller one from the same transcripts;
    # undefended, the attack reaches its own figure by the reference budget (a multiplier of at most 1)
    assert result["sweep_budgets"] == [100, 250]
    for row in result["rows"]:
        assert row["fidelity_by_budget"]["250"] == pytest.approx(row["fidelity"])
        assert row["fidelity_by_budget"]["100"] is not None
        assert row["reading"].endswith("not reached by 250") or row["cost_multiplier"] in (0.4, 1.0)
    for none in (r for r in result["rows"] if r["config"] == "none"):
        assert none["cost_multiplier"] in (0.4, 1.0)
        assert none["d_fidelity"] == 0 and 0 < none["goodput"] <= 1 and none["benign_p99_ms"] > 0
        assert none["paper_verdict"] != "VALID"  # an undefended router never beats the paper (1 seed: no interval)
    timing = result["details"]["none"]["timing"]
    assert timing["timing"]["accuracy_by_samples"]["30"] >= 0.9  # undefended: timing tells, with either stream
    assert timing["timing-natural"]["accuracy_by_samples"]["30"] >= 0.9
    assert all((tmp_path / name).stat().st_size > 0 for name in ("defense_tradeoff.png", "defense_latency_cost.png"))
    assert result["software"] and result["seeds"] == [0] and result["victims"] == front


def test_bad_victims_and_budgets_exit_2_before_any_work(zoo_dir, tmp_path, capsys):
    """Catches a typo'd victim that silently attacks nothing (or the top model), a typo'd attacker left out, and
    a sweep budget the attacker pool cannot pay for (found only after every other row had run)."""
    assert defense_tradeoff.main(["--zoo", str(zoo_dir), "--victims", "no_such_model", "--out",
                                  str(tmp_path / "x.json")]) == 2
    assert "not on this zoo's front" in capsys.readouterr().err
    assert defense_tradeoff.main(["--zoo", str(zoo_dir), "--attackers", "staircase", "telepathy", "--out",
                                  str(tmp_path / "x.json")]) == 2
    assert "unknown telepathy" in capsys.readouterr().err
    assert defense_tradeoff.main(["--zoo", str(zoo_dir), "--sweep-budgets", "250", "1000000", "--out",
                                  str(tmp_path / "x.json")]) == 2
    assert "--sweep-budgets" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_victims_default_to_the_whole_front_and_name_middle_and_top():
    """Catches a default that attacks only the most accurate model, and middle/top mixed up."""
    from types import SimpleNamespace as M

    front = [M(name="a"), M(name="b"), M(name="c")]
    assert defense_tradeoff.resolve_victims(front, ["all"]) == front
    assert defense_tradeoff.resolve_victims(front, ["middle", "top", "b"]) == [front[1], front[0]]
    assert defense_tradeoff.resolve_victims(front[:2], ["middle"]) == [front[1]]  # an even front: the faster
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="not on this zoo's front"):
        defense_tradeoff.resolve_victims(front, ["d"])


def test_paired_differences_pair_by_seed():
    """Catches unpaired means (seed 2's defended figure against seed 1's undefended one) and an interval from
    one seed."""
    d = defense_tradeoff.paired_to_none({0: (0.5, 0.6), 1: (0.4, 0.5), 2: (0.3, 0.2)},
                                        {0: (0.6, 0.7), 1: (0.6, 0.7), 7: (0.9, 0.9)})
    assert d["paired_seeds"] == 2 and abs(d["d_fidelity"] - (-0.15)) < 1e-12 and d["d_fidelity_ci95"][0] < -0.15
    one = defense_tradeoff.paired_to_none({0: (0.5, 0.6)}, {0: (0.6, 0.7)})
    assert one["paired_seeds"] == 1 and one["d_fidelity_ci95"] is None
