"""Output perturbation defenses, batch by batch (pure functions of the model's probabilities)."""

import numpy as np
import pytest

from common.errors import ConfigError
from router.defenses import check_combination, make_defense
from router.zoo_view import ZooView
from router.requirements import ZooModel

RNG = np.random.default_rng(0)
PROBS = RNG.dirichlet(np.ones(10) * 0.3, size=64).astype(np.float32)
LABELS = PROBS.argmax(1)
ZOO = ZooView((ZooModel("a", 0.6, 1.0), ZooModel("b", 0.9, 5.0)), 40, 10)


def apply(spec, probs=PROBS, labels=LABELS, seed=0):
    d = make_defense(spec)
    check_combination([d], ZOO)
    return d.perturb_output(probs.copy(), labels.copy(), np.random.default_rng(seed))


def test_round_probabilities_rounds_each_value_and_keeps_labels():
    """Catches rounding of the wrong axis or a renormalisation that moves values off the decimal grid."""
    out, labels = apply({"name": "round_probabilities", "decimals": 1})
    assert np.allclose(out * 10, np.round(out * 10), atol=1e-5)
    assert np.abs(out - PROBS).max() <= 0.05 + 1e-6
    assert (labels == LABELS).all()


def test_top_k_keeps_each_rows_k_largest_renormalised():
    """Catches a top-k over the whole batch instead of per row, and a missing renormalisation."""
    out, labels = apply({"name": "top_k", "k": 3})
    assert ((out > 0).sum(1) == 3).all()
    assert np.allclose(out.sum(1), 1, atol=1e-5)
    for row, p in zip(out, PROBS):
        kept = set(np.flatnonzero(row))
        assert kept == set(np.argsort(-p)[:3])
        assert np.allclose(row[list(kept)], p[list(kept)] / p[list(kept)].sum(), atol=1e-5)
    assert (labels == LABELS).all()


def test_labels_only_answers_one_hot_of_the_models_label():
    out, labels = apply({"name": "labels_only"})
    assert (out.sum(1) == 1).all() and (out.max(1) == 1).all()
    assert (out.argmax(1) == LABELS).all() and (labels == LABELS).all()


def test_reverse_sigmoid_perturbs_probabilities_and_stays_a_distribution():
    """Catches a no-op (beta ignored) and a formula that leaves rows unnormalised or negative."""
    out, labels = apply({"name": "reverse_sigmoid", "beta": 0.3, "gamma": 2.0})
    assert np.allclose(out.sum(1), 1, atol=1e-5) and (out >= 0).all()
    assert np.abs(out - PROBS).mean() > 0.01
    strong, _ = apply({"name": "reverse_sigmoid", "beta": 0.8, "gamma": 2.0})
    assert np.abs(strong - PROBS).mean() > np.abs(out - PROBS).mean()  # beta sets the size
    assert (labels == LABELS).all()


def test_reverse_sigmoid_matches_the_published_formula_on_one_value():
    y = np.array([[0.7, 0.2, 0.1]], np.float32)
    out, _ = make_defense({"name": "reverse_sigmoid", "beta": 0.5, "gamma": 1.0}).perturb_output(
        y, np.array([0]), np.random.default_rng(0))
    # gamma 1: sigmoid(logit(y)) = y, so y - beta * (y - 1/2), then normalised
    raw = y - 0.5 * (y - 0.5)
    assert np.allclose(out, raw / raw.sum(), atol=1e-5)


