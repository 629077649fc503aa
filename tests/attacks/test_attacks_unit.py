"""Attack logic against an in-process oracle of the router's selection (no server): fast, exact checks."""

import numpy as np
import pytest

from attacks.fingerprint import FingerprintSettings, staircase
from attacks.grid_scan import GridScanSettings, grid_scan
from attacks.knockoff import KnockoffSettings, collect, train_surrogate
from attacks.query_pools import ood_noise, query_pool
from common.errors import ConfigError
from stack.clients import RouterRejected
from router.errors import NoModelMeetsRequirements
from router.policies import make_policy
from router.requirements import Requirements, ZooModel
from router.selection import Selector
from router.zoo_view import ZooView

ZOO = ZooView((ZooModel("a", 0.30, 1.0), ZooModel("b", 0.60, 1.4), ZooModel("c", 0.85, 2.2),
               ZooModel("d", 0.97, 3.9), ZooModel("off", 0.5, 3.0, False)), 40, 10)


class SelectorOracle:
    """Mimics SpecOracle on a Selector in process: the model's name stands in for its output signature."""

    def __init__(self, selector):
        self.selector, self.queries = selector, 0

    def ask(self, a, l):
        self.queries += 1
        try:
            return self.selector.choose(Requirements(a, l)).model.name
        except NoModelMeetsRequirements:
            return None


INFO = {"accuracy_range": [0.30, 0.97], "latency_range_ms": [1.0, 3.9]}


@pytest.mark.parametrize("rank, target", [(1, "d"), (2, "c"), (3, "b"), (4, "a")])
def test_staircase_finds_each_front_model_with_few_queries(rank, target):
    o = SelectorOracle(Selector(ZOO, make_policy("pareto_uniform"), [], seed=0))
    r = staircase(o, INFO, FingerprintSettings(target_rank=rank))
    assert r.target_signature == target and r.verified_share == 1.0
    sel = Selector(ZOO, make_policy("pareto_uniform"), [], seed=1)
    assert {sel.choose(Requirements(**r.spec)).model.name for _ in range(50)} == {target}
    assert r.queries <= 50 * rank


def test_grid_scan_baseline_finds_the_target_with_many_more_queries():
    o = SelectorOracle(Selector(ZOO, make_policy("pareto_uniform"), [], seed=0))
    r = grid_scan(o, INFO, GridScanSettings(target_rank=1, grid_size=20, repeats=3))
    assert r.target_signature == "d" and r.queries == 1200
    s = staircase(SelectorOracle(Selector(ZOO, make_policy("pareto_uniform"), [], seed=0)), INFO, FingerprintSettings())
    assert s.queries <= 0.05 * r.queries


def test_staircase_reports_a_missing_rank():
    o = SelectorOracle(Selector(ZOO, make_policy("pareto_uniform"), [], seed=0))
    r = staircase(o, INFO, FingerprintSettings(target_rank=6))
    assert r.spec is None and r.target_signature is None


def test_attack_parameters_are_validated():
    with pytest.raises(ConfigError, match="target_rank"):
        FingerprintSettings(target_rank=0)
    with pytest.raises(ConfigError, match="grid_size"):
        GridScanSettings(grid_size=1)
    with pytest.raises(ConfigError, match="surrogate"):
        KnockoffSettings(surrogate="transformer")
    with pytest.raises(ConfigError, match=">= 1"):
        KnockoffSettings(budget=0)
    with pytest.raises(ConfigError, match="unknown query pool"):
        query_pool("imagenet", None, 0)


class TeacherSUT:
    """A fixed linear 'victim' answering probabilities; rejects every third request when asked to."""

    def __init__(self, w, reject_every=0):
        self.w, self.reject_every, self.calls = w, reject_every, 0

    def infer(self, x, min_accuracy=None, max_latency_ms=None):
        self.calls += 1
        if self.reject_every and self.calls % self.reject_every == 0:
            raise RouterRejected(422, {"error": "no_model_meets_requirements"})
        z = x @ self.w
        e = np.exp(z - z.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype(np.float32)

    def close(self):
        pass


def test_knockoff_collects_the_budget_and_learns_the_victim():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(40, 10)).astype(np.float32)
    pool = rng.normal(size=(2000, 40)).astype(np.float32)
    s = KnockoffSettings(budget=1500, batch_size=50, surrogate="logreg", epochs=60, seed=0)
    t = collect(TeacherSUT(w), pool, s)
    assert t.x.shape == (1500, 40) and t.requests == 30 and t.rejected_requests == 0
    model = train_surrogate(t, (1, 40), 10, s)
    test = rng.normal(size=(500, 40)).astype(np.float32)
    from zoo.train import predict_proba

    fidelity = np.mean(predict_proba(model, test).argmax(1) == (test @ w).argmax(1))
    assert fidelity > 0.8  # chance is 0.1


def test_rejected_requests_spend_budget():
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(300, 40)).astype(np.float32)
    t = collect(TeacherSUT(rng.normal(size=(40, 10)), reject_every=3), pool, KnockoffSettings(budget=300, batch_size=10))
    assert t.requests == 30 and t.rejected_requests == 10 and len(t.x) == 200 and t.samples_sent == 300
    # resends are paid for: with up to 2 resends a rejected batch is sent again, out of the same 300 samples.
    # Catches free resends (the old top_accuracy attacker sent 300 + every resend and kept 300 answers).
    t = collect(TeacherSUT(rng.normal(size=(40, 10)), reject_every=3), pool,
                KnockoffSettings(budget=300, batch_size=10, resend_rejected=2))
    assert t.samples_sent == 300 and t.requests == 30 and len(t.x) == 10 * (t.requests - t.rejected_requests) < 300
    with pytest.raises(ConfigError, match="exceeds the query pool"):
        collect(TeacherSUT(None), pool, KnockoffSettings(budget=301))


