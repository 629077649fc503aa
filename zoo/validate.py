"""``psml zoo validate``: does a zoo's latency profile still hold on this host?

Re-measures every model with the profile's own code and settings (zoo.profiling), then compares, per model,
the manifest's selection figure with the observed one. Verdicts, one line each in LoadGen's style:
- a model is INVALID when the observed figure's whole 95% interval lies outside the manifest's own 95%
  interval widened by ``tolerance`` (relative) on both sides: drift beyond noise, not noise;
- the front is INVALID when the Pareto front computed from the observed figures and their intervals, by the
  build's own rule (zoo/pareto.py; accuracies are the manifest's), differs from the manifest's front.
Drift is a verdict, never an error. Pure comparison here; measuring and plotting live beside it.
"""

from __future__ import annotations

from .pareto import FrontPoint, pareto_front_with_intervals
from .profile import figure_from_cell

DEFAULT_TOLERANCE = 0.25


def compare(manifest, observed: dict[str, dict], tolerance: float = DEFAULT_TOLERANCE) -> dict:
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance is a relative drift in (0, 1), got {tolerance}")
    fig = manifest.profile.selection
    models = []
    for m in manifest.models:
        obs = observed[m.name]
        sel = _observed_figure(obs, fig)
        # Both figures are estimates: drift is a verdict only when the two 95% intervals stay apart even after
        # the manifest's is widened by the tolerance (a tail percentile from a few hundred requests is unsure).
        man_lo, man_hi = m.latency.selection.ci95_ms
        lo, hi = min(man_lo, m.selection_latency_ms) * (1 - tolerance), max(man_hi, m.selection_latency_ms) * (1 + tolerance)
        beyond = sel["ci95_ms"][0] > hi or sel["ci95_ms"][1] < lo
        cells = []
        for c in obs["cells"]:
            ref = m.latency.cell(c["path"], c["batch_size"], c["concurrency"])
            if ref is not None:
                cells.append({"path": c["path"], "batch_size": c["batch_size"], "concurrency": c["concurrency"],
                              "manifest_p99_ms": ref.p99_ms, "manifest_ci95": ref.ci95["p99_ms"],
                              "observed_p99_ms": c["p99_ms"], "observed_ci95": c["ci95"]["p99_ms"],
                              "drift": c["p99_ms"] / ref.p99_ms - 1})
        models.append({"model": m.name, "accuracy": m.accuracy, "manifest_ms": m.selection_latency_ms,
                       "manifest_ci95_ms": m.latency.selection.ci95_ms, "observed_ms": sel["value_ms"],
                       "observed_ci95_ms": sel["ci95_ms"], "observed_spread_ms": sel["spread_ms"],
                       "drift": sel["value_ms"] / m.selection_latency_ms - 1, "valid": not beyond,
                       "pareto_manifest": m.pareto, "cells": cells})
    old_front = {m.name for m in manifest.models if m.pareto}
    new_front = pareto_front_with_intervals({r["model"]: FrontPoint(r["accuracy"], r["observed_ms"],
                                                                    tuple(r["observed_ci95_ms"])) for r in models})
    for r in models:
        r["pareto_observed"] = r["model"] in new_front
    return {"tolerance": tolerance, "selection": manifest.profile.selection_describe(), "models": models,
            "front": {"manifest": sorted(old_front), "observed": sorted(new_front), "valid": old_front == new_front},
            "valid": all(r["valid"] for r in models) and old_front == new_front}


def _observed_figure(obs: dict, fig) -> dict:
    """The observed value of the manifest's selection figure: its own rounds when the same figure was measured
    in rounds, otherwise the cell it names (e.g. after --update chose a new figure)."""
    cell = figure_from_cell(obs, fig)
    sel = obs.get("selection")
    return sel if sel is not None and abs(sel["value_ms"] - cell["value_ms"]) < 1e-12 else cell


def verdict_lines(report: dict) -> list[str]:
    tol = report["tolerance"]
    lines = []
    for r in report["models"]:
        lo, hi = r["observed_ci95_ms"]
        lines.append(f"{'VALID  ' if r['valid'] else 'INVALID'} {r['model']}: manifest {r['manifest_ms']:.3f} ms, "
                     f"observed {r['observed_ms']:.3f} ms [95% CI {lo:.3f}, {hi:.3f}], drift {100 * r['drift']:+.1f}% "
                     f"(tolerance +/-{100 * tol:.0f}%)")
    f = report["front"]
    lines.append(f"{'VALID  ' if f['valid'] else 'INVALID'} front: manifest {f['manifest']}, observed {f['observed']}")
    return lines