def test_reverse_sigmoid_gamma_shapes_the_perturbation_by_the_published_formula():
    """At gamma 3, sigmoid(gamma * logit(y)) = y^3 / (y^3 + (1 - y)^3), worked out by hand for y = 0.7, 0.2, 0.1.
    Catches gamma ignored (the gamma-1 result), gamma applied outside the sigmoid, or to y instead of its logit."""
    y = np.array([[0.7, 0.2, 0.1]], np.float32)
    out, _ = make_defense({"name": "reverse_sigmoid", "beta": 0.5, "gamma": 3.0}).perturb_output(
        y, np.array([0]), np.random.default_rng(0))
    s = np.array([0.343 / (0.343 + 0.027), 0.008 / (0.008 + 0.512), 0.001 / (0.001 + 0.729)])
    raw = y[0] - 0.5 * (s - 0.5)
    assert np.allclose(out[0], raw / raw.sum(), atol=1e-5)
    gamma1, _ = make_defense({"name": "reverse_sigmoid", "beta": 0.5, "gamma": 1.0}).perturb_output(
        y, np.array([0]), np.random.default_rng(0))
    assert np.abs(out - gamma1).max() > 0.02


def test_output_noise_keeps_top1_and_is_seeded():
    """Catches noise that changes the service's label when keep_top1 is set, and an unseeded stream."""
    out, labels = apply({"name": "output_noise", "sigma": 0.2})
    assert (out.argmax(1) == LABELS).all() and (labels == LABELS).all()
    assert np.allclose(out.sum(1), 1, atol=1e-5) and np.abs(out - PROBS).mean() > 0.02
    again, _ = apply({"name": "output_noise", "sigma": 0.2})
    other, _ = apply({"name": "output_noise", "sigma": 0.2}, seed=1)
    assert np.array_equal(out, again) and not np.array_equal(out, other)
    free, free_labels = apply({"name": "output_noise", "sigma": 0.2, "keep_top1": False})
    assert (free_labels == free.argmax(1)).all() and (free_labels != LABELS).any()


@pytest.mark.parametrize("spec, words", [
    ({"name": "round_probabilities", "decimals": -1}, "decimals"),
    ({"name": "top_k", "k": 11}, "exceeds the zoo's 10 classes"),
    ({"name": "top_k", "k": 0}, "k must be"),
    ({"name": "reverse_sigmoid", "beta": 0}, "beta must be > 0"),
    ({"name": "reverse_sigmoid", "gamma": -1}, "gamma must be > 0"),
    ({"name": "output_noise", "sigma": -0.1}, "sigma"),
    ({"name": "labels_only", "k": 2}, "bad parameters for defense 'labels_only'"),
    ({"name": "no_such_defense"}, "unknown defense"),
])
def test_out_of_range_parameters_are_refused_naming_the_setting(spec, words):
    with pytest.raises(ConfigError, match=words):
        check_combination([make_defense(spec)], ZOO)


def test_defenses_that_cannot_combine_are_refused():
    with pytest.raises(ConfigError, match="labels_only must be the last"):
        check_combination([make_defense({"name": "labels_only"}), make_defense({"name": "top_k"})])
    with pytest.raises(ConfigError, match="more than once"):
        check_combination([make_defense({"name": "top_k"}), make_defense({"name": "top_k", "k": 2})])
    with pytest.raises(ConfigError, match="workers 1"):
        check_combination([make_defense({"name": "prada"})], workers=2)
    check_combination([make_defense({"name": "round_probabilities"}), make_defense({"name": "labels_only"})])


@pytest.mark.parametrize("spec", [{"name": "prada"}, {"name": "query_budget", "max_samples": 100}, {"name": "b4b"}])
def test_every_per_client_defense_needs_one_worker_or_a_store(spec):
    """Each per-client defense, not only PRADA: with two workers and no store each worker would keep its own
    budget, flag or coverage (two workers, twice the budget). Catches a guard that lists defenses by name and
    forgets one, and a guard that still refuses when the state is shared in a store."""
    with pytest.raises(ConfigError, match="workers 1"):
        check_combination([make_defense(spec)], workers=2)
    check_combination([make_defense(spec)], workers=2, shared_state=True)
    check_combination([make_defense(spec)], workers=1)
    check_combination([make_defense({"name": "metric_noise", "distribution": "laplace"})], workers=2)  # stateless
