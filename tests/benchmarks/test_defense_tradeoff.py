"""The trade-off benchmark end to end on the test zoo (two configurations, one seed, tiny surrogates)."""

import json

import pytest

from benchmarks import defense_tradeoff


@pytest.mark.timeout(900)  # end to end through real servers: minutes, not a hang
def test_tradeoff_judges_each_defense_by_its_strongest_attacker(zoo_dir, tmp_path):
    """Catches a figure taken from one fixed attacker instead of the strongest, a labels-only surrogate never
    tried against output perturbation, and a result file or plot that is not written."""
    out = tmp_path / "tradeoff.json"
    rc = defense_tradeoff.main(["--zoo", str(zoo_dir), "--configs", "labels_only", "--seeds", "0", "--budget", "small",
                                "--epochs", "3", "--benign-clients", "4", "--benign-per-client", "5", "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert [r["config"] for r in result["rows"]] == ["none", "labels_only"]
    for row in result["rows"]:
        by = result["details"][row["config"]]["by_attacker"]
        assert row["fidelity"] == max(b["fidelity"] for b in by)
        assert row["strongest_attacker"] in {b["attacker"] for b in by}
    tried = {b["attacker"] for b in result["details"]["labels_only"]["by_attacker"]}
    assert "top_accuracy labels" in tried and "top_accuracy labels" not in {
        b["attacker"] for b in result["details"]["none"]["by_attacker"]}
    none = result["rows"][0]
    assert none["d_fidelity"] == 0 and 0 < none["goodput"] <= 1 and none["benign_p99_ms"] > 0
    timing = result["details"]["none"]["timing"]
    assert timing["timing"]["accuracy_by_samples"]["30"] >= 0.9  # undefended: timing tells, with either stream
    assert timing["timing-natural"]["accuracy_by_samples"]["30"] >= 0.9
    assert none["timing_1"] == max(t["accuracy_by_samples"]["1"] for t in timing.values())
    assert all((tmp_path / name).stat().st_size > 0 for name in ("defense_tradeoff.png", "defense_latency_cost.png"))
    assert result["software"] and result["seeds"] == [0]
