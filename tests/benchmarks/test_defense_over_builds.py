"""Pooling one defense claim over zoo builds (pure: synthetic defense_tradeoff rows)."""

import json

from benchmarks import defense_over_builds as dob


def row(victim, goodput, pairs):
    """pairs: per seed (d_accuracy, d_fidelity) against an undefended 0.8 / 0.9."""
    return {"config": "c", "victim": victim, "goodput": goodput,
            "per_seed": {str(i): {"accuracy": 0.8 + da, "fidelity": 0.9 + df, "none_accuracy": 0.8,
                                  "none_fidelity": 0.9} for i, (da, df) in enumerate(pairs)}}


def test_pooled_over_builds_and_judged_by_the_paper_rule():
    """Two builds that agree on large reductions: VALID from the pooled interval over 6 pairs. Catches pooling
    unpaired means (the none figures would cancel differently) and an interval over builds' means (n=2)."""
    a = row("m1", 0.9, [(-0.20, -0.10), (-0.22, -0.12), (-0.19, -0.11)])
    b = row("m2", 0.85, [(-0.21, -0.09), (-0.18, -0.13), (-0.20, -0.10)])
    p = dob.pool([a, b])
    assert p["pairs"] == 6 and abs(p["d_fidelity"] - (-0.108333)) < 1e-5 and p["d_fidelity_ci95"][1] < -0.048
    assert p["paper_verdict"] == "VALID" and not p["builds_disagree"]
    low_goodput = dob.pool([a, b | {"goodput": 0.7}])
    assert low_goodput["paper_verdict"] == "INVALID"  # the paper's claim holds only at goodput >= 0.80


def test_builds_that_disagree_are_flagged_and_undetermined():
    """One build's defense takes 50 fidelity points, the other's 10: the pooled interval clears the paper,
    yet the build, not the defense, decides the figure. Catches a pooled verdict that hides it."""
    a = row("m1", 0.9, [(-0.50, -0.50), (-0.51, -0.51), (-0.49, -0.49)])
    b = row("m2", 0.9, [(-0.30, -0.10), (-0.31, -0.101), (-0.29, -0.099)])
    p = dob.pool([a, b])
    assert p["d_fidelity_ci95"][1] < -0.048 and p["d_accuracy_ci95"][1] < -0.098  # pooled alone: VALID
    assert p["builds_disagree"] and p["paper_verdict"] == "UNDETERMINED"


def test_missing_rows_and_files_exit_2(tmp_path, capsys):
    result = {"zoo": {"path": "z", "seed": 0, "front": ["a", "b", "c"]}, "seeds": [0], "rows": [row("b", 0.9, [(0, 0)])]}
    (tmp_path / "r.json").write_text(json.dumps(result))
    assert dob.main([str(tmp_path / "r.json"), "--config", "nope", "--out", str(tmp_path / "o.json")]) == 2
    assert "has no row for 'nope'" in capsys.readouterr().err
    assert dob.main([str(tmp_path / "absent.json"), "--out", str(tmp_path / "o.json")]) == 2
    assert dob.main([str(tmp_path / "r.json"), "--config", "c", "--out", str(tmp_path / "o.json")]) == 0
    assert json.loads((tmp_path / "o.json").read_text())["pairs"] == 1