def test_ood_pool_is_seeded_and_matches_moments():
    like = np.random.default_rng(0).normal(2.0, 3.0, size=(1000, 40)).astype(np.float32)
    a, b = ood_noise(like, 500, 1), ood_noise(like, 500, 1)
    assert np.array_equal(a, b) and not np.array_equal(a, ood_noise(like, 500, 2))
    np.testing.assert_allclose(a.mean(), 2.0, atol=0.5)


def test_majority_votes_recover_the_target_through_mild_noise():
    from router.defenses.metric_noise import MetricNoise

    noisy = Selector(ZOO, make_policy("pareto_uniform"), [MetricNoise("gaussian", 0.005, 0.02)], seed=3)
    plain = staircase(SelectorOracle(noisy), INFO, FingerprintSettings(accuracy_tolerance=1e-3, latency_tolerance_ms=1e-2))
    assert plain.spec is None  # a single noisy answer at the boundary derails the plain bisection
    r = staircase(SelectorOracle(noisy), INFO, FingerprintSettings(votes=7, accuracy_tolerance=1e-3, latency_tolerance_ms=1e-2,
                                                                   accuracy_backoff=0.02, latency_backoff_ms=0.1))
    assert r.target_signature == "d" and r.spec is not None and r.verified_share >= 0.8
    with pytest.raises(ConfigError, match="odd"):
        FingerprintSettings(votes=2)


def test_budgets_as_names_counts_and_fractions_checked_against_the_pool():
    """Catches a fraction read as a count (0.5 -> 0 or 1 sample), a name table out of step with BUDGETS, and a
    budget larger than the pool accepted (the extraction would stop part-way, after the first budgets ran)."""
    from attacks.knockoff import BUDGETS, resolve_budget

    assert resolve_budget("small", 540) == BUDGETS["small"] and resolve_budget("600", 3600) == 600
    assert resolve_budget("0.5", 540) == 270 and resolve_budget(0.25, 3600) == 900
    for bad, words in (("medium", "exceeds the query pool of 540"), ("huge", "neither a name"),
                       ("2.5", "whole number"), ("-3", "whole number"), ("0", "whole number")):
        with pytest.raises(ConfigError, match=words):
            resolve_budget(bad, 540)


def test_training_failure_names_a_surrogate_at_chance_or_a_flat_loss():
    from attacks.knockoff import training_failure

    assert training_failure([2.3, 1.0], 0.80, 10) is None
    assert "chance" in training_failure([2.3, 1.0], 0.089, 10)  # the digits zoo's seed-2 surrogate
    assert "did not fall" in training_failure([2.3, 2.29], 0.40, 10)


def test_a_surrogate_that_cannot_learn_is_retried_then_reported_failed_and_a_good_one_is_not():
    """Answers that carry no information (random labels) cannot be learnt: the check must fire, retry with fresh
    initialisations and report failure with reasons; the same harness on a learnable teacher must not fire.
    Catches a check that never fires (the below-chance surrogate averaged in) and one that always fires."""
    from attacks.knockoff import SURROGATE_RETRIES, Transcript, train_and_score

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 40)).astype(np.float32)
    noise = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 600)]
    test_x, test_y = rng.normal(size=(400, 40)).astype(np.float32), rng.integers(0, 10, 400)
    s = KnockoffSettings(budget=600, surrogate="logreg", epochs=5, seed=0)
    logged = []
    bad = train_and_score(Transcript(x, noise, 0, 0), (1, 40), 10, s, test_x, test_y, test_y, log=logged.append)
    assert bad["failed"] and bad["attempts"] == 1 + SURROGATE_RETRIES and len(bad["retry_reasons"]) == bad["attempts"]
    assert len(logged) == bad["attempts"] and "giving up" in logged[-1]
    w = rng.normal(size=(40, 10)).astype(np.float32)
    teacher = TeacherSUT(w).infer(x)
    good = train_and_score(Transcript(x, teacher, 0, 0), (1, 40), 10, KnockoffSettings(budget=600, surrogate="logreg",
                           epochs=30, seed=0), test_x, (test_x @ w).argmax(1), (test_x @ w).argmax(1), log=logged.append)
    assert not good["failed"] and good["attempts"] == 1 and good["accuracy"] > 0.5


def test_summary_leaves_failed_seeds_out_of_the_mean_and_names_them():
    from attacks.experiment import summarize_extraction

    runs = [{"budget": "small", "setting": "naive", "seed": s, "accuracy": a, "fidelity": a, "failed": f}
            for s, a, f in ((0, 0.914, False), (1, 0.911, False), (2, 0.089, True))]
    row = summarize_extraction(runs)[0]
    assert row["failed_seeds"] == [2] and row["seeds"] == 2 and abs(row["accuracy"] - 0.9125) < 1e-9
    assert row["accuracy_ci95"][0] < row["accuracy"] < row["accuracy_ci95"][1]


def test_fingerprinted_extraction_without_a_specification_is_a_failure_not_the_naive_setting():
    from attacks.experiment import run_extraction

    r = run_extraction("fingerprinted", "http://127.0.0.1:9", "k", "127.0.0.1:9", None, None,
                       np.zeros((10, 40), np.float32), None, None, KnockoffSettings(budget=10))
    assert r["failed"] and r["accuracy"] is None and r["requests"] == 0 and "no specification" in r["retry_reasons"][0]
