"""Pure selection logic: policies, defenses, their validation and their seeded reproducibility."""

import itertools
import math

import numpy as np
import pytest
from scipy.stats import chisquare

from common.errors import ConfigError
from router.defenses import make_defense
from router.defenses.exponential_mechanism import ExponentialMechanism, exponential_probabilities, utilities
from router.defenses.metric_noise import MetricNoise
from router.defenses.permute_and_flip import PermuteAndFlip
from router.errors import NoModelMeetsRequirements
from router.policies import make_policy
from router.requirements import Requirements, ZooModel, meets, violation
from router.selection import Selector
from router.zoo_view import ZooView

ZOO = ZooView(
    (
        ZooModel("tiny", 0.30, 1.0, True),
        ZooModel("small", 0.55, 1.5, True),
        ZooModel("medium", 0.75, 2.0, True),
        ZooModel("large", 0.95, 4.0, True),
        ZooModel("bloated", 0.70, 3.0, False),
    ),
    input_dim=40,
    n_classes=10,
)
GRID_ACC = [None, 0.0, 0.3, 0.5, 0.6, 0.75, 0.9, 0.96]
GRID_LAT = [None, 0.5, 1.0, 1.6, 2.5, 3.5, 5.0]


@pytest.mark.parametrize("policy", ["pareto_uniform", "fastest_feasible"])
def test_policies_respect_requirements_over_a_grid(policy):
    p, rng = make_policy(policy), np.random.default_rng(0)
    for a, l in itertools.product(GRID_ACC, GRID_LAT):
        req = Requirements(a, l)
        feasible = [m for m in ZOO.models if meets(m, req) and (m.pareto or policy == "fastest_feasible")]
        for _ in range(10):
            m = p.select(ZOO, req, rng)
            if feasible:
                assert m in feasible
            else:
                assert m is None


def test_pareto_uniform_is_uniform_over_the_feasible_front():
    rng = np.random.default_rng(1)
    picks = [make_policy("pareto_uniform").select(ZOO, Requirements(0.5, None), rng).name for _ in range(3000)]
    counts = [picks.count(n) for n in ("small", "medium", "large")]
    assert "bloated" not in picks and chisquare(counts).pvalue > 1e-3


def test_fastest_feasible_is_deterministic():
    p = make_policy("fastest_feasible")
    assert p.select(ZOO, Requirements(0.6, None), None).name == "medium"
    assert p.select(ZOO, Requirements(0.72, None), None).name == "medium"
    assert p.select(ZOO, Requirements(0.8, 10.0), None).name == "large"
    assert p.select(ZOO, Requirements(0.65, 2.5), None).name == "medium"


def test_selector_rejects_or_falls_back_to_closest():
    strict = Selector(ZOO, make_policy("pareto_uniform"), [], "reject", seed=0)
    with pytest.raises(NoModelMeetsRequirements, match="min_accuracy=0.99"):
        strict.choose(Requirements(0.99, None))
    closest = Selector(ZOO, make_policy("pareto_uniform"), [], "closest", seed=0)
    assert closest.choose(Requirements(0.99, None)).model.name == "large"
    assert closest.choose(Requirements(None, 0.1)).model.name == "tiny"


def test_violation_is_zero_when_met_and_bounded():
    assert violation(ZOO.models[3], Requirements(0.9, 5.0), ZOO.accuracy_span, ZOO.latency_span_ms) == 0
    assert violation(ZOO.models[0], Requirements(1.0, 0.0), 0.65, 3.0) <= 1.0


def test_metric_noise_changes_selection_and_is_reproducible():
    req = Requirements(0.74, 2.1)  # exactly one model ("medium") meets it without noise
    plain = Selector(ZOO, make_policy("pareto_uniform"), [], "closest", seed=7)
    assert {plain.choose(req).model.name for _ in range(200)} == {"medium"}

    def run(seed):
        s = Selector(ZOO, make_policy("pareto_uniform"), [MetricNoise("laplace", 0.1, 1.0)], "closest", seed=seed)
        return [s.choose(req).model.name for _ in range(300)]

    a, b, c = run(7), run(7), run(8)
    assert a == b and a != c
    assert len(set(a)) >= 3 and a.count("medium") < 280


@pytest.mark.parametrize("dist", ["gaussian", "laplace", "uniform"])
def test_metric_noise_distributions_have_their_scale(dist):
    d, rng = MetricNoise(dist, 0.05, 0.5), np.random.default_rng(0)
    draws = np.array([[r.min_accuracy - 0.5, r.max_latency_ms - 10] for r in
                      (d.perturb(Requirements(0.5, 10.0), rng) for _ in range(20000))])
    expected_std = {"gaussian": 1.0, "laplace": math.sqrt(2), "uniform": 1 / math.sqrt(3)}[dist]
    np.testing.assert_allclose(draws.std(0), [0.05 * expected_std, 0.5 * expected_std], rtol=0.05)
    if dist == "uniform":
        assert np.abs(draws[:, 0]).max() <= 0.05


