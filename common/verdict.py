"""Verdicts from intervals, one rule everywhere: VALID when the whole 95% interval clears the threshold,
INVALID when it lies wholly on the wrong side, UNDETERMINED otherwise (an interval that straddles the threshold,
or no interval at all). A point estimate alone never decides."""

from __future__ import annotations

VALID, INVALID, UNDETERMINED = "VALID", "INVALID", "UNDETERMINED"


def at_most(ci95: list[float] | tuple[float, float] | None, threshold: float) -> str:
    """The quantity is claimed to be <= ``threshold`` (a reduction at least as large as a paper's)."""
    if ci95 is None:
        return UNDETERMINED
    lo, hi = ci95
    return VALID if hi <= threshold else INVALID if lo > threshold else UNDETERMINED


def at_least(ci95: list[float] | tuple[float, float] | None, threshold: float) -> str:
    """The quantity is claimed to be >= ``threshold`` (a gain)."""
    if ci95 is None:
        return UNDETERMINED
    lo, hi = ci95
    return VALID if lo >= threshold else INVALID if hi < threshold else UNDETERMINED


def all_of(*verdicts: str) -> str:
    """A claim made of several conditions: INVALID if any is, VALID only if all are."""
    return INVALID if INVALID in verdicts else VALID if all(v == VALID for v in verdicts) else UNDETERMINED


def from_bool(ok: bool | None) -> str:
    """A condition already decided: VALID / INVALID, or UNDETERMINED when it could not be (None)."""
    return UNDETERMINED if ok is None else VALID if ok else INVALID
