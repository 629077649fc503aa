"""``psml report`` on an encoder zoo: the extraction and defense steps, claims and sections of issue 12's seed.

Steps (after the zoo and fingerprint steps every report runs):
- encoder_extraction: direct extraction (MSE, InfoNCE, SoftNN) of the most accurate encoder in the explicit /
  fingerprinted / naive settings x budgets x seeds (psml/cli_encoder_attack.py);
- encoder_defense: embedding noise and B4B against benign clients' downstream accuracy and the extraction they
  stop (benchmarks/encoder_defenses.py).
Claims (Dziedzic et al., ICML 2022, as the seed states them; B4B, NeurIPS 2023):
- extraction reaches >= 90% of the victim's downstream accuracy with fewer queries than 1/5 of its training set;
- fingerprinted extraction within 1% of explicit (PSML's claim, here on encoders);
- direct extraction's best loss is a contrastive one (InfoNCE on ImageNet, SoftNN on CIFAR-10 in the paper),
  per budget under 1/5 of the training set;
- output noise does not protect an encoder at a cost benign clients can bear (the seed: defenses built for
  classifiers transfer badly);
- B4B: the stolen encoder loses at least 5 points while benign clients with a narrow task lose at most 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attacks import psml_paper
from common.errors import ConfigError
from common.stats import mean_ci95

from common.verdict import from_bool as _verdict

from .plots import SETTING_ORDER, setting_bars

RATIO_TARGET = 0.90  # of the victim's downstream accuracy
QUERY_SHARE = 0.2  # of the victim's training set
B4B_ATTACKER_DROP = -0.05  # stolen accuracy at least 5 points lower ...
B4B_BENIGN_COST = -0.01  # ... while narrow benign clients lose at most 1 point


def extraction_step(zoo_dir: Path, manifest, data, s, log):
    def run(folder: Path) -> dict:
        from attacks.encoder_extraction import EncoderExtractionSettings
        from stack.loopback import router_for, triton_for

        from ..cli_encoder_attack import extract_encoders_and_score

        base = EncoderExtractionSettings(surrogate=s.encoder_surrogate, epochs=s.encoder_epochs)
        with triton_for(zoo_dir, folder) as triton, router_for(zoo_dir, folder, triton) as router:
            out = extract_encoders_and_score(zoo_dir, manifest, data, triton, router, list(s.encoder_budgets),
                                             list(s.seeds), list(s.encoder_losses), base, "attacker_pool",
                                             log=lambda m: None)
        for p in folder.iterdir():  # server logs and settings are not part of the report
            if p.is_file():
                p.unlink()
        extraction_plot(out["summary"], folder / "encoder_extraction.png", out["victim_probe_accuracy"])
        return out | {"extraction": base.as_dict()}
    return run


def defense_step(zoo_dir: Path, s, log):
    def run(folder: Path) -> dict:
        from dataclasses import replace

        from benchmarks.encoder_defenses import QUICK, EncoderDefenseSettings
        from benchmarks.encoder_defenses import plot as plot_defenses
        from benchmarks.encoder_defenses import run as run_defenses

        base = QUICK if s.encoder_defense_quick else EncoderDefenseSettings()
        ds = replace(base, zoo_dir=zoo_dir, configs=tuple(s.encoder_defense_configs), seeds=tuple(s.seeds),
                     budget_samples=s.encoder_defense_budget)
        out = run_defenses(ds, log=lambda *_: None)
        plot_defenses(out["rows"], folder / "encoder_defenses.png", out["victim_probe_accuracy"])
        return {k: out[k] for k in ("victim", "victim_probe_accuracy", "spec", "benign_requirements", "settings",
                                    "rows", "victim_training_set")} | {
            "served_by": {r["config"]: r["served_by"] for r in out["details"]}}
    return run


# ---- claims --------------------------------------------------------------------------------------------------
def _runs(ex: dict, budget: str, loss: str, setting: str) -> dict[int, dict]:
    return {r["seed"]: r for r in ex["runs"] if (r["budget"], r["loss"], r["setting"]) == (budget, loss, setting)
            and not r["failed"]}


def _row(summary: list[dict], budget: str, loss: str, setting: str) -> dict | None:
    return next((r for r in summary if (r["budget"], r["loss"], r["setting"]) == (budget, loss, setting)), None)


def claims(steps: dict) -> list[dict]:
    ex = steps["encoder_extraction"].result
    lines = [_ratio_claim(ex), *_within_claims(ex), *_best_loss_claims(ex)]
    if "encoder_defense" in steps:
        lines += _defense_claims(steps["encoder_defense"].result)
    return lines


def _budgets_under_share(ex: dict) -> list[str]:
    """The budgets run below QUERY_SHARE of the victim's training set, smallest first."""
    return [b for _, b in sorted({(r["budget_samples"], r["budget"]) for r in ex["runs"] if r.get("budget_samples")
                                  and r["budget_samples"] / ex["victim_training_set"] < QUERY_SHARE})]