def test_metric_noise_keeps_omitted_metrics_omitted():
    r = MetricNoise("gaussian", 0.1, 1.0).perturb(Requirements(None, None), np.random.default_rng(0))
    assert r == Requirements(None, None)


def test_exponential_mechanism_matches_its_formula():
    eps, req = 2.0, Requirements(0.9, 1.2)
    mech = ExponentialMechanism(eps)
    u = utilities(ZOO, req)
    w = np.exp(eps * u / 2)
    np.testing.assert_allclose(mech.probabilities(ZOO, req), w / w.sum())
    rng = np.random.default_rng(123)
    names = [m.name for m in ZOO.pareto]
    picks = [mech.select(ZOO, req, rng).name for _ in range(20000)]
    counts = np.array([picks.count(n) for n in names])
    assert chisquare(counts, 20000 * w / w.sum()).pvalue > 1e-3


def test_exponential_mechanism_probabilities_from_hand_computed_violations():
    """Request (0.9, 1.2 ms) on the front tiny/small/medium/large, spans 0.65 accuracy and 3.0 ms, violations by
    hand: tiny (0.60/0.65 + 0)/2 = 0.4615, small (0.35/0.65 + 0.3/3)/2 = 0.3192, medium (0.15/0.65 + 0.8/3)/2 =
    0.2487, large (0 + 2.8/3)/2 = 0.4667; P ∝ exp(-eps * v / 2). Independent of the code's utility function, so
    it catches a wrong sensitivity (eps instead of eps/2), unnormalised spans, and a max instead of a mean."""
    v = np.array([0.6 / 0.65, 0.35 / 0.65 + 0.1, 0.15 / 0.65 + 0.8 / 3, 2.8 / 3]) / 2
    w = np.exp(-4.0 * v / 2)
    np.testing.assert_allclose(ExponentialMechanism(4.0).probabilities(ZOO, Requirements(0.9, 1.2)), w / w.sum(),
                               rtol=1e-9)
    assert np.argmax(w) == 2  # medium: the least violating model is the likeliest, but far from certain
    assert (w / w.sum())[2] < 0.4


def _permute_and_flip_exact(u, eps):
    a = np.exp(eps * (u - u.max()) / 2)
    p = np.zeros(len(u))
    perms = list(itertools.permutations(range(len(u))))
    for perm in perms:
        reach = 1.0
        for i in perm:
            p[i] += reach * a[i] / len(perms)
            reach *= 1 - a[i]
    return p


def test_permute_and_flip_matches_its_exact_distribution():
    eps, req = 3.0, Requirements(0.9, 1.2)
    u = utilities(ZOO, req)
    exact = _permute_and_flip_exact(u, eps)
    assert abs(exact.sum() - 1) < 1e-12
    mech, rng = PermuteAndFlip(eps), np.random.default_rng(321)
    names = [m.name for m in ZOO.pareto]
    picks = [mech.select(ZOO, req, rng).name for _ in range(20000)]
    counts = np.array([picks.count(n) for n in names])
    assert chisquare(counts, 20000 * exact).pvalue > 1e-3
    # permute-and-flip puts at least as much mass on the best candidate as the exponential mechanism
    assert exact[np.argmax(u)] >= exponential_probabilities(u, eps)[np.argmax(u)]


def test_defense_parameters_are_validated():
    with pytest.raises(ConfigError, match="epsilon must be > 0"):
        ExponentialMechanism(0)
    with pytest.raises(ConfigError, match="epsilon must be > 0"):
        PermuteAndFlip(-1)
    with pytest.raises(ConfigError, match="distribution"):
        MetricNoise("cauchy")
    with pytest.raises(ConfigError, match=">= 0"):
        MetricNoise("laplace", -0.1)
    with pytest.raises(ConfigError, match="unknown defense"):
        make_defense({"name": "firewall"})
    with pytest.raises(ConfigError, match="bad parameters"):
        make_defense({"name": "metric_noise", "sigma": 1})
    with pytest.raises(ConfigError, match="at most one selection defense"):
        Selector(ZOO, make_policy("pareto_uniform"), [ExponentialMechanism(), PermuteAndFlip()])
    with pytest.raises(ConfigError, match="on_no_model"):
        Selector(ZOO, make_policy("pareto_uniform"), [], "guess")
    with pytest.raises(ConfigError, match="unknown selection policy"):
        make_policy("random")


def test_noise_then_dp_selection_combine():
    defenses = [make_defense({"name": "metric_noise", "accuracy_scale": 0.05}), make_defense({"name": "permute_and_flip", "epsilon": 5})]
    s = Selector(ZOO, make_policy("pareto_uniform"), defenses, seed=0)
    picks = {s.choose(Requirements(0.9, 5.0)).model.name for _ in range(200)}
    assert "large" in picks and picks <= {m.name for m in ZOO.pareto}
