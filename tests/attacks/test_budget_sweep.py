"""A budget sweep from one collection: cutting a transcript to a smaller budget, and the cost multiplier."""

import numpy as np
import pytest

from attacks.cost_multiplier import cost_multiplier
from attacks.knockoff import KnockoffSettings, Transcript, collect
from attacks.oracle import signature
from attacks.signature_filter import SignatureFilterSettings, collect_filtered
from common.errors import ConfigError
from stack.clients import NullSystem

from .test_attacks_unit import TeacherSUT


def test_a_cut_transcript_counts_samples_sent_not_answers_kept():
    """Every third request rejected, 10 samples each: after 100 samples sent the attacker held 70 answers from
    10 requests (3 rejected), and its last answer was sent at or before sample 100. Catches a cut by kept rows
    (the first 100 answers: 143 samples sent) and one that forgets the rejected requests' cost."""
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(300, 40)).astype(np.float32)
    t = collect(TeacherSUT(rng.normal(size=(40, 10)), reject_every=3), pool, KnockoffSettings(budget=300, batch_size=10))
    cut = t.up_to(100)
    assert (cut.samples_sent, cut.requests, cut.rejected_requests, len(cut.x)) == (100, 10, 3, 70)
    assert np.array_equal(cut.x, t.x[:70]) and np.array_equal(cut.probs, t.probs[:70])
    assert cut.sent_at.max() <= 100 and t.up_to(300).samples_sent == 300 and len(t.up_to(300).x) == len(t.x)
    partial = t.up_to(105)  # a request is kept whole or not at all
    assert partial.samples_sent == 100 and len(partial.x) == 70
    assert t.up_to(5).samples_sent == 0 and len(t.up_to(5).x) == 0
    with pytest.raises(ConfigError, match="cannot be cut"):
        Transcript(t.x, t.probs, 0, 0).up_to(100)


def test_a_cut_filtered_transcript_pays_for_probe_rows_and_discarded_batches():
    """Another model's signature: nothing kept whatever the budget, yet the budget is spent. The victim's: 20
    rows per batch of which 19 are answers. Catches a cut that counts only the attacker's samples (47 for 50)."""
    pool, probe = np.zeros((200, 40), np.float32), np.ones((1, 40), np.float32)
    null = NullSystem()
    t = collect_filtered(null, pool, probe, signature(null.infer(probe)[0]), SignatureFilterSettings(100, 20))
    cut = t.up_to(50)
    assert (cut.samples_sent, cut.batches_sent, cut.batches_kept, cut.answers_kept) == (40, 2, 2, 38)
    miss = collect_filtered(null, pool, probe, "another", SignatureFilterSettings(100, 20)).up_to(60)
    assert (miss.samples_sent, miss.batches_sent, miss.answers_kept, miss.outcomes) == (60, 3, 0, ["discarded"] * 3)


def test_cost_multiplier_is_the_first_swept_budget_within_a_point():
    """Catches a multiplier against the defended attack's own reference figure, a target without the 1-point
    allowance, and a defense that holds reported as 1x."""
    undefended = 0.80
    assert cost_multiplier({250: 0.6, 500: 0.75, 1000: 0.78, 2000: 0.795}, undefended, 1000)["cost_multiplier"] == 2.0
    assert cost_multiplier({250: 0.6, 500: 0.75, 1000: 0.791, 2000: 0.80}, undefended, 1000)["cost_multiplier"] == 1.0
    assert cost_multiplier({250: 0.795, 500: 0.80, 1000: 0.80}, undefended, 1000)["cost_multiplier"] == 0.25
    held = cost_multiplier({250: 0.3, 1000: 0.4, 2000: 0.5}, undefended, 1000)
    assert held["cost_multiplier"] is None and held["reading"] == "not reached by 2000"
    with pytest.raises(ValueError):
        cost_multiplier({}, undefended, 1000)
