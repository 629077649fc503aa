"""The PSML paper's figures, defined once (attacks/psml_paper.py) and read by every verdict and claim against them."""

from attacks import psml_paper
from benchmarks import defense_over_builds, defense_tradeoff
from psml.cli_attack import extraction_table
from psml.report import claims

BEATS = {"goodput": 0.85, "d_accuracy_ci95": [-0.20, -0.12], "d_fidelity_ci95": [-0.10, -0.06]}


def defense_claim(row: dict) -> dict:
    """The report's defense claim line on the middle victim for one trade-off row."""
    r = row | {"config": claims.DEFENSE_CONFIG, "victim": "mid", "accuracy": 0.5, "d_accuracy": -0.16,
               "d_fidelity": -0.08, "useful_goodput": 0.7, "strongest_attacker": "box_centre", "paired_seeds": 3,
               "paper_verdict": defense_tradeoff.paper_verdict(row)}
    return claims._defense({"rows": [r], "victims_by_role": {"middle": "mid", "top": "top"}})[0]


def build(goodput: float, d_accuracy: float, d_fidelity: float) -> dict:
    """One zoo build's row for defense_over_builds: three seeds at the same paired differences."""
    return {"victim": "mid", "goodput": goodput,
            "per_seed": {str(k): {"accuracy": 0.8 + d_accuracy + k / 100, "fidelity": 0.9 + d_fidelity + k / 100,
                                  "none_accuracy": 0.8, "none_fidelity": 0.9} for k in range(3)}}


def test_the_published_figures_and_their_text():
    """Pins the figures and the claim text the report's tests compare: catches a figure mistyped (0.48 for
    0.048) or reformatted ("9.80", "0.098") in the one place every line is rendered from."""
    assert psml_paper.DEFENSE.as_dict() == {"d_accuracy": -0.098, "d_fidelity": -0.048, "min_goodput": 0.80}
    line = defense_claim(BEATS)
    assert line["claim"].startswith("the metric-noise defense cuts extraction by at least 9.8 accuracy / 4.8 "
                                    "fidelity points with benign goodput above 80% (PSML)")
    assert line["tolerance"] == "both paired 95% intervals past the paper's reductions, goodput >= 0.80"
    assert psml_paper.defense_points() == "-9.8 acc / -4.8 fid points at goodput >= 0.80"
    assert psml_paper.attack_claims() == {
        "fingerprinted_vs_explicit": "within 1% accuracy and fidelity (PSML, arXiv 2307.01292)",
        "fingerprinted_vs_naive": "up to +14.6% accuracy and +7.7% fidelity (PSML)"}
    by = {"fingerprinted": {0: {"accuracy": 0.9, "fidelity": 0.9}}, "naive": {0: {"accuracy": 0.8, "fidelity": 0.8}}}
    assert "PSML: up to +14.6 accuracy points" in claims._gain(by, "t")["claim"]
    assert "PSML: up to +7.7 fidelity points" in claims._gain(by, "t", "fidelity")["claim"]


def test_every_verdict_and_claim_against_the_paper_moves_with_its_one_definition(monkeypatch):
    """Changes the module's figures and checks that the trade-off benchmark's row verdict, the over-builds
    benchmark's pooled verdict, the benchmark's summary, the report's claim lines and the attack table all follow.
    Catches the wrong implementation this module replaced: a copy of the figures (PAPER in defense_tradeoff, the
    report's hard-coded "9.8 / 4.8 / +14.6 / +7.7", PSML_CLAIMS in attacks/experiment.py) or of the rule
    (defense_over_builds' own all_of), which would keep judging and printing the old figures."""
    builds = [build(0.85, -0.17, -0.08), build(0.9, -0.16, -0.08)]
    assert defense_tradeoff.paper_verdict(BEATS) == "VALID"
    assert defense_over_builds.pool(builds)["paper_verdict"] == "VALID"

    monkeypatch.setattr(psml_paper, "DEFENSE", psml_paper.DefenseFigures(d_accuracy=-0.25, d_fidelity=-0.15,
                                                                         min_goodput=0.90))
    monkeypatch.setattr(psml_paper, "NAIVE_GAIN", {"accuracy": 0.2, "fidelity": 0.1})
    monkeypatch.setattr(psml_paper, "FINGERPRINT_WITHIN", 0.02)
    assert defense_tradeoff.paper_verdict(BEATS) == "INVALID"  # goodput 0.85 < 0.90; intervals short of -0.25
    assert defense_tradeoff.paper_verdict(BEATS | {"goodput": 0.95}) == "INVALID"
    assert defense_over_builds.pool(builds)["paper_verdict"] == "INVALID"
    line = defense_claim(BEATS)
    assert "at least 25.0 accuracy / 15.0 fidelity points with benign goodput above 90%" in line["claim"]
    assert line["verdict"] == "INVALID" and line["tolerance"].endswith("goodput >= 0.90")
    summary = defense_tradeoff.summary({"rows": [], "sweep_budgets": [], "budget": "small", "victims": ["mid"],
                                        "seeds": [0], "valid_against_paper": []})
    assert "PSML paper: -25.0 acc / -15.0 fid points at goodput >= 0.90" in summary
    by = {"fingerprinted": {0: {"accuracy": 0.915, "fidelity": 0.915}},
          "explicit": {0: {"accuracy": 0.9, "fidelity": 0.9}}}
    within = claims._within(by, "t")
    assert within["claim"].startswith("fingerprinted extraction within 2% of explicit")
    assert within["verdict"] == "VALID"  # 1.5 points apart: not within the paper's 1%, within 2%
    assert "PSML: up to +20.0 accuracy points" in claims._gain(by | {"naive": by["explicit"]}, "t")["claim"]
    rows = [{"budget": "small", "setting": s, "seeds": 1, "accuracy": 0.9, "accuracy_std": 0.0, "fidelity": 0.9,
             "fidelity_std": 0.0} for s in ("fingerprinted", "explicit", "naive")]
    assert "up to +20.0% accuracy and +10.0% fidelity (PSML)" in extraction_table(rows)
