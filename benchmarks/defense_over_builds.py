"""One defense claim over several zoo builds: the victim's training varies too, not only the attacker's seed.

Reads defense_tradeoff result files, one per zoo build (``psml zoo build --seed N``), and pools, for one
defense configuration and one victim role (the middle of each build's front by default, the paper's setting),
the paired per-seed differences to the undefended router of the same build: a Student-t 95% interval over all
(build, seed) pairs, the PSML paper's rule judged on it (attacks/psml_paper.py; VALID: both reductions past the paper's at benign
goodput >= 0.80 in every build), and each build's own interval beside it. Builds whose own intervals are
disjoint are flagged: the build, not the defense, then moves the figure, and the pooled verdict is
UNDETERMINED whatever its interval says.

    python -m benchmarks.defense_over_builds results/tradeoff_s0.json results/tradeoff_s1.json \\
        [--config "metric_noise 0.02/0.1ms"] [--victim middle] [--out results/defense_over_builds.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from attacks import psml_paper
from common.errors import ConfigError
from common.results import write_result
from common.stats import mean_ci95
from common.verdict import UNDETERMINED


def build_rows(result: dict, config: str, victim: str) -> dict:
    """One build's row for ``config`` against its ``victim`` (top, middle or a model name)."""
    front = result["zoo"]["front"]
    name = front[0] if victim == "top" else front[len(front) // 2] if victim == "middle" else victim
    rows = [r for r in result["rows"] if r["config"] == config and r["victim"] == name]
    if not rows:
        raise ConfigError(f"{result['zoo']['path']} (zoo seed {result['zoo']['seed']}) has no row for "
                          f"{config!r} against {name!r}")
    return rows[0]


def pool(rows: list[dict]) -> dict:
    """Paired differences over every (build, seed): pooled interval, per-build intervals, the paper's verdict."""
    diffs = {"accuracy": [], "fidelity": []}
    per_build = []
    for r in rows:
        mine = {m: [s[m] - s[f"none_{m}"] for s in r["per_seed"].values()] for m in diffs}
        for m in diffs:
            diffs[m] += mine[m]
        m_fid = mean_ci95(mine["fidelity"])
        per_build.append({"victim": r["victim"], "goodput": r["goodput"], "seeds": len(mine["fidelity"]),
                          "d_fidelity": m_fid[0], "d_fidelity_ci95": list(m_fid[1:]) if len(mine["fidelity"]) > 1 else None})
    out = {"pairs": len(diffs["fidelity"]), "per_build": per_build}
    for m, d in diffs.items():
        mean, lo, hi = mean_ci95(d)
        out |= {f"d_{m}": mean, f"d_{m}_ci95": [lo, hi] if len(d) > 1 else None}
    intervals = [b["d_fidelity_ci95"] for b in per_build if b["d_fidelity_ci95"]]
    out["builds_disagree"] = any(a[1] < b[0] or b[1] < a[0] for a in intervals for b in intervals)
    verdict = psml_paper.defense_verdict([b["goodput"] for b in per_build], out["d_accuracy_ci95"],
                                         out["d_fidelity_ci95"])
    out["paper_verdict"] = UNDETERMINED if out["builds_disagree"] else verdict
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="defense_tradeoff result files, one per zoo build")
    ap.add_argument("--config", default="metric_noise 0.02/0.1ms")
    ap.add_argument("--victim", default="middle", help="top, middle (default) or a model name")
    ap.add_argument("--out", default="results/defense_over_builds.json")
    a = ap.parse_args(argv)
    try:
        results = [json.loads(Path(p).read_text()) for p in a.results]
        rows = [build_rows(r, a.config, a.victim) for r in results]
    except (OSError, ValueError, KeyError, ConfigError) as e:
        print(f"defense_over_builds: error: {e}", file=sys.stderr)
        return 2
    pooled = pool(rows)
    paper = psml_paper.DEFENSE
    for r, b in zip(results, pooled["per_build"]):
        ci = "[{:+.3f}, {:+.3f}]".format(*b["d_fidelity_ci95"]) if b["d_fidelity_ci95"] else "-"
        print(f"  zoo seed {r['zoo']['seed']}: victim {b['victim']}, goodput {b['goodput']:.3f}, "
              f"d fid {b['d_fidelity']:+.3f} {ci} over {b['seeds']} seeds")
    ci = "[{:+.3f}, {:+.3f}]".format(*pooled["d_fidelity_ci95"]) if pooled["d_fidelity_ci95"] else "-"
    flag = " FLAG: the builds' intervals are disjoint (build variance dominates)" if pooled["builds_disagree"] else ""
    print(f"{pooled['paper_verdict']} {a.config} vs the {a.victim} victim over {len(rows)} zoo builds: d fid "
          f"{pooled['d_fidelity']:+.3f} {ci}, d acc {pooled['d_accuracy']:+.3f} ({pooled['pairs']} paired "
          f"build x seed); paper: {paper.d_fidelity:+.3f} fid / {paper.d_accuracy:+.3f} acc at goodput "
          f">= {paper.min_goodput}{flag}")
    write_result(a.out, "defense_over_builds", {"config": a.config, "victim": a.victim, "inputs": a.results,
                                                 "zoo_seeds": [r["zoo"]["seed"] for r in results],
                                                 "attacker_seeds": [r["seeds"] for r in results],
                                                 "paper": paper.as_dict()} | pooled, created_unix=time.time())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
