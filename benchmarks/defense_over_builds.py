"""One defense claim over several zoo builds: the victim's training varies too, not only the attacker's seed.

Reads defense_tradeoff result files, one per zoo build (``psml zoo build --seed N``), and pools, for one
defense configuration and one victim role (the middle of each build's front by default, the paper's setting),
the paired per-seed differences to the undefended router of the same build: a Student-t 95% interval over all
(build, seed) pairs, the PSML paper's rule judged on it (attacks/psml_paper.py; VALID: both reductions past the paper's at benign
goodput >= 0.80 in every build), and each build's own interval beside it. Builds whose own intervals are
disjoint are flagged: the build, not the defense, then moves the figure, and the pooled verdict is
UNDETERMINED whatever its interval says.

    from benchmarks.defense_over_builds import DefenseOverBuildsSettings, run
    result = run(DefenseOverBuildsSettings(("results/tradeoff_s0.json", "results/tradeoff_s1.json")))

    python -m benchmarks.defense_over_builds results/tradeoff_s0.json results/tradeoff_s1.json \\
        [--config "metric_noise 0.02/0.1ms"] [--victim middle] [--out results/defense_over_builds.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from attacks import psml_paper
from common.errors import ConfigError
from common.results import write_result
from common.stats import mean_ci95
from common.verdict import UNDETERMINED


@dataclass(frozen=True)
class DefenseOverBuildsSettings:
    result_files: tuple[str, ...] = ()  # defense_tradeoff result files, one per zoo build (recorded as given)
    config: str = "metric_noise 0.02/0.1ms"  # the defense configuration (a row's "config" in those files)
    victim: str = "middle"  # top, middle or a model name: the role looked up in each build's own front

    def __post_init__(self):
        if not self.result_files:
            raise ConfigError("give at least one defense_tradeoff result file")
        if not self.config:
            raise ConfigError("--config: give a defense configuration's name")
        if not self.victim:
            raise ConfigError("--victim: give top, middle or a model name")

    def as_dict(self) -> dict:
        """The settings under the names the result file has always used (top-level keys, ``inputs`` the files)."""
        return {"config": self.config, "victim": self.victim, "inputs": [str(p) for p in self.result_files]}


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


def run(s: DefenseOverBuildsSettings, log=print) -> dict:
    """Reads every build's result file and pools its row; the result file's fields. A file missing, unreadable
    or without the row raises ConfigError (its message names the cause) before anything is pooled. ``log``:
    the benchmarks' common signature; reading and pooling report nothing on the way."""
    try:
        results = [json.loads(Path(p).read_text()) for p in s.result_files]
        rows = [build_rows(r, s.config, s.victim) for r in results]
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(str(e)) from e
    return s.as_dict() | {"zoo_seeds": [r["zoo"]["seed"] for r in results],
                          "attacker_seeds": [r["seeds"] for r in results],
                          "paper": psml_paper.DEFENSE.as_dict()} | pool(rows)


def summary(result: dict) -> str:
    """One line per build, then the pooled verdict against the paper's figures."""
    lines = []
    for seed, b in zip(result["zoo_seeds"], result["per_build"]):
        ci = "[{:+.3f}, {:+.3f}]".format(*b["d_fidelity_ci95"]) if b["d_fidelity_ci95"] else "-"
        lines.append(f"  zoo seed {seed}: victim {b['victim']}, goodput {b['goodput']:.3f}, "
                     f"d fid {b['d_fidelity']:+.3f} {ci} over {b['seeds']} seeds")
    paper = psml_paper.DEFENSE
    ci = "[{:+.3f}, {:+.3f}]".format(*result["d_fidelity_ci95"]) if result["d_fidelity_ci95"] else "-"
    flag = " FLAG: the builds' intervals are disjoint (build variance dominates)" if result["builds_disagree"] else ""
    lines.append(f"{result['paper_verdict']} {result['config']} vs the {result['victim']} victim over "
                 f"{len(result['per_build'])} zoo builds: d fid {result['d_fidelity']:+.3f} {ci}, d acc "
                 f"{result['d_accuracy']:+.3f} ({result['pairs']} paired build x seed); paper: "
                 f"{paper.d_fidelity:+.3f} fid / {paper.d_accuracy:+.3f} acc at goodput >= {paper.min_goodput}{flag}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="defense_tradeoff result files, one per zoo build")
    ap.add_argument("--config", default="metric_noise 0.02/0.1ms")
    ap.add_argument("--victim", default="middle", help="top, middle (default) or a model name")
    ap.add_argument("--out", default="results/defense_over_builds.json")
    a = ap.parse_args(argv)
    try:
        result = run(DefenseOverBuildsSettings(tuple(a.results), a.config, a.victim))
    except ConfigError as e:
        print(f"defense_over_builds: error: {e}", file=sys.stderr)
        return 2
    print(summary(result))
    write_result(a.out, "defense_over_builds", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
