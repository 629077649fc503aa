"""Plain-text tables for the terminal (and for notes): no statistics here, only layout."""

from __future__ import annotations


def format_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """``columns``: (key, header) pairs; floats are shown with 3 significant decimals."""

    def cell(v) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, int):
            return f"{v:,d}"
        return str(v)

    cells = [[cell(r.get(k, "")) for k, _ in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h) in enumerate(columns)]
    line = lambda vals: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line([h for _, h in columns]), line(["-" * w for w in widths])] + [line(c) for c in cells])


def zoo_rows(manifest) -> list[dict]:
    rows = []
    for m in sorted(manifest.models, key=lambda m: m.selection_latency_ms):
        b1, bn = m.latency.client[0], m.latency.client[-1]
        t1 = m.latency.triton[0]
        rows.append(dict(name=m.name, params=m.parameters, accuracy=m.accuracy, p50=b1.p50_ms, p99=b1.p99_ms,
                         bn=f"{bn.p50_ms:.3f}/{bn.p99_ms:.3f} (b{bn.batch_size})",
                         compute=t1.compute_infer_us / 1e3, queue=t1.queue_us / 1e3, pareto=m.pareto))
    return rows


ZOO_COLUMNS = [("name", "model"), ("params", "params"), ("accuracy", "accuracy"), ("p50", "p50 ms b1"),
               ("p99", "p99 ms b1"), ("bn", "p50/p99 ms"), ("compute", "triton compute ms"),
               ("queue", "triton queue ms"), ("pareto", "pareto")]


def zoo_table(manifest) -> str:
    return format_table(zoo_rows(manifest), ZOO_COLUMNS)
