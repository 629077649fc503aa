"""The encoder report's claim lines from synthetic step results: each verdict's boundary, and the figures it
must not use (budgets above 1/5 of the training set, failed seeds, seeds that do not separate two losses)."""

from types import SimpleNamespace

import pytest

from benchmarks.encoder_defenses import rows_from
from common.stats import seed_summary
from psml.report import encoder as enc


def _extraction(acc: dict, budgets=(("small", 250), ("large", 1500)), victim=0.95, train=6000, failed=()):
    """acc[(budget, loss, setting)] = per-seed accuracies."""
    runs = []
    for (budget, loss, setting), values in acc.items():
        samples = dict(budgets)[budget]
        for seed, a in enumerate(values):
            runs.append({"budget": budget, "budget_samples": samples, "seed": seed, "loss": loss,
                         "setting": setting, "failed": (budget, loss, setting, seed) in failed, "accuracy": a,
                         "agreement": a, "accuracy_ratio": a / victim, "queries_over_training_set": samples / train,
                         "untrained_accuracy": 0.7})
    summary = []
    for key in dict.fromkeys((r["budget"], r["loss"], r["setting"]) for r in runs):
        ok = [r for r in runs if (r["budget"], r["loss"], r["setting"]) == key and not r["failed"]]
        row = {"budget": key[0], "loss": key[1], "setting": key[2], "seeds": len(ok)}
        for m in ("accuracy", "accuracy_ratio", "queries_over_training_set", "untrained_accuracy"):
            mean, _, ci = seed_summary([r[m] for r in ok])
            row |= {m: mean, f"{m}_ci95": list(ci) if ci else None}
        summary.append(row)
    return {"runs": runs, "summary": summary, "victim_probe_accuracy": victim, "victim_training_set": train}


def _steps(ex, defense=None):
    steps = {"encoder_extraction": SimpleNamespace(result=ex)}
    if defense is not None:
        steps["encoder_defense"] = SimpleNamespace(result=defense)
    return steps


def test_ratio_claim_uses_only_budgets_below_a_fifth_of_the_training_set():
    """The large budget (1/4 of the training set) reaches the victim; the small one does not. Catches a claim
    line that takes the best budget whatever its size, and a threshold applied to the wrong setting."""
    ex = _extraction({("small", "mse", "fingerprinted"): [0.80, 0.82], ("small", "mse", "naive"): [0.94, 0.95],
                      ("large", "mse", "fingerprinted"): [0.94, 0.95]})
    line = enc._ratio_claim(ex)
    assert line["verdict"] == "INVALID" and "small budget" in line["measured"]
    ex = _extraction({("small", "mse", "fingerprinted"): [0.86, 0.87], ("small", "infonce", "fingerprinted"): [0.87, 0.86]})
    assert enc._ratio_claim(ex)["verdict"] == "VALID"  # 0.865 / 0.95 = 91%: the best loss counts


def test_best_loss_needs_seeds_that_separate_it_from_mse():
    """Catches a best-loss verdict from means alone: overlapping seeds leave it UNDETERMINED; a consistent
    contrastive lead is VALID; MSE consistently ahead is INVALID; a failed seed is left out, not averaged."""
    def line(infonce, mse, failed=()):
        lines = enc._best_loss_claims(_extraction({("small", "infonce", "fingerprinted"): infonce,
                                                   ("small", "mse", "fingerprinted"): mse,
                                                   ("large", "infonce", "fingerprinted"): [0.1, 0.1, 0.1],
                                                   ("large", "mse", "fingerprinted"): [0.9, 0.9, 0.9]},
                                                  failed=failed))
        assert len(lines) == 1 and "(small budget)" in lines[0]["claim"]  # large (1/4 of training) is left out
        return lines[0]
    assert line([0.90, 0.80, 0.85], [0.85, 0.86, 0.84])["verdict"] == "UNDETERMINED"
    assert line([0.90, 0.91, 0.92], [0.85, 0.86, 0.85])["verdict"] == "VALID"
    assert line([0.80, 0.81, 0.80], [0.85, 0.86, 0.85])["verdict"] == "INVALID"
    # seed 2's InfoNCE run failed (its 0.0 would flip the verdict if it were averaged in)
    assert line([0.90, 0.91, 0.0], [0.85, 0.86, 0.85],
                failed={("small", "infonce", "fingerprinted", 2)})["verdict"] == "VALID"


