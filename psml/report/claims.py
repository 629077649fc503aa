"""Every PSML claim as one line: the measured figure, the tolerance and a verdict (pure functions)."""

from __future__ import annotations

import numpy as np

from attacks import psml_paper
from common.stats import mean_ci95
from common.verdict import INVALID, UNDETERMINED, VALID
from common.verdict import from_bool as _verdict

from . import encoder
from .settings import DEFENSE_CONFIG, StepRun

def claims(steps: dict[str, StepRun]) -> list[dict]:
    """Each PSML claim: what was measured, the tolerance, the verdict."""
    lines = []
    zoo = steps["zoo"].result
    v = zoo["validation"]
    lines.append({"claim": "the zoo's profile holds on this host (psml zoo validate: every model's selection "
                           "figure within tolerance, front unchanged)",
                  "measured": v.get("error") or (", ".join(f"{m['model']} {m['drift'] * 100:+.1f}% {m['verdict']}"
                                                           for m in v["models"])
                                                 + f"; front {'unchanged' if v['front']['valid'] else 'moved'}"),
                  "tolerance": "drift within 25% beyond the 95% interval", "verdict": _verdict(v["valid"])})
    ranks = steps["fingerprint"].result["ranks"]
    ok = all(r["staircase"]["consistency"] >= 0.95 and r["staircase"]["queries"] < r["grid_scan"]["queries"]
             for r in ranks)
    lines.append({"claim": "the staircase finds a specification that always reaches each front model, in fewer "
                           "queries than a grid scan",
                  "measured": "; ".join(f"rank {r['rank']}: {r['staircase']['queries']} vs {r['grid_scan']['queries']} "
                                        f"queries, consistency {r['staircase']['consistency']:.2f}" for r in ranks),
                  "tolerance": "consistency >= 0.95 at every rank", "verdict": _verdict(ok)})
    if "encoder_extraction" in steps:
        return lines + encoder.claims(steps)
    runs = steps["extraction"].result["runs"]
    for budget, labels_only in dict.fromkeys((r["budget"], r["labels_only"]) for r in runs):
        tag = f"{budget} budget{', labels only' if labels_only else ''}"
        by = {}
        for r in runs:
            if r["budget"] == budget and r["labels_only"] == labels_only:
                by.setdefault(r["setting"], {})[r["seed"]] = r
        lines.append(_within(by, tag))
        lines.append(_gain(by, tag))
        lines.append(_gain(by, tag, "fidelity"))
    if "defense" in steps:
        lines += _defense(steps["defense"].result)
    return lines


def _paired(by: dict, a: str, b: str, metric: str) -> list[float]:
    """Per-seed differences a - b where both settings trained a surrogate on that seed."""
    seeds = sorted(set(by.get(a, {})) & set(by.get(b, {})))
    return [by[a][s][metric] - by[b][s][metric] for s in seeds
            if not by[a][s].get("failed") and not by[b][s].get("failed")]


def _failed_note(by: dict) -> str:
    failed = [f"{setting} seed {s}" for setting, rs in by.items() for s, r in sorted(rs.items()) if r.get("failed")]
    return f" (failed, left out: {', '.join(failed)})" if failed else ""


def _within(by: dict, tag: str) -> dict:
    acc, fid = _paired(by, "fingerprinted", "explicit", "accuracy"), _paired(by, "fingerprinted", "explicit", "fidelity")
    within = psml_paper.FINGERPRINT_WITHIN
    claim = f"fingerprinted extraction within {within:.0%} of explicit ({tag})"
    if not acc:
        return {"claim": claim, "measured": "no seed with both surrogates" + _failed_note(by),
                "tolerance": f"abs(difference) <= {within:g}", "verdict": "UNDETERMINED"}
    da, df = float(np.mean(acc)), float(np.mean(fid))
    return {"claim": claim, "measured": f"{da:+.4f} accuracy, {df:+.4f} fidelity over {len(acc)} seeds" + _failed_note(by),
            "tolerance": f"abs(mean difference) <= {within:g} in both",
            # 1e-9: a difference of exactly one point (0.91 - 0.90 in floats is 0.010000000000000009) is within
            "verdict": _verdict(abs(da) <= within + 1e-9 and abs(df) <= within + 1e-9)}


def _gain(by: dict, tag: str, metric: str = "accuracy") -> dict:
    """The fingerprinting gain over naive extraction, paired over seeds: VALID when the whole 95% interval is
    above 0, INVALID when it is wholly at or below 0, UNDETERMINED when it straddles 0 (an inconclusive gain is
    not a refuted one)."""
    d = _paired(by, "fingerprinted", "naive", metric)
    claim = (f"fingerprinting gains over naive extraction in {metric} ({tag}; PSML: up to "
             f"{psml_paper.naive_gain_points(metric)} points)")
    tolerance = "the 95% interval of the paired gain above 0"
    if len(d) < 2:
        return {"claim": claim, "measured": f"{len(d)} paired seed(s): no interval" + _failed_note(by),
                "tolerance": tolerance, "verdict": "UNDETERMINED"}
    m, lo, hi = mean_ci95(d)
    verdict = VALID if lo > 0 else INVALID if hi <= 0 else UNDETERMINED
    return {"claim": claim, "measured": f"{m:+.4f} {metric}, 95% CI [{lo:+.4f}, {hi:+.4f}] over {len(d)} seeds"
                                        + _failed_note(by), "tolerance": tolerance, "verdict": verdict}


def _defense(d: dict) -> list[dict]:
    """PSML's defense claim on the middle-of-front victim (the paper's setting: noise moves both bounds of its
    box), and on the top victim beside it; each row's verdict is the trade-off benchmark's interval verdict."""
    paper = psml_paper.DEFENSE
    claim = (f"the metric-noise defense cuts extraction by at least {-paper.d_accuracy * 100:.1f} accuracy / "
             f"{-paper.d_fidelity * 100:.1f} fidelity points with benign goodput above {paper.min_goodput:.0%} "
             "(PSML), against the strongest attacker psml fields")
    tolerance = f"both paired 95% intervals past the paper's reductions, goodput >= {paper.min_goodput:.2f}"
    out = []
    for role in ("middle", "top"):
        victim = d.get("victims_by_role", {}).get(role)
        r = next((r for r in d["rows"] if r["config"] == DEFENSE_CONFIG and r.get("victim") == victim), None)
        line = f"{claim} (victim {victim}, the front's {role}{', the paper setting' if role == 'middle' else ''})"
        if r is None or r["accuracy"] is None:
            out.append({"claim": line, "measured": "no figure", "tolerance": tolerance, "verdict": UNDETERMINED})
            continue
        out.append({"claim": line, "measured": f"{_pm(r, 'accuracy')} accuracy / {_pm(r, 'fidelity')} fidelity "
                                               f"points at goodput {r['goodput']:.3f}, useful goodput "
                                               f"{r['useful_goodput']:.3f} (strongest attacker: "
                                               f"{r['strongest_attacker']}, {r['paired_seeds']} paired seeds)",
                    "tolerance": tolerance, "verdict": r["paper_verdict"]})
    return out


def _pm(r: dict, metric: str) -> str:
    ci = r.get(f"d_{metric}_ci95")
    text = f"{r[f'd_{metric}'] * 100:+.1f}"
    return text + (f" [{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]" if ci else " (no interval)")


