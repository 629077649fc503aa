"""The max-rate search's stopping rule and pass/fail, on a system of known capacity (pure: no server)."""

import pytest

from common.errors import ConfigError
from loadtests.max_rate import SearchSettings, judge, search_max_rate


def fake_system(capacity_per_s: float):
    """p99 grows without bound as the rate nears capacity (an M/M/1 queue's p99: ln(100) / (mu - lambda))."""
    def trial(rate, duration_s, i):
        p99 = 4.6 / (capacity_per_s - rate) * 1e3 if rate < capacity_per_s else None
        return {"p99_ms": p99, "goodput": 1.0, "dropped_share": 0.0, "achieved_rate_per_s": rate}
    return trial


def test_the_search_brackets_the_rate_where_p99_meets_the_bound():
    """M/M/1 with mu = 100/s and a 460 ms bound: p99 <= 460 ms while rate <= 90/s. Catches a search that returns
    the last rate tried instead of the highest passing one, one that stops growing after the first pass, and a
    bisection that stops before the stated resolution."""
    s = SearchSettings(p99_ms=460.0, start_rate_per_s=5.0, resolution=0.05, max_trials=20)
    r = search_max_rate(fake_system(100.0), s, log=lambda _: None)
    assert 90.0 / 1.05 <= r["max_rate_per_s"] <= 90.0 <= r["first_failing_rate_per_s"]
    assert (r["first_failing_rate_per_s"] - r["max_rate_per_s"]) / r["max_rate_per_s"] <= 0.05
    assert r["max_rate_per_s"] == max(t["offered_rate_per_s"] for t in r["trials"] if t["passed"])
    assert "within 5%" in r["stopped"] and all("why" in t for t in r["trials"])


def test_the_search_steps_down_and_reports_when_nothing_passes():
    """Catches a search that only grows (a start above capacity would return nothing or the start rate)."""
    r = search_max_rate(fake_system(10.0), SearchSettings(p99_ms=1000.0, start_rate_per_s=80.0), log=lambda _: None)
    assert 4.6 <= r["max_rate_per_s"] <= 5.4 and r["trials"][0]["passed"] is False
    none = search_max_rate(fake_system(0.1), SearchSettings(p99_ms=1.0, start_rate_per_s=4.0), log=lambda _: None)
    assert none["max_rate_per_s"] is None and "no rate passed" in none["stopped"]


def test_dropping_requests_does_not_buy_a_pass():
    """Catches a trial judged by p99 alone: a router refusing half its requests at once answers the rest fast."""
    s = SearchSettings(p99_ms=50.0)
    assert judge({"p99_ms": 10.0, "dropped_share": 0.5, "goodput": 0.5}, s)[0] is False
    assert judge({"p99_ms": 10.0, "dropped_share": 0.005, "goodput": 0.9}, s)[0] is True
    assert judge({"p99_ms": 60.0, "dropped_share": 0.0}, s)[0] is False
    g = SearchSettings(p99_ms=50.0, min_goodput=0.8)
    assert judge({"p99_ms": 10.0, "dropped_share": 0.0, "goodput": 0.7}, g) == (False, "p99 10.00 ms, goodput 0.7 < 0.8")


@pytest.mark.parametrize("bad", [dict(p99_ms=0.0), dict(p99_ms=10.0, min_goodput=1.5),
                                 dict(p99_ms=10.0, start_rate_per_s=0.0), dict(p99_ms=10.0, resolution=0.0)])
def test_bad_search_settings_raise(bad):
    """Catches a search started with settings that cannot end (resolution 0) or cannot pass."""
    with pytest.raises(ConfigError):
        SearchSettings(**bad)


def test_one_stalled_trial_does_not_fail_a_rate():
    """The first trial hits a stall of the machine (p99 far over the bound); the rate is tried again and passes.
    Catches a search that takes one trial's p99 as the rate's verdict (it would stop growing at the start rate)."""
    system = fake_system(100.0)

    def stalled_once(rate, duration_s, i):
        return {"p99_ms": 10_000.0, "dropped_share": 0.0} if i == 0 else system(rate, duration_s, i)

    s = SearchSettings(p99_ms=460.0, start_rate_per_s=5.0, resolution=0.05, max_trials=20)
    r = search_max_rate(stalled_once, s, log=lambda _: None)
    assert r["trials"][0]["passed"] is False and r["trials"][1]["passed"] is True
    assert 90.0 / 1.05 <= r["max_rate_per_s"] <= 90.0
    from dataclasses import replace

    unconfirmed = search_max_rate(stalled_once, replace(s, confirm_failures=False), log=lambda _: None)
    assert unconfirmed["max_rate_per_s"] is None or unconfirmed["max_rate_per_s"] < 5.0