def test_within_claim_compares_fingerprinted_with_explicit_per_loss():
    ex = _extraction({("small", "mse", "fingerprinted"): [0.90, 0.91], ("small", "mse", "explicit"): [0.90, 0.91],
                      ("small", "softnn", "fingerprinted"): [0.80, 0.81], ("small", "softnn", "explicit"): [0.90, 0.91]})
    verdicts = {l["claim"]: l["verdict"] for l in enc._within_claims(ex)}
    assert verdicts == {"fingerprinted encoder extraction within 1% of explicit (small budget, mse)": "VALID",
                        "fingerprinted encoder extraction within 1% of explicit (small budget, softnn)": "INVALID"}


def _defense(per_config: dict):
    """per_config[name] = (narrow, broad, stolen) per seed, two seeds."""
    results = []
    for name, (narrow, broad, stolen) in per_config.items():
        results.append({"config": name, "benign_latency_ms": {"p50_ms": 1.0, "p99_ms": 2.0},
                        "b4b_final_sigma": {"attacker": 0.5, "narrow": 0.1} if name.startswith("b4b") else {},
                        "per_seed": [{"seed": s, "narrow": narrow[s], "broad": broad[s], "attacker_accuracy": stolen[s],
                                      "attacker_agreement": stolen[s], "attacker_cosine": 0.9,
                                      "untrained_accuracy": 0.7} for s in range(2)]})
    return {"rows": rows_from(results)}


def test_defense_rows_are_paired_differences_from_none():
    """Catches differences taken against the wrong configuration, with the wrong sign, or unpaired."""
    d = _defense({"none": ([0.9, 0.8], [0.9, 0.9], [0.95, 0.93]),
                  "embedding_noise 1.0": ([0.8, 0.6], [0.7, 0.7], [0.94, 0.92])})
    row = next(r for r in d["rows"] if r["config"] == "embedding_noise 1.0")
    assert row["d_narrow"] == pytest.approx(-0.15) and row["d_broad"] == pytest.approx(-0.2)
    assert row["d_attacker_accuracy"] == pytest.approx(-0.01)
    assert row["d_narrow_ci95"][0] < -0.15 < row["d_narrow_ci95"][1]


def test_defense_claims_judge_noise_by_benign_cost_and_b4b_by_both_sides():
    """Noise that hurts benign users more than the attacker keeps the seed's claim VALID; noise that hurts the
    attacker more makes it INVALID. B4B is VALID only when the attacker loses 5+ points and narrow benign
    clients lose at most 1. Catches verdicts that look at one side only."""
    base = {"none": ([0.9, 0.9], [0.9, 0.9], [0.95, 0.95])}
    lines = enc._defense_claims(_defense(base | {"embedding_noise 1.0": ([0.8, 0.8], [0.7, 0.7], [0.94, 0.94]),
                                                 "b4b 8 bits": ([0.895, 0.9], [0.8, 0.8], [0.85, 0.86])}))
    assert [l["verdict"] for l in lines] == ["VALID", "VALID"]
    lines = enc._defense_claims(_defense(base | {"embedding_noise 1.0": ([0.9, 0.9], [0.89, 0.89], [0.6, 0.6]),
                                                 "b4b 8 bits": ([0.85, 0.85], [0.8, 0.8], [0.85, 0.86])}))
    assert [l["verdict"] for l in lines] == ["INVALID", "INVALID"]  # b4b: the narrow client lost 5 points
