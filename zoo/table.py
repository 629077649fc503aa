"""The zoo as a terminal table: each model's accuracy, selection figure with its interval, and profiled cells."""

from __future__ import annotations

from common.tables import format_table


def _grid_edges(manifest) -> tuple[int, int]:
    """The highest profiled concurrency and the largest profiled batch size (every model has the same grid)."""
    cells = manifest.models[0].latency.cells
    return max(c.concurrency for c in cells), max(c.batch_size for c in cells)


FRONT_LEGEND = ("front: a model leaves it only when another is at least as accurate and faster beyond both 95% "
                "intervals;\n  margin: no model at least as accurate has an overlapping interval; within noise: one "
                "has (which of the two looks faster is noise)")


def front_label(m) -> str:
    """``margin``/``within noise`` for a front model (zoo/pareto.py), ``yes`` in manifests from before the marks."""
    if not m.pareto:
        return "no"
    return {"margin": "margin", "within_noise": "within noise", None: "yes"}[m.front_margin]


def zoo_rows(manifest) -> list[dict]:
    sel = manifest.profile.selection
    top_c, big_b = _grid_edges(manifest)
    rows = []
    for m in sorted(manifest.models, key=lambda m: m.selection_latency_ms):
        lat, s = m.latency, m.latency.selection
        cell = lambda path, b, c, key: getattr(lat.cell(path, b, c), key, "-")  # "-": a cell not profiled
        t1 = lat.triton[0] if lat.triton else None
        rows.append(dict(name=m.name, params=m.parameters, accuracy=m.accuracy,
                         untrained="-" if m.untrained_accuracy is None else m.untrained_accuracy, sel=m.selection_latency_ms,
                         ci=f"[{s.ci95_ms[0]:.3f}, {s.ci95_ms[1]:.3f}]", spread=s.spread_ms,
                         d50=cell("direct", 1, 1, "p50_ms"), r99=cell("router", 1, 1, "p99_ms"),
                         d99c=cell(sel.path, 1, top_c, "p99_ms"), big=cell("direct", big_b, 1, "p99_ms"),
                         compute="-" if t1 is None else t1.compute_infer_us / 1e3, pareto=front_label(m)))
    return rows


def zoo_columns(manifest) -> list[tuple[str, str]]:
    sel = manifest.profile.selection
    top_c, big_b = _grid_edges(manifest)
    encoder = manifest.zoo.kind == "encoder"
    return [("name", "model"), ("params", "params"), ("accuracy", "probe accuracy" if encoder else "accuracy")] + (
        [("untrained", "untrained probe")] if encoder else []) + [
            ("sel", f"selection ms (p{sel.percentile} b{sel.batch_size} c{sel.concurrency} {sel.path})"),
            ("ci", "95% CI"), ("spread", "run spread ms"), ("d50", "direct p50 b1"), ("r99", "router p99 b1"),
            ("d99c", f"{sel.path} p99 b1 c{top_c}"), ("big", f"direct p99 b{big_b}"),
            ("compute", "triton compute ms b1"), ("pareto", "front")]


def zoo_table(manifest) -> str:
    from .pareto import format_check

    table = format_table(zoo_rows(manifest), zoo_columns(manifest)) + "\n" + FRONT_LEGEND
    return table + "\n\nfront check (" + manifest.profile.selection_describe() + "):\n" + format_check(manifest.profile.front_check)
