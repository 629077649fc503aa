"""Interval verdicts: one rule for every claim line."""

from common.verdict import INVALID, UNDETERMINED, VALID, all_of, at_least, at_most


def test_a_reduction_claim_needs_the_whole_interval_past_the_threshold():
    """Catches a verdict from the point estimate (a mean of -0.06 with an interval reaching -0.01 would pass as
    VALID against -0.048) and one that calls a straddling interval INVALID (the old report's 'INVALID' for an
    inconclusive gain)."""
    assert at_most([-0.09, -0.06], -0.048) == VALID
    assert at_most([-0.11, -0.01], -0.048) == UNDETERMINED
    assert at_most([-0.02, 0.03], -0.048) == INVALID
    assert at_most(None, -0.048) == UNDETERMINED


def test_a_gain_claim_mirrors_it():
    assert at_least([0.01, 0.05], 0.0) == VALID
    assert at_least([-0.01, 0.05], 0.0) == UNDETERMINED
    assert at_least([-0.05, -0.01], 0.0) == INVALID


def test_conditions_combine_with_invalid_first():
    """Catches a combination that lets one VALID condition carry an INVALID one."""
    assert all_of(VALID, VALID) == VALID
    assert all_of(VALID, UNDETERMINED) == UNDETERMINED
    assert all_of(VALID, INVALID, UNDETERMINED) == INVALID
