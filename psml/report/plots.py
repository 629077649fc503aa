"""The report's figures (matplotlib PNGs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

def fingerprint_plot(ranks: list[dict], path: Path) -> None:
    from zoo.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = np.arange(len(ranks))
    for i, method in enumerate(("staircase", "grid_scan")):
        ax.bar(x + (i - 0.5) * 0.38, [r[method]["queries"] for r in ranks], 0.38, label=method)
    ax.set_xticks(x, [f"rank {r['rank']}\n{r['target']}" for r in ranks], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("queries to a specification that reaches the target")
    ax.set_title("fingerprinting every front rank")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


SETTING_ORDER = ("explicit", "fingerprinted", "naive")


def setting_bars(ax, x: np.ndarray, i: int, setting: str, metric: str, rows: list[dict | None]) -> None:
    """One setting's bars (the i-th of SETTING_ORDER) at positions ``x``, a summary row per position (None: no
    bar), each with its 95% interval over seeds as the error bar."""
    vals, errs = [], [[], []]
    for r in rows:
        v = r[metric] if r and r[metric] is not None else np.nan
        ci = r.get(f"{metric}_ci95") if r else None
        vals.append(v)
        errs[0].append(v - ci[0] if ci else 0)
        errs[1].append(ci[1] - v if ci else 0)
    ax.bar(x + (i - 1) * 0.27, vals, 0.27, yerr=errs, capsize=3, label=setting)


def extraction_plot(summary: list[dict], path: Path) -> None:
    from zoo.plots import _plt

    plt = _plt()
    groups = list(dict.fromkeys((r["budget"], r["labels_only"]) for r in summary))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("accuracy", "fidelity")):
        x = np.arange(len(groups))
        for i, setting in enumerate(SETTING_ORDER):
            setting_bars(ax, x, i, setting, metric, [next((r for r in summary if (r["budget"], r["labels_only"]) == g
                                                          and r["setting"] == setting), None) for g in groups])
        ax.set_xticks(x, [f"{b}{' labels' if lo else ''}" for b, lo in groups])
        lo = min((r[metric] for r in summary if r[metric] is not None), default=0)
        ax.set_ylim(max(0, lo - 0.1), 1)
        ax.set_ylabel(f"surrogate {metric} (95% CI over seeds)")
        ax.legend(fontsize=8)
    fig.suptitle("Knockoff extraction of the most accurate model")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


