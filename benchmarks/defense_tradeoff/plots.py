"""The trade-off run's two figures: per victim, the strongest attacker's fidelity and accuracy against benign
goodput with the defenses' Pareto frontier and the PSML paper's point; and benign p99 cost against protection."""

from __future__ import annotations

from pathlib import Path

from attacks import psml_paper

from .scoring import pareto_frontier


def plots(rows: list[dict], out_dir: Path) -> list[str]:
    """Per victim (one row of panels each): the strongest attacker's fidelity and accuracy against benign goodput
    with the defenses' frontier and the paper's point; then benign p99 cost against protection."""
    from zoo.plots import _plt

    plt, paths = _plt(), []
    victims = list(dict.fromkeys(r["victim"] for r in rows))
    fig, axes = plt.subplots(len(victims), 2, figsize=(12, 4.8 * len(victims)), squeeze=False)
    for row_axes, victim in zip(axes, victims):
        mine = [r for r in rows if r["victim"] == victim]
        base = next(r for r in mine if r["config"] == "none")
        for ax, metric in zip(row_axes, ("fidelity", "accuracy")):
            pts = [(r["goodput"], r[metric], r["config"]) for r in mine]
            for g, v, name in pts:
                ax.scatter(g, v, s=25)
                ax.annotate(name, (g, v), fontsize=6, xytext=(3, 3), textcoords="offset points")
            front = pareto_frontier(pts)
            ax.plot([p[0] for p in front], [p[1] for p in front], "k--", alpha=0.5, label="defense frontier")
            paper = psml_paper.DEFENSE.as_dict()
            ax.scatter([paper["min_goodput"]], [base[metric] + paper["d_" + metric]], marker="*", s=160, c="red",
                       label=f"PSML paper ({paper['d_' + metric]:+.1%} at goodput {paper['min_goodput']})")
            ax.set_xlabel("benign goodput (end to end)")
            ax.set_ylabel(f"strongest attacker's surrogate {metric}")
            ax.set_title(f"victim {victim}", fontsize=9)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(str(out_dir / "defense_tradeoff.png"))
    fig.savefig(paths[-1], dpi=130)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in rows:
        base = next(b for b in rows if b["config"] == "none" and b["victim"] == r["victim"])
        x, y = base["fidelity"] - r["fidelity"], r["benign_p99_ms"] / base["benign_p99_ms"]
        ax.scatter(x, y, s=25)
        ax.annotate(f"{r['config']} ({r['victim']})", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("protection: fidelity points taken from the strongest attacker")
    ax.set_ylabel("benign p99 latency / undefended")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(str(out_dir / "defense_latency_cost.png"))
    fig.savefig(paths[-1], dpi=130)
    plt.close(fig)
    return paths
