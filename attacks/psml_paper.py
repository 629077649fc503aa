"""The PSML paper's figures and the rule psml judges its own measurements against them by, defined once.

Paper: "Pareto-Secure Machine Learning (PSML)", arXiv 2307.01292. Its claims that psml reproduces:
fingerprinted extraction comes within 1% (accuracy and fidelity) of extraction with the victim's explicit
specification; it gains up to +14.6% accuracy and +7.7% fidelity over naive extraction; its metric-noise
defense cuts a medium extraction by up to 9.8 accuracy / 4.8 fidelity points while benign goodput stays above
80%. The trade-off benchmark's ``paper_verdict``, the over-builds benchmark's pooled verdict, the attack
table's and the report's claim lines all read the figures (and their text) from here, at call time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from common.verdict import INVALID, VALID, all_of, at_most

ARXIV = "arXiv 2307.01292"
FINGERPRINT_WITHIN = 0.01  # |fingerprinted - explicit|, accuracy and fidelity, as a share (1 point)
NAIVE_GAIN = {"accuracy": 0.146, "fidelity": 0.077}  # fingerprinted - naive, "up to", as shares


@dataclass(frozen=True)
class DefenseFigures:
    """The metric-noise defense's effect on a medium extraction, as shares (-0.098: 9.8 points lost)."""

    d_accuracy: float = -0.098  # the surrogate's accuracy change against the undefended router
    d_fidelity: float = -0.048  # its fidelity change (agreement with the victim)
    min_goodput: float = 0.80  # the benign goodput share the defense keeps

    def as_dict(self) -> dict:
        return asdict(self)


DEFENSE = DefenseFigures()


def defense_verdict(goodputs: list[float], d_accuracy_ci95, d_fidelity_ci95) -> str:
    """A defense beats the paper: benign goodput at least the paper's in every measurement (one row, or every
    zoo build), and both paired 95% intervals wholly at or past the paper's reductions (common/verdict.py)."""
    d = DEFENSE
    return all_of(*(VALID if g >= d.min_goodput else INVALID for g in goodputs),
                  at_most(d_accuracy_ci95, d.d_accuracy), at_most(d_fidelity_ci95, d.d_fidelity))


def defense_points() -> str:
    """The defense's figures in points, as the benchmarks print them: "-9.8 acc / -4.8 fid points at goodput >=
    0.80"."""
    d = DEFENSE
    return (f"{d.d_accuracy * 100:+.1f} acc / {d.d_fidelity * 100:+.1f} fid points at goodput >= "
            f"{d.min_goodput:.2f}")


def naive_gain_points(metric: str) -> str:
    """"+14.6 accuracy" / "+7.7 fidelity": the gain over naive extraction in points."""
    return f"{NAIVE_GAIN[metric] * 100:+.1f} {metric}"


def attack_claims() -> dict[str, str]:
    """The extraction claims as the attack table quotes them beside its measured differences."""
    return {"fingerprinted_vs_explicit": f"within {FINGERPRINT_WITHIN:.0%} accuracy and fidelity (PSML, {ARXIV})",
            "fingerprinted_vs_naive": f"up to {NAIVE_GAIN['accuracy']:+.1%} accuracy and "
                                      f"{NAIVE_GAIN['fidelity']:+.1%} fidelity (PSML)"}
