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
