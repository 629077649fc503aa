from zoo.pareto import pareto_front


def test_dominated_models_are_off_the_front():
    pts = {"fast": (0.3, 1.0), "mid": (0.7, 2.0), "slow": (0.95, 5.0), "bad": (0.6, 3.0), "twin": (0.7, 2.0)}
    assert pareto_front(pts) == {"fast", "mid", "slow", "twin"}


def test_equal_accuracy_slower_is_dominated():
    assert pareto_front({"a": (0.9, 1.0), "b": (0.9, 1.5)}) == {"a"}