def _ratio_claim(ex: dict) -> dict:
    claim = (f"direct extraction reaches >= {RATIO_TARGET:.0%} of the victim's downstream accuracy with fewer "
             f"queries than {QUERY_SHARE:.0%} of its training set (fingerprinted setting, best loss)")
    under = _budgets_under_share(ex)
    budget = under[-1] if under else None
    if budget is None:
        return {"claim": claim, "measured": "no budget below 1/5 of the victim's training set was run",
                "tolerance": f"mean ratio >= {RATIO_TARGET}", "verdict": "UNDETERMINED"}
    rows = [r for r in ex["summary"] if r["budget"] == budget and r["setting"] == "fingerprinted"
            and r["accuracy_ratio"] is not None]
    if not rows:
        return {"claim": claim, "measured": f"budget {budget}: no fingerprinted run trained",
                "tolerance": f"mean ratio >= {RATIO_TARGET}", "verdict": "UNDETERMINED"}
    best = max(rows, key=lambda r: r["accuracy_ratio"])
    ci = best.get("accuracy_ratio_ci95")
    measured = (f"{best['loss']}: {best['accuracy']:.3f} probe accuracy = {best['accuracy_ratio']:.1%} of the "
                f"victim's {ex['victim_probe_accuracy']:.3f}" + (f" (95% CI [{ci[0]:.1%}, {ci[1]:.1%}])" if ci else "")
                + f" with {best['queries_over_training_set']:.3f} of its training set ({budget} budget, "
                f"{best['seeds']} seeds); untrained surrogate {best['untrained_accuracy']:.3f}")
    return {"claim": claim, "measured": measured, "tolerance": f"mean ratio >= {RATIO_TARGET}",
            "verdict": _verdict(best["accuracy_ratio"] >= RATIO_TARGET)}


def _within_claims(ex: dict) -> list[dict]:
    lines = []
    for budget, loss in dict.fromkeys((r["budget"], r["loss"]) for r in ex["runs"]):
        fp, exp = _runs(ex, budget, loss, "fingerprinted"), _runs(ex, budget, loss, "explicit")
        seeds = sorted(set(fp) & set(exp))
        within = psml_paper.FINGERPRINT_WITHIN
        claim = f"fingerprinted encoder extraction within {within:.0%} of explicit ({budget} budget, {loss})"
        if not seeds:
            lines.append({"claim": claim, "measured": "no seed with both encoders", "tolerance": "",
                          "verdict": "UNDETERMINED"})
            continue
        da = float(np.mean([fp[s]["accuracy"] - exp[s]["accuracy"] for s in seeds]))
        dg = float(np.mean([fp[s]["agreement"] - exp[s]["agreement"] for s in seeds]))
        lines.append({"claim": claim, "measured": f"{da:+.4f} probe accuracy, {dg:+.4f} agreement over "
                                                  f"{len(seeds)} seeds",
                      "tolerance": f"abs(mean difference) <= {within:g} in both",
                      "verdict": _verdict(abs(da) <= within and abs(dg) <= within)})
    return lines


def _best_loss_claims(ex: dict) -> list[dict]:
    """Per budget under 1/5 of the training set: the loss with the highest mean probe accuracy (fingerprinted),
    and whether the seeds separate the best contrastive loss from MSE (a paired 95% interval excluding 0)."""
    losses = sorted({r["loss"] for r in ex["runs"]})
    budgets = _budgets_under_share(ex)
    if not budgets or "mse" not in losses or len(losses) < 2:
        return [{"claim": "direct extraction's best loss is contrastive (InfoNCE or SoftNN, as in the paper), not MSE",
                 "measured": "needs MSE and a contrastive loss at a budget below 1/5", "tolerance": "",
                 "verdict": "UNDETERMINED"}]
    return [_best_loss_claim(ex, budget, losses) for budget in budgets]


