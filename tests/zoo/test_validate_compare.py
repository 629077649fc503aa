"""zoo.validate.compare on the test zoo's real manifest with observed profiles made up around it (pure logic)."""

import pytest

from zoo.validate import compare, verdict_lines


def _observed(manifest, scale: dict[str, float] | float = 1.0, width: float | None = None):
    """Each model's figures scaled by ``scale``; its interval +/- ``width`` (relative) around the figure, or with
    ``None`` the manifest's own interval scaled alike (the front is decided with the intervals)."""
    out = {}
    for m in manifest.models:
        k = scale if isinstance(scale, float) else scale.get(m.name, 1.0)
        v = m.selection_latency_ms * k
        ci = [x * k for x in m.latency.selection.ci95_ms] if width is None else [v * (1 - width), v * (1 + width)]
        cells = [c.model_dump() | {"p99_ms": c.p99_ms * k} for c in m.latency.cells]
        out[m.name] = {"cells": cells, "selection": {"value_ms": v, "ci95_ms": ci,
                                                     "round_values_ms": [v, v], "round_spread_ms": 0.0,
                                                     "spread_ms": 0.0}}
    return out


def test_same_profile_is_valid(manifest):
    r = compare(manifest, _observed(manifest))
    assert r["valid"] and all(m["valid"] and abs(m["drift"]) < 1e-12 for m in r["models"])
    assert r["front"]["manifest"] == r["front"]["observed"]


def test_drift_beyond_tolerance_and_noise_is_invalid(manifest):
    # every model 1.5x beyond the top of its own manifest interval widened by the tolerance
    far = {m.name: 1.5 * 1.25 * max(m.latency.selection.ci95_ms[1], m.selection_latency_ms) / m.selection_latency_ms
           for m in manifest.models}
    r = compare(manifest, _observed(manifest, far, width=0.05), tolerance=0.25)
    assert not r["valid"] and not any(m["valid"] for m in r["models"])
    assert all(line.startswith("INVALID") for line in verdict_lines(r)[:-1])


def test_the_band_is_the_manifest_interval_widened_by_the_tolerance(manifest):
    m = manifest.models[0]
    hi = max(m.latency.selection.ci95_ms[1], m.selection_latency_ms) * 1.25
    just_above = hi * 1.02 / 0.95 / m.selection_latency_ms  # observed interval starts 2% above the band
    just_inside = hi * 0.98 / 0.95 / m.selection_latency_ms
    assert not compare(manifest, _observed(manifest, {m.name: just_above}, width=0.05))["models"][0]["valid"]
    assert compare(manifest, _observed(manifest, {m.name: just_inside}, width=0.05))["models"][0]["valid"]


def test_drift_within_the_interval_is_not_a_verdict(manifest):
    # +30% point estimate, but the interval reaches back inside the +/-25% band: noise, not drift
    r = compare(manifest, _observed(manifest, 1.3, width=0.2), tolerance=0.25)
    assert all(m["valid"] for m in r["models"])


def test_a_changed_front_is_invalid_even_when_every_model_is_within_tolerance(manifest):
    front = [m for m in manifest.models if m.pareto]
    fastest = min(front, key=lambda m: m.selection_latency_ms)
    slowest = max(manifest.models, key=lambda m: m.selection_latency_ms)
    # the fastest front model slows past the slowest model: it leaves the front (tolerance wide open)
    factor = 1.5 * slowest.selection_latency_ms / fastest.selection_latency_ms
    r = compare(manifest, _observed(manifest, {fastest.name: factor}, width=0.05), tolerance=0.99)
    assert not r["front"]["valid"] and not r["valid"]
    assert fastest.name in r["front"]["manifest"] and fastest.name not in r["front"]["observed"]


def test_bad_tolerance_is_refused(manifest):
    with pytest.raises(ValueError, match="relative drift"):
        compare(manifest, _observed(manifest), tolerance=1.5)
