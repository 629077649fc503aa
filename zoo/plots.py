"""PNG figures of a zoo's profile (matplotlib, no display needed): layout only, no statistics."""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_ticks(axis) -> None:
    """Log axes labelled 1, 2, 4 ... rather than 2^1 or 2x10^0."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def accuracy_latency(report: dict, path: Path) -> Path:
    """Accuracy vs selection latency, manifest and observed with 95% error bars, each front as a line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, ci, front_key, style, label in (
            ("manifest_ms", "manifest_ci95_ms", "pareto_manifest", "o", "manifest"),
            ("observed_ms", "observed_ci95_ms", "pareto_observed", "s", "observed")):
        rows = report["models"]
        x = [r[key] for r in rows]
        err = [[r[key] - r[ci][0] for r in rows], [r[ci][1] - r[key] for r in rows]]
        ax.errorbar(x, [r["accuracy"] for r in rows], xerr=err, fmt=style, capsize=3, label=label, alpha=0.8)
        front = sorted((r[key], r["accuracy"]) for r in rows if r[front_key])
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", alpha=0.5)
    for r in report["models"]:
        ax.annotate(r["model"], (r["observed_ms"], r["accuracy"]), fontsize=7, xytext=(4, -10),
                    textcoords="offset points")
    ax.set_xscale("log")
    _plain_ticks(ax.xaxis)
    ax.set_xlabel(f"selection latency, ms ({report['selection']}), log scale")
    ax.set_ylabel("accuracy (test split)")
    ax.set_title("accuracy vs latency: manifest and this host (95% CI)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def latency_vs_concurrency(observed: dict[str, dict], path: Path, batch_size: int = 1) -> Path:
    """p99 latency (95% CI) against concurrency per model and path, in Model Analyzer's style."""
    plt = _plt()
    paths = sorted({c["path"] for o in observed.values() for c in o["cells"]})
    fig, axes = plt.subplots(1, len(paths), figsize=(6 * len(paths), 4.2), squeeze=False)
    for ax, p in zip(axes[0], paths):
        for model, o in observed.items():
            cells = sorted((c for c in o["cells"] if c["path"] == p and c["batch_size"] == batch_size),
                           key=lambda c: c["concurrency"])
            if not cells:
                continue
            xs = [c["concurrency"] for c in cells]
            ys = [c["p99_ms"] for c in cells]
            err = [[c["p99_ms"] - c["ci95"]["p99_ms"][0] for c in cells], [c["ci95"]["p99_ms"][1] - c["p99_ms"] for c in cells]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=model)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_ticks(ax.xaxis)
        _plain_ticks(ax.yaxis)
        ax.set_xlabel("concurrency (closed-loop clients)")
        ax.set_ylabel(f"p99 latency, ms (batch {batch_size})")
        ax.set_title(f"{p}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
