"""Signature filtering: its budget accounting on the null system, and live through the real router and Triton
behind randomised selection, every request checked against the router's audit log."""

import numpy as np
import pytest

from attacks.experiment import front_by_accuracy, run_fingerprint
from attacks.oracle import signature
from attacks.signature_filter import SignatureFilterSettings, collect_filtered
from common.errors import ConfigError
from router.audit_log import read_audit_log
from stack.clients import NullSystem, RouterClient
from stack.loopback import DEMO_KEYS

KEY = "demo-attacker-key"


def test_bad_settings_raise():
    with pytest.raises(ConfigError, match="batch_size"):
        SignatureFilterSettings(batch_size=1)
    with pytest.raises(ConfigError, match="budget_samples"):
        SignatureFilterSettings(budget_samples=10, batch_size=25)


def test_every_row_sent_counts_in_the_budget():
    """The null system answers every batch alike. Matching signature: all kept, one probe row per batch paid
    for, and a last, smaller batch spends the rest (50 = 20 + 20 + 10 rows, 19 + 19 + 9 answers). Another
    signature: nothing kept, the same samples resent until the budget is gone. Catches counting only the
    attacker's samples (47 sent) or only the kept batches."""
    pool, probe = np.zeros((100, 40), np.float32), np.ones((1, 40), np.float32)
    null = NullSystem()
    s = SignatureFilterSettings(budget_samples=50, batch_size=20)
    t = collect_filtered(null, pool, probe, signature(null.infer(probe)[0]), s)
    assert (t.samples_sent, t.batches_sent, t.batches_kept, t.answers_kept, t.rejected) == (50, 3, 3, 47, 0)
    assert t.x.shape == (47, 40) and t.probs.shape == (47, 10) and t.outcomes == ["kept"] * 3
    t = collect_filtered(null, pool, probe, "another model", s)
    assert (t.samples_sent, t.batches_sent, t.batches_kept, t.answers_kept) == (50, 3, 0, 0)
    assert t.outcomes == ["discarded"] * 3 and t.cost_multiplier == float("inf")


def filtered_through(router, plain, manifest, data, rank: int, s: SignatureFilterSettings):
    """The victim's signature learnt by the staircase on the undefended router, then the filtered collection
    through ``router`` at the victim's corner; with the audit records of the collection's requests."""
    victim = front_by_accuracy(manifest)[rank - 1]
    pool = data.x["attacker_pool"]
    learnt = run_fingerprint("staircase", plain.url, KEY, pool[:1], rank)
    assert learnt.verified_share == 1.0
    start = sum(1 for _ in read_audit_log(router.audit_path))
    client = RouterClient(router.url, KEY)
    t = collect_filtered(client, pool[1:], pool[:1], learnt.target_signature, s,
                         {"min_accuracy": victim.accuracy, "max_latency_ms": victim.selection_latency_ms})
    client.close()
    records = list(read_audit_log(router.audit_path))[start:]
    assert len(records) == t.batches_sent == len(t.outcomes)
    return victim, t, records


def test_only_the_victims_answers_are_kept_through_the_exponential_mechanism_live(start_router, manifest, data):
    """Epsilon 4 over the test zoo's front (two or three models): at its corner the victim serves about two
    batches in three. Every kept batch was served by the victim, per the audit log, request by request; some
    batches served by another model were sent and discarded (so a filter that keeps everything, or checks no
    signature, fails); every row sent (probes, discarded batches) is in samples_sent."""
    plain = start_router("plain", api_keys=DEMO_KEYS, seed=3)
    router = start_router("dp", api_keys=DEMO_KEYS, seed=5,
                          defenses=[{"name": "exponential_mechanism", "epsilon": 4.0}])
    s = SignatureFilterSettings(budget_samples=600, batch_size=20, seed=0)
    for rank in range(1, len(front_by_accuracy(manifest)) + 1):
        victim, t, records = filtered_through(router, plain, manifest, data, rank, s)
        kept = [r["model"] for r, o in zip(records, t.outcomes) if o == "kept"]
        discarded = [r["model"] for r, o in zip(records, t.outcomes) if o == "discarded"]
        assert kept and set(kept) == {victim.name}, (rank, t.counters())
        assert discarded and victim.name not in discarded, (rank, t.counters())
        assert t.samples_sent == s.budget_samples == 20 * t.batches_sent
        assert t.answers_kept == 19 * t.batches_kept == len(t.x) == len(t.probs)
        assert t.cost_multiplier == pytest.approx(t.samples_sent / t.answers_kept) and t.cost_multiplier > 20 / 19


def test_rejected_requests_are_paid_for_through_metric_noise_live(start_router, manifest, data):
    """Laplace metric noise at the victim's exact corner rejects about three requests in four: each rejected
    request still spends its rows, the answered ones are the victim's."""
    plain = start_router("plain", api_keys=DEMO_KEYS, seed=3)
    router = start_router("noisy", api_keys=DEMO_KEYS, seed=7, policy="pareto_uniform",
                          defenses=[{"name": "metric_noise", "distribution": "laplace", "accuracy_scale": 0.02,
                                     "latency_scale_ms": 0.1}])
    s = SignatureFilterSettings(budget_samples=400, batch_size=20, seed=1)
    victim, t, records = filtered_through(router, plain, manifest, data, 1, s)
    assert [r["outcome"] == "no_model" for r in records] == [o == "rejected" for o in t.outcomes]
    assert t.rejected >= t.batches_sent / 2 and t.batches_kept >= 1
    assert {r["model"] for r, o in zip(records, t.outcomes) if o == "kept"} == {victim.name}
    assert t.samples_sent == 400 and t.answers_kept == 19 * t.batches_kept
