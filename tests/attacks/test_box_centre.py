"""Box-centre fingerprinting: its geometry on a known staircase (pure), in process through the router's own
selector with metric noise, and live through the real router and Triton, scored from the audit log."""

from dataclasses import asdict

import pytest

from attacks.box_centre import BoxCentreSettings, box_centre, boundaries, fingerprint_box_centre
from attacks.experiment import consistency, front_by_accuracy
from attacks.fingerprint import FingerprintSettings
from attacks.oracle import SpecOracle
from common.errors import ConfigError
from router.defenses.metric_noise import MetricNoise
from router.errors import NoModelMeetsRequirements
from router.policies import make_policy
from router.requirements import Requirements, ZooModel
from router.selection import Selector
from router.zoo_view import ZooView
from stack.clients import RouterClient
from stack.loopback import DEMO_KEYS

# A four-model front (plus one dominated model) whose corners are the models' own metrics.
ZOO = ZooView((ZooModel("a", 0.30, 1.0), ZooModel("b", 0.60, 1.4), ZooModel("c", 0.85, 2.2),
               ZooModel("d", 0.97, 3.9), ZooModel("off", 0.5, 3.0, False)), 40, 10)
INFO = {"accuracy_range": [0.30, 0.97], "latency_range_ms": [1.0, 3.9]}
CORNERS = [{"min_accuracy": m.accuracy, "max_latency_ms": m.latency_ms} for m in
           sorted(ZOO.pareto, key=lambda m: -m.accuracy)]  # ranks 1..4: d, c, b, a
RANKS = {1: "d", 2: "c", 3: "b", 4: "a"}
# The reviewer's noise: Laplace, b = 0.02 accuracy and 0.1 ms latency (in process, and as router settings).
LAPLACE = MetricNoise(distribution="laplace", accuracy_scale=0.02, latency_scale_ms=0.1)
NOISE = {"name": LAPLACE.name} | asdict(LAPLACE)
# Against noise the staircase votes and steps back from each boundary (the boundary itself is a coin flip).
NOISY_STAIRCASE = FingerprintSettings(votes=9, accuracy_tolerance=1e-3, latency_tolerance_ms=1e-2,
                                      accuracy_backoff=0.05, latency_backoff_ms=0.2, margin=0.25)


def served_by(selector, spec, n):
    """Model names serving ``n`` queries of ``spec`` (None: rejected)."""
    out = []
    for _ in range(n):
        try:
            out.append(selector.choose(Requirements(**spec)).model.name)
        except NoModelMeetsRequirements:
            out.append(None)
    return out


def test_centre_of_a_middle_box_is_midway_between_its_neighbours_corners():
    """Rank 2 (c): accuracy between c and the next-less-accurate b, latency between c and the next-slower d.
    Catches returning the corner (0.85, 2.2) and the swapped neighbours (between c and d in accuracy, c and b
    in latency: (0.91, 1.8), a specification no model meets)."""
    spec = box_centre(CORNERS, INFO, 2)
    assert spec == pytest.approx({"min_accuracy": (0.85 + 0.60) / 2, "max_latency_ms": (2.2 + 3.9) / 2})


@pytest.mark.parametrize("policy", ["pareto_uniform", "fastest_feasible"])
@pytest.mark.parametrize("rank", [1, 2, 3, 4])
def test_every_box_centre_is_met_by_its_victim_alone(rank, policy):
    """Catches swapped neighbours (rejected: no model meets it), an off-by-one rank (another model answers)
    and a centre outside the box on an open side; the dominated model never takes over either."""
    spec = box_centre(CORNERS, INFO, rank)
    assert set(served_by(Selector(ZOO, make_policy(policy), [], seed=0), spec, 50)) == {RANKS[rank]}


def test_open_sides_reach_past_the_published_ranges():
    """Rank 1 has no slower model, the last rank no less accurate one: their open side is taken to end one
    published range width past the range. Catches using the range's end, where rank 1's latency has no room
    (the slowest model's latency is the range's top), and an accuracy below 0."""
    top = box_centre(CORNERS, INFO, 1)
    assert top["min_accuracy"] == pytest.approx((0.97 + 0.85) / 2)
    assert top["max_latency_ms"] == pytest.approx((3.9 + 3.9 + 2.9) / 2)
    assert box_centre(CORNERS, INFO, 4)["min_accuracy"] == pytest.approx((0.30 + 0.0) / 2)  # max(0, 0.30 - 0.67)
    narrow = box_centre(CORNERS, INFO, 1, BoxCentreSettings(open_side_ranges=0.0))
    assert narrow["max_latency_ms"] == pytest.approx(3.9)


