"""Defense vs none, side by side in one run: what each defense costs benign users and what it takes from
the attacker.

For every router configuration (no defense; PSML metric noise at three scales; DP selection), on the same
Triton: benign goodput over the benign client population (loadtests/benign.py, one client, back to back),
then the attacker's staircase fingerprinting (queries, consistency over 100 later queries) and a Knockoff
extraction through the specification it found (medium budget, several seeds; an attacker whose
fingerprinting found nothing sends no requirements). Two attackers: "plain" (one query per bisection step) and
"adaptive", which repeats each bisection query --votes times and follows the majority, and steps back from
each boundary it finds (--accuracy-backoff, --latency-backoff-ms), where noise makes the answer a coin flip.
Ratios and differences are against "none" for the same attacker.
PSML reports, for its noise defense, up to -9.8% accuracy / -4.8% fidelity of a medium extraction while
goodput stays above 80% (the figures: attacks/psml_paper.py).

    from benchmarks.defense_vs_none import DefenseVsNoneSettings, run
    result = run(DefenseVsNoneSettings(seeds=(0,)))

    python -m benchmarks.defense_vs_none [--zoo model_repository/default] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attacks import psml_paper
from attacks.experiment import consistency, front_by_accuracy, run_extraction, run_fingerprint, victim_labels
from attacks.knockoff import BUDGETS, KnockoffSettings
from loadtests.benign import benign_batch, benign_requirements
from loadtests.config import LoadSettings
from common.errors import ConfigError
from common.results import write_result
from common.stats import mean_and_std
from common.tables import format_table
from router.audit_log import read_audit_log
from router.goodput import summarize
from stack.clients import RouterClient, RouterRejected
from stack.closed_loop import run_interleaved
from stack.loopback import DEMO_KEYS, router_for, triton_for
from zoo.data import Dataset
from zoo.manifest import load_manifest

CONFIGS = {
    "none": [],
    "noise laplace 0.01/0.05ms": [{"name": "metric_noise", "distribution": "laplace", "accuracy_scale": 0.01, "latency_scale_ms": 0.05}],
    "noise laplace 0.02/0.1ms": [{"name": "metric_noise", "distribution": "laplace", "accuracy_scale": 0.02, "latency_scale_ms": 0.1}],
    "noise laplace 0.05/0.25ms": [{"name": "metric_noise", "distribution": "laplace", "accuracy_scale": 0.05, "latency_scale_ms": 0.25}],
    "exponential eps=8": [{"name": "exponential_mechanism", "epsilon": 8.0}],
    "permute-and-flip eps=8": [{"name": "permute_and_flip", "epsilon": 8.0}],
}
BENIGN, ATTACKER = (next(k for k, v in DEMO_KEYS.items() if v == who) for who in ("benign", "attacker"))


@dataclass(frozen=True)
class DefenseVsNoneSettings:
    zoo_dir: Path = Path("model_repository/default")
    benign_requests: int = 600  # the benign client's, back to back, per configuration
    budget: str = "medium"  # a named budget (attacks/knockoff.py BUDGETS: samples sent)
    seeds: tuple[int, ...] = (0, 1, 2)  # extraction seeds
    router_seed: int = 0  # the routers' seed tree, and the benign client's draws
    votes: int = 5  # the adaptive attacker repeats each bisection query and follows the majority
    accuracy_backoff: float = 0.0  # accuracy (a fraction) the adaptive attacker steps back from a found boundary
    latency_backoff_ms: float = 0.05

    def __post_init__(self):
        if self.budget not in BUDGETS:
            raise ConfigError(f"--budget: {self.budget!r} is not a named budget ({', '.join(BUDGETS)})")
        if not self.seeds:
            raise ConfigError("--seeds: give at least one seed")
        if self.benign_requests < 1 or self.votes < 1:
            raise ConfigError(f"--benign-requests and --votes must be at least 1, got {self.benign_requests} and "
                              f"{self.votes}")

    def as_dict(self) -> dict:
        """The settings under the names the result file has always used (its command-line flags)."""
        return {"zoo": str(self.zoo_dir), "benign_requests": self.benign_requests, "budget": self.budget,
                "seeds": list(self.seeds), "router_seed": self.router_seed, "votes": self.votes,
                "accuracy_backoff": self.accuracy_backoff, "latency_backoff_ms": self.latency_backoff_ms}


def _refusals_only(i, k, request, ms, answer, error) -> None:
    if error is not None and not isinstance(error, RouterRejected):
        raise error


def benign_goodput(router, data, n: int, seed: int) -> dict:
    """``n`` benign requests back to back on one key (stack/closed_loop.py's run_interleaved, one client); the
    goodput the router's audit log records for them."""
    client, s = RouterClient(router.url, BENIGN), LoadSettings()
    info, rng = client.zoo(), np.random.default_rng(seed)

    def request_for(i: int, k: int) -> tuple:
        x = benign_batch(rng, data.x["test"], s)
        acc, lat = benign_requirements(rng, info, s)
        return x, {"min_accuracy": acc, "max_latency_ms": lat}

    run_interleaved([client], n, request_for, _refusals_only)
    client.close()
    return summarize([r for r in read_audit_log(router.audit_path) if r["client"] == "benign"])


def run(s: DefenseVsNoneSettings, log=functools.partial(print, flush=True)) -> dict:
    """Every configuration in CONFIGS, each with both attackers; the result file's fields."""
    manifest = load_manifest(s.zoo_dir)
    data = Dataset.load(Path(s.zoo_dir) / manifest.zoo.dataset.data_file)
    victim = front_by_accuracy(manifest)[0]
    labels = victim_labels(Path(s.zoo_dir), victim, data.x["test"])
    attackers = {"plain": (1, 0.0, 0.0), "adaptive": (s.votes, s.accuracy_backoff, s.latency_backoff_ms)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="psml-defense-") as tmp, triton_for(s.zoo_dir, tmp) as triton:
        for i, (name, defenses) in enumerate(CONFIGS.items()):
            with router_for(s.zoo_dir, tmp, triton, f"r{i}", defenses=defenses, seed=s.router_seed) as router:
                g = benign_goodput(router, data, s.benign_requests, s.router_seed)
                for who, (votes, acc_back, lat_back) in attackers.items():
                    fp = run_fingerprint("staircase", router.url, ATTACKER, data.x["attacker_pool"][:1], 1,
                                         votes=votes, backoff=(acc_back, lat_back))
                    c = consistency(router.url, ATTACKER, router.audit_path, fp.spec, data.x["attacker_pool"][1:101],
                                    victim.name)
                    ex = [run_extraction("fingerprinted", router.url, ATTACKER, triton.endpoints.http_url, victim,
                                         fp.spec, data.x["attacker_pool"], data, labels,
                                         KnockoffSettings(budget=BUDGETS[s.budget], seed=seed)) for seed in s.seeds]
                    rows.append(_row(name, who, defenses, g, fp, c, ex, s.seeds))
                    ok = rows[-1]["accuracy"] is not None
                    log(f"  {name} / {who} attacker: goodput {g['goodput_share']:.3f}, consistency "
                        f"{c['consistency']:.2f}, extraction " + (f"acc {rows[-1]['accuracy']:.3f} fid "
                        f"{rows[-1]['fidelity']:.3f}" if ok else f"failed: {rows[-1]['failure_reasons']}"))
    against_none(rows)
    return {"seeds": list(s.seeds), "settings": s.as_dict(), "victim": victim.name, "rows": rows,
            "attackers": {k: dict(zip(("votes", "accuracy_backoff", "latency_backoff_ms"), v))
                          for k, v in attackers.items()},
            "knockoff": KnockoffSettings().as_dict()}


def _row(name, who, defenses, g, fp, c, ex, seeds) -> dict:
    ok = [e for e in ex if not e.get("failed")]  # failed surrogates are counted, not averaged
    # no surrogate at all (fingerprinting found no specification, or every training failed):
    # reported as None with the reasons, never as the naive setting or a zero
    acc, acc_sd = mean_and_std([e["accuracy"] for e in ok]) if ok else (None, None)
    fid, fid_sd = mean_and_std([e["fidelity"] for e in ok]) if ok else (None, None)
    return dict(defense=name, attacker=who, goodput=g["goodput_share"], slo=g["slo_attainment"],
                rejected=g["reject_rate"], fp_queries=fp.queries, spec=fp.spec, consistency=c["consistency"],
                accuracy=acc, accuracy_std=acc_sd, fidelity=fid, fidelity_std=fid_sd,
                failed_seeds=[s for s, e in zip(seeds, ex) if e.get("failed")],
                failure_reasons=sorted({x for e in ex for x in e.get("retry_reasons", [])}), defenses=defenses)


def against_none(rows: list[dict]) -> None:
    """Each row's goodput ratio and accuracy/fidelity differences to "none" for the same attacker (in place)."""
    for r in rows:
        base = next(b for b in rows if b["defense"] == "none" and b["attacker"] == r["attacker"])
        r["goodput_ratio"] = r["goodput"] / base["goodput"] if base["goodput"] else None
        both = r["accuracy"] is not None and base["accuracy"] is not None
        r["d_accuracy"] = r["accuracy"] - base["accuracy"] if both else None
        r["d_fidelity"] = r["fidelity"] - base["fidelity"] if both else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="model_repository/default")
    ap.add_argument("--benign-requests", type=int, default=600)
    ap.add_argument("--budget", default="medium", choices=list(BUDGETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--router-seed", type=int, default=0)
    ap.add_argument("--votes", type=int, default=5, help="the attacker repeats each bisection query and follows the majority")
    ap.add_argument("--accuracy-backoff", type=float, default=0.0, help="the attacker steps back from found boundaries")
    ap.add_argument("--latency-backoff-ms", type=float, default=0.05)
    ap.add_argument("--out", default="results/defense_vs_none.json")
    a = ap.parse_args(argv)
    try:
        s = DefenseVsNoneSettings(Path(a.zoo), a.benign_requests, a.budget, tuple(a.seeds), a.router_seed, a.votes,
                                  a.accuracy_backoff, a.latency_backoff_ms)
    except ConfigError as e:
        print(f"error: {e}")
        return 2
    result = run(s)
    result["settings"]["out"] = a.out
    print(format_table(result["rows"], [
        ("defense", "defense"), ("attacker", "attacker"), ("goodput", "benign goodput"), ("goodput_ratio", "vs none"),
        ("slo", "SLO met"), ("rejected", "rejected"), ("fp_queries", "fp queries"), ("consistency", "consistency"),
        ("accuracy", "extr. acc"), ("d_accuracy", "d acc"), ("fidelity", "extr. fid"), ("d_fidelity", "d fid")]))
    paper = psml_paper.DEFENSE
    print(f"victim {result['victim']}; {s.budget} budget ({BUDGETS[s.budget]} samples), seeds {list(s.seeds)}. PSML "
          f"(noise): up to {paper.d_accuracy:+.1%} acc / {paper.d_fidelity:+.1%} fid with goodput above "
          f"{paper.min_goodput:.0%}.")
    write_result(a.out, "defense_vs_none", result)
    print(f"result: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
