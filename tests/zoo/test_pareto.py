import numpy as np
import pytest

from zoo.pareto import FrontPoint, front_marks, pareto_front, pareto_front_with_intervals


def test_dominated_models_are_off_the_front():
    pts = {"fast": (0.3, 1.0), "mid": (0.7, 2.0), "slow": (0.95, 5.0), "bad": (0.6, 3.0), "twin": (0.7, 2.0)}
    assert pareto_front(pts) == {"fast", "mid", "slow", "twin"}


def test_equal_accuracy_slower_is_dominated():
    assert pareto_front({"a": (0.9, 1.0), "b": (0.9, 1.5)}) == {"a"}


def test_front_check_passes_a_well_separated_ladder():
    from zoo.pareto import front_check

    ladder = {"a": (0.60, 1.0, 0.05), "b": (0.80, 1.6, 0.05), "c": (0.90, 2.6, 0.1), "d": (0.98, 5.5, 0.2)}
    assert all(line["valid"] for line in front_check(ladder))


def test_front_check_flags_each_kind_of_crowding():
    from zoo.pareto import front_check

    def invalid(models):
        return {l["check"].split(" ")[0] + (" gap" if "spread" in l["check"] else "") for l in front_check(models)
                if not l["valid"]}

    # neighbours 10% apart in latency, within noise, 1 point apart in accuracy, and a 3-model front spanning 1.2x
    assert invalid({"a": (0.90, 1.0, 0.01), "b": (0.91, 1.1, 0.2), "c": (0.99, 1.2, 0.01)}) == {
        "front", "latency", "latency gap", "accuracy"}
    # far enough apart in ratio, but the gap is within 3x the run-to-run spread: still crowded
    lines = front_check({"a": (0.5, 1.0, 0.4), "b": (0.7, 2.0, 0.4), "c": (0.8, 3.0, 0.1), "d": (0.9, 6.0, 0.1)})
    assert [l["check"] for l in lines if not l["valid"]] == ["latency gap b-a over run-to-run spread",
                                                              "latency gap c-b over run-to-run spread"]


# ---- the front decided with the selection figures' intervals ------------------------------------------------

def _issue_zoo(mlp_small_ms: float, mlp_small_ci95: tuple[float, float]) -> dict[str, FrontPoint]:
    """The default zoo as one build measured it (issue): mlp_small's tail-noisy p99 against mlp_medium's."""
    return {"mlp_small": FrontPoint(0.62, mlp_small_ms, mlp_small_ci95),
            "mlp_medium": FrontPoint(0.78, 1.79, (1.61, 2.31)),
            "vgg_medium": FrontPoint(0.90, 4.20, (3.90, 4.60)),
            "vgg_xlarge": FrontPoint(0.95, 11.0, (10.2, 12.1))}


def _plain(points: dict[str, FrontPoint]) -> set[str]:
    return pareto_front({n: (p.accuracy, p.latency_ms) for n, p in points.items()})


def test_a_tail_noisy_p99_does_not_decide_membership():
    """The issue's build: mlp_small 2.49 ms [1.55, 3.05] against the more accurate mlp_medium's 1.79 ms with an
    overlapping interval. Catches the plain point rule (it drops mlp_small) and a rule that asks only whether
    the other model might be faster (its low end below ours: 1.61 < 3.05), i.e. the interval on the wrong side."""
    pts = _issue_zoo(2.49, (1.55, 3.05))
    assert _plain(pts) == {"mlp_medium", "vgg_medium", "vgg_xlarge"}  # what the build used to write
    assert pareto_front_with_intervals(pts) == set(pts)
    assert front_marks(pts)["mlp_small"] == "within_noise"


def test_two_builds_that_swap_the_point_estimates_give_the_same_front_and_marks():
    """The next build measured mlp_small faster than mlp_medium; the intervals still overlap. Catches the plain
    rule (fronts of 3, then 4 models) and a mark taken from the point order ('margin' whenever the point rule
    keeps a model), which would call mlp_small 'margin' in one build and 'within_noise' in the other."""
    first, second = _issue_zoo(2.49, (1.55, 3.05)), _issue_zoo(1.60, (1.40, 2.10))
    assert _plain(first) != _plain(second)
    assert pareto_front_with_intervals(first) == pareto_front_with_intervals(second) == set(first)
    assert front_marks(first) == front_marks(second)


def test_a_clear_domination_still_removes_the_model():
    """At least as accurate and faster beyond both intervals: off the front, whether more accurate or equally
    accurate. Catches a rule that never removes anything (e.g. demanding disjoint intervals *and* strictly
    higher accuracy, or widening intervals until everything overlaps)."""
    more = {"slow_bad": FrontPoint(0.70, 3.0, (2.8, 3.3)), "fast_good": FrontPoint(0.80, 1.0, (0.9, 1.2))}
    assert pareto_front_with_intervals(more) == {"fast_good"} and front_marks(more) == {"fast_good": "margin"}
    equal = {"slow": FrontPoint(0.80, 3.0, (2.8, 3.3)), "fast": FrontPoint(0.80, 1.0, (0.9, 1.2))}
    assert pareto_front_with_intervals(equal) == {"fast"}