def test_boundaries_undo_the_staircases_backoffs():
    """The staircase steps accuracy down and latency up from what it finds: the box is made of what it found."""
    f = FingerprintSettings(accuracy_backoff=0.05, latency_backoff_ms=0.3)
    assert boundaries([{"min_accuracy": 0.80, "max_latency_ms": 2.5}], f) == [
        pytest.approx({"min_accuracy": 0.85, "max_latency_ms": 2.2})]


def test_bad_settings_and_missing_corners_raise():
    with pytest.raises(ConfigError, match="open_side_ranges"):
        BoxCentreSettings(open_side_ranges=-0.5)
    with pytest.raises(ConfigError, match="verify_queries"):
        BoxCentreSettings(verify_queries=0)
    with pytest.raises(ConfigError, match="ranks 1..3"):
        box_centre(CORNERS[:2], INFO, 3)


@pytest.mark.parametrize("rank", [1, 2, 3, 4])
def test_centre_survives_metric_noise_where_the_corner_does_not_in_process(rank):
    """The router's own selector with Laplace noise: the centre is served, by the victim, nearly always; the
    corner is rejected about three times in four (noise up in accuracy or down in latency leaves the box)."""
    noisy = Selector(ZOO, make_policy("pareto_uniform"), [LAPLACE], seed=7)
    centre = served_by(noisy, box_centre(CORNERS, INFO, rank), 400)
    corner = served_by(noisy, CORNERS[rank - 1], 400)
    assert centre.count(RANKS[rank]) / len(centre) >= 0.9
    assert corner.count(None) / len(corner) >= 0.6


class SelectorOracle:
    """SpecOracle's ask() on a Selector in process: the model's name stands in for its output signature."""

    def __init__(self, selector):
        self.selector, self.queries = selector, 0

    def ask(self, a, l):
        self.queries += 1
        return served_by(self.selector, {"min_accuracy": a, "max_latency_ms": l}, 1)[0]


@pytest.mark.parametrize("rank", [1, 2, 3, 4])
def test_fingerprinting_through_noise_lands_in_the_victims_box(rank):
    """The whole attack in process: noisy staircase (votes, backoffs), centre, verification by signature (the
    narrowest box, a's, is 0.4 ms = 4 noise scales wide: about one answer in seven leaves it)."""
    noisy = Selector(ZOO, make_policy("pareto_uniform"), [LAPLACE], seed=rank)
    r = fingerprint_box_centre(SelectorOracle(noisy), INFO, rank, BoxCentreSettings(fingerprint=NOISY_STAIRCASE))
    assert r.target_signature == RANKS[rank] and r.verified_share >= 0.6
    clean = Selector(ZOO, make_policy("pareto_uniform"), [], seed=0)
    assert set(served_by(clean, r.spec, 20)) == {RANKS[rank]}


def test_fingerprinting_reports_a_rank_beyond_the_front():
    r = fingerprint_box_centre(SelectorOracle(Selector(ZOO, make_policy("pareto_uniform"), [], seed=0)), INFO, 5)
    assert r.spec is None and r.target_signature is None and len(r.corners) == 4


def victim_shares(router, spec, inputs, victim) -> dict:
    """Over one query per input: the victim's share of the answered ones and the share rejected (audit log)."""
    c = consistency(router.url, "demo-attacker-key", router.audit_path, spec, inputs, victim)
    answered = sum(c["served_by"].values())
    return {"victim_of_answered": c["served_by"].get(victim, 0) / max(1, answered),
            "rejected": 1 - answered / len(inputs), "served_by": c["served_by"]}


def test_box_centre_keeps_every_front_victim_through_laplace_metric_noise_live(start_router, manifest, data):
    """Every front model in turn as the victim (the test zoo's front holds two or three models, by its profiled
    latencies): fingerprinted through the noisy router itself, then 200 queries at the centre and 200 at the
    exact corner, the serving model read from the audit log. Catches asking at the corner (most requests
    rejected) and a centre outside the victim's box (another model answers, or nothing does)."""
    router = start_router("noisy", api_keys=DEMO_KEYS, seed=11, policy="pareto_uniform", defenses=[NOISE])
    pool = data.x["attacker_pool"]
    client = RouterClient(router.url, "demo-attacker-key")
    for rank, victim in enumerate(front_by_accuracy(manifest), 1):
        r = fingerprint_box_centre(SpecOracle(client, pool[:1]), client.zoo(), rank,
                                   BoxCentreSettings(fingerprint=NOISY_STAIRCASE))
        assert r.spec is not None and r.verified_share >= 0.8 and r.queries <= 800, (rank, r)
        centre = victim_shares(router, r.spec, pool[1:201], victim.name)
        corner = victim_shares(router, {"min_accuracy": victim.accuracy,
                                        "max_latency_ms": victim.selection_latency_ms}, pool[1:201], victim.name)
        assert centre["victim_of_answered"] >= 0.9 and centre["rejected"] <= 0.1, (rank, r.spec, centre)
        assert corner["rejected"] >= 0.5, (rank, corner)
    client.close()
