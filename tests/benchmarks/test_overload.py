"""benchmarks.overload's pure parts: its settings' checks and one cell's figures from recorded requests."""

import pytest

from benchmarks.overload import OverloadSettings, cell_figures
from common.errors import ConfigError


@pytest.mark.parametrize("bad", [{"concurrencies": ()}, {"concurrencies": (8, 0)}, {"duration_s": 0.0},
                                 {"slo_ms": -1.0}, {"max_in_flight": 0}])
def test_bad_settings_raise_a_sentence(bad):
    """Catches settings accepted silently (a zero duration would divide by zero after the servers started)."""
    with pytest.raises(ConfigError, match="must|give"):
        OverloadSettings(**bad)


def test_cell_figures_count_shed_apart_from_errors_and_time_only_answers():
    """Two answers (one within the SLO), a 503, a 429 and a failed connection in 2 s. Catches goodput counted
    over answers instead of all requests, a shed request counted as an error (or the reverse), percentiles taken
    over refused requests' times, and the old result keys renamed."""
    results = [(10.0, 200), (40.0, 200), (1.0, 503), (2.0, 429), (900.0, 0)]
    f = cell_figures(results, 2.0, 25.0, [3.0, 5.0])
    assert f["requests"] == 5 and f["answered_200"] == 2 and f["shed"] == 2 and f["errors"] == 1
    assert f["goodput_per_s"] == 0.5 and f["goodput_share"] == 0.2 and f["offered_per_s"] == 2.5
    assert 10.0 <= f["p50_ms"] <= 40.0 and f["p99_ms"] <= 40.0 and f["max_ms"] == 900.0
    assert f["healthz_max_ms"] == 5.0 and f["healthz_p50_ms"] == 4.0
    assert OverloadSettings(honour_retry_after=False).as_dict()["ignore_retry_after"] is True