def test_both_intervals_must_separate():
    """The faster model's upper bound must lie below the slower one's lower bound. Catches comparing only one
    interval: the other's point below our interval (0.9 < 1.0, but its interval reaches 1.1), or its interval
    below our point (its 1.1 < our 1.2, but our interval reaches down to 1.0)."""
    pts = {"a": FrontPoint(0.70, 1.2, (1.0, 1.4)), "b": FrontPoint(0.80, 0.9, (0.7, 1.1))}
    assert pareto_front_with_intervals(pts) == {"a", "b"}
    assert front_marks(pts) == {"a": "within_noise", "b": "margin"}
    apart = {"a": FrontPoint(0.70, 1.2, (1.11, 1.4)), "b": FrontPoint(0.80, 0.9, (0.7, 1.1))}
    assert pareto_front_with_intervals(apart) == {"b"}


def test_a_clearly_faster_less_accurate_model_stays_on_the_front():
    """A ladder: each model more accurate and clearly slower than the one before. Catches the comparison turned
    around (removing a model that is clearly *faster* than a more accurate one) and a plain front check that
    ignores accuracy. Every model is on the front by a margin."""
    ladder = {"a": FrontPoint(0.60, 1.0, (0.9, 1.1)), "b": FrontPoint(0.80, 2.0, (1.8, 2.3)),
              "c": FrontPoint(0.95, 5.0, (4.6, 5.5))}
    assert front_marks(ladder) == {"a": "margin", "b": "margin", "c": "margin"}


def test_ties():
    """Equal accuracy and the same figure: both stay, each within noise of the other (the point rule keeps twins
    too). Equal accuracy and a slower but overlapping figure: both stay (the point rule drops the slower one).
    Equal figures and higher accuracy: the less accurate one stays within noise, since it is not faster beyond
    both intervals. Catches '<=' between the bounds (touching intervals counted as apart) and a model dominating itself."""
    twins = {"a": FrontPoint(0.9, 1.0, (0.9, 1.1)), "b": FrontPoint(0.9, 1.0, (0.9, 1.1))}
    assert front_marks(twins) == {"a": "within_noise", "b": "within_noise"}
    assert front_marks({"only": FrontPoint(0.9, 1.0, (1.0, 1.0))}) == {"only": "margin"}
    close = {"a": FrontPoint(0.9, 1.0, (0.9, 1.1)), "b": FrontPoint(0.9, 1.05, (0.95, 1.2))}
    assert _plain(close) == {"a"} and pareto_front_with_intervals(close) == {"a", "b"}
    same_speed = {"worse": FrontPoint(0.8, 1.0, (0.9, 1.1)), "better": FrontPoint(0.9, 1.0, (0.9, 1.1))}
    assert front_marks(same_speed) == {"worse": "within_noise", "better": "margin"}
    touching = {"a": FrontPoint(0.9, 1.2, (1.1, 1.3)), "b": FrontPoint(0.9, 1.0, (0.9, 1.1))}
    assert pareto_front_with_intervals(touching) == {"a", "b"}  # bounds that meet are not "beyond"


def test_margin_needs_no_at_least_as_accurate_model_within_noise():
    """A less accurate model overlapping ours does not make ours 'within noise' (it cannot dominate us); a more
    accurate one overlapping ours does, even when its point estimate is slower. Catches marks that count every
    overlapping neighbour, and marks that look only at the point order."""
    pts = {"fast": FrontPoint(0.60, 1.00, (0.9, 1.15)), "mid": FrontPoint(0.80, 1.10, (1.0, 1.3)),
           "slow": FrontPoint(0.95, 4.00, (3.5, 4.5))}
    assert front_marks(pts) == {"fast": "within_noise", "mid": "margin", "slow": "margin"}


def test_the_interval_front_contains_the_point_front():
    """On random zoos (seeded), a model the interval rule removes is one the point rule removes too; with
    zero-width intervals the two rules agree. Catches any rule that removes on overlap, and one that never
    removes anything."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 7))
        acc, lat = rng.uniform(0.5, 1.0, n).round(2), rng.uniform(1.0, 10.0, n)
        width = rng.uniform(0.0, 1.0, n)
        pts = {f"m{i}": FrontPoint(acc[i], lat[i], (lat[i] - width[i], lat[i] + width[i])) for i in range(n)}
        assert _plain(pts) <= pareto_front_with_intervals(pts)
        narrow = {k: FrontPoint(p.accuracy, p.latency_ms, (p.latency_ms, p.latency_ms)) for k, p in pts.items()}
        assert pareto_front_with_intervals(narrow) == _plain(narrow)  # the latencies are distinct


def test_an_interval_that_misses_its_figure_is_widened_and_a_reversed_one_refused():
    """A percentile-bootstrap interval can miss its own figure: the rule uses the interval widened to contain it
    (else a model could be 'beyond' an interval that excludes its own measurement). A reversed interval is a
    caller's mistake, refused with a sentence."""
    p = FrontPoint(0.9, 1.3, (1.0, 1.2))
    assert (p.low_ms, p.high_ms) == (1.0, 1.3)
    assert FrontPoint(0.9, 0.8, (1.0, 1.2)).low_ms == 0.8
    with pytest.raises(ValueError, match="from low to high"):
        FrontPoint(0.9, 1.0, (1.2, 0.8))