def _best_loss_claim(ex: dict, budget: str, losses: list[str]) -> dict:
    claim = f"direct extraction's best loss is contrastive (InfoNCE or SoftNN, as in the paper), not MSE ({budget} budget)"
    tol = "best contrastive loss minus MSE: paired 95% interval over seeds excluding 0"
    means = {loss: (_row(ex["summary"], budget, loss, "fingerprinted") or {}).get("accuracy") for loss in losses}
    contrastive = max((l for l in losses if l != "mse"), key=lambda l: means[l] if means[l] is not None else -1)
    a, b = _runs(ex, budget, contrastive, "fingerprinted"), _runs(ex, budget, "mse", "fingerprinted")
    diffs = [a[s]["accuracy"] - b[s]["accuracy"] for s in sorted(set(a) & set(b))]
    order = ", ".join(f"{l} {means[l]:.3f}" for l in sorted(losses, key=lambda l: -(means[l] or 0))
                      if means[l] is not None)
    if len(diffs) < 2:
        return {"claim": claim, "measured": f"{order}; {len(diffs)} paired seed(s), no interval",
                "tolerance": tol, "verdict": "UNDETERMINED"}
    m, lo, hi = mean_ci95(diffs)
    measured = f"{order}; {contrastive} - mse {m:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}]"
    verdict = "VALID" if lo > 0 else ("INVALID" if hi < 0 else "UNDETERMINED")
    return {"claim": claim, "measured": measured + ("" if verdict != "UNDETERMINED" else ": seeds do not separate"),
            "tolerance": tol, "verdict": verdict}


def _fmt_d(r: dict, key: str) -> str:
    d, ci = r.get(f"d_{key}"), r.get(f"d_{key}_ci95")
    if d is None:
        return "-"
    return f"{d * 100:+.1f}" + (f" [{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]" if ci else "")


def _defense_claims(d: dict) -> list[dict]:
    rows = {r["config"]: r for r in d["rows"] if r["config"] != "none"}
    lines = []
    noise = [r for name, r in rows.items() if name.startswith("embedding_noise")]
    if noise:  # protection per point of benign cost: does any noise level cost the attacker more than benign users?
        better = [r for r in noise if r["d_attacker_accuracy"] is not None and r["d_broad"] is not None
                  and r["d_attacker_accuracy"] < r["d_broad"] - 0.01]
        lines.append({"claim": "noise on returned embeddings costs benign clients at least as much as it costs the "
                               "stolen encoder (the seed: defenses made for classifiers transfer badly)",
                      "measured": "; ".join(f"{r['config']}: stolen {_fmt_d(r, 'attacker_accuracy')}, benign all "
                                            f"classes {_fmt_d(r, 'broad')}, narrow {_fmt_d(r, 'narrow')} points"
                                            for r in noise),
                      "tolerance": "no level where the stolen encoder loses 1+ point more than a benign client",
                      "verdict": _verdict(not better)})
    for name, r in rows.items():
        if not name.startswith("b4b"):
            continue
        ok = (r["d_attacker_accuracy"] is not None and r["d_narrow"] is not None
              and r["d_attacker_accuracy"] <= B4B_ATTACKER_DROP and r["d_narrow"] >= B4B_BENIGN_COST)
        lines.append({"claim": f"B4B ({name}) cuts the stolen encoder's downstream accuracy while benign clients "
                               f"with a narrow task keep theirs (Dubinski et al. 2023)",
                      "measured": f"stolen {_fmt_d(r, 'attacker_accuracy')}, narrow benign {_fmt_d(r, 'narrow')}, "
                                  f"all-class benign {_fmt_d(r, 'broad')} points; final noise sigma attacker "
                                  f"{_num(r.get('attacker_b4b_sigma'))}, narrow {_num(r.get('narrow_b4b_sigma'))}",
                      "tolerance": f"stolen <= {B4B_ATTACKER_DROP * 100:+.0f} points and narrow benign >= "
                                   f"{B4B_BENIGN_COST * 100:+.0f} point (means over seeds)",
                      "verdict": _verdict(ok)})
    return lines


def _num(v) -> str:
    return "-" if v is None else f"{v:.3f}"


