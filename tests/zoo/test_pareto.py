from zoo.pareto import pareto_front


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