# ---- sections ------------------------------------------------------------------------------------------------
def sections(steps: dict, md_table) -> list[str]:
    ex = steps["encoder_extraction"].result
    e = ex["extraction"]
    md = ["## Encoder extraction", "",
          f"Victim {ex['victim']} (clean linear-probe accuracy {ex['victim_probe_accuracy']:.3f}, trained on "
          f"{ex['victim_training_set']} samples); stolen encoder {e['surrogate']}, {e['epochs']} epochs; budgets in "
          f"samples: {', '.join(f'{k} {v}' for k, v in ex['budget_samples'].items())}. Untrained: the same "
          "architecture with its initial weights under the same probe (what the queries bought is the difference).",
          "",
          md_table(ex["summary"], [("budget", "budget"), ("loss", "loss"), ("setting", "setting"), ("seeds", "seeds"),
                                   ("accuracy", "probe acc"), ("accuracy_ci95", "95% CI"),
                                   ("accuracy_ratio", "of victim"), ("untrained_accuracy", "untrained"),
                                   ("agreement", "agreement"), ("cosine", "cosine"),
                                   ("queries_over_training_set", "queries / train set"),
                                   ("failed_seeds", "failed seeds")]),
          ""]
    from ..cli_encoder_attack import below_untrained

    flags = below_untrained(ex["summary"])
    if flags:
        md += [f"- {f}" for f in flags] + ["", "A stolen encoder below its own initial weights learned something "
               "harmful: naive answers mix several encoders' embedding spaces, and fitting them all at once "
               "undoes the random features.", ""]
    md += ["![encoder extraction](encoder_extraction.png)", ""]
    if "encoder_defense" in steps:
        d = steps["encoder_defense"].result
        st = d["settings"]
        md += ["## Encoder defenses", "",
               f"Attacker: {st['loss']} extraction of {d['victim']} with {st['budget']} samples through the "
               f"staircase's specification; benign clients, asking for the victim's published accuracy: "
               f"{st['benign_train']} + {st['benign_test']} labelled samples each, a narrow task of {st['narrow_classes']} classes or all classes "
               "(benchmarks/encoder_defenses.py). Differences from `none` in points, paired over seeds.", "",
               md_table(d["rows"], [("config", "defense"), ("narrow", "benign narrow"), ("d_narrow", "d"),
                                    ("broad", "benign all classes"), ("d_broad", "d"),
                                    ("attacker_accuracy", "stolen acc"), ("d_attacker_accuracy", "d"),
                                    ("attacker_cosine", "stolen cosine"), ("attacker_b4b_sigma", "b4b sigma attacker"),
                                    ("narrow_b4b_sigma", "b4b sigma narrow"), ("benign_p99_ms", "benign p99 ms")]),
               "", "![encoder defenses](encoder_defenses.png)", ""]
    return md


def extraction_plot(summary: list[dict], path: Path, victim_accuracy: float) -> None:
    from zoo.plots import _plt

    plt = _plt()
    budgets = list(dict.fromkeys(r["budget"] for r in summary))
    losses = list(dict.fromkeys(r["loss"] for r in summary))
    fig, axes = plt.subplots(1, len(budgets), figsize=(5.2 * len(budgets), 4), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        x = np.arange(len(losses))
        for i, setting in enumerate(SETTING_ORDER):
            setting_bars(ax, x, i, setting, "accuracy", [_row(summary, budget, loss, setting) for loss in losses])
        untrained = next((r["untrained_accuracy"] for r in summary if r["budget"] == budget), None)
        if untrained is not None:
            ax.axhline(untrained, ls=":", color="grey", label="untrained")
        ax.axhline(victim_accuracy, ls="--", color="black", label="victim")
        ax.set_xticks(x, losses)
        ax.set_ylim(0, 1)
        ax.set_title(f"budget {budget}")
        ax.set_ylabel("stolen encoder's probe accuracy (95% CI)")
        ax.legend(fontsize=7)
    fig.suptitle("direct extraction of the most accurate encoder")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def check_budgets(s, data) -> None:
    from attacks.knockoff import resolve_budget

    pool = len(data.x["attacker_pool"])
    for b in s.encoder_budgets:
        resolve_budget(b, pool)
    if s.encoder_defense_budget > pool:
        raise ConfigError(f"the encoder defense budget {s.encoder_defense_budget} exceeds the attacker pool of {pool}")

