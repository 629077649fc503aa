"""Per-client state shared by two routers under Locust load: does the store keep a budget and a flag whole?

One valkey-server, one Triton, two routers with two workers each, both with ``state_store`` and the defenses
query_budget (a total ``--budget-samples`` per key) and PRADA (``--prada-action``: block, the default, or log:
then budget leases and held slots admit most requests with no round trip). One headless Locust run on
loopback (loadtests/shared_state_locustfile.py) in which every key sends its requests alternately through both
routers: benign keys (natural test samples), ONE attacker key (its users ask until the budget refuses a batch of
1) and one JBDA-like synthetic stream. Afterwards both routers' audit logs are read (loadtests/shared_state_claims.py):
the attacker's samples served over both routers against the budget, its refusals per router; when PRADA flagged the
synthetic key, through which router, and (block) whether the other router refused it from then on; the benign
keys' false-positive share and goodput. Exit 0 when the budget held (exactly, once spent) and the flag was raised
once, counting the samples sent through both routers (and, under block, crossed routers).

    from benchmarks.state_store_locust import StateStoreLocustSettings, run
    result = run(StateStoreLocustSettings(duration_s=8.0, budget_samples=200))

    python -m benchmarks.state_store_locust [--zoo model_repository/default] [--duration-s 30]
        [--budget-samples 2000] [--benign-keys 4] [--prada-action block|log] [--seed 0]
        [--out results/state_store_locust.json]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common.errors import ConfigError, PsmlError
from common.results import write_result
from common.tables import format_table
from loadtests.run import prepare_out_dir, run_locust
from loadtests.shared_state_claims import benign_claim, budget_claim, flag_claim
from loadtests.shared_state_config import SharedStateLoad, api_keys
from loadtests.summary import locust_stats
from router.audit_log import read_audit_log
from stack.loopback import triton_for, write_router_settings
from stack.router_process import RouterProcess
from stack.store_server import StoreServer
from zoo.data import Dataset

LOCUSTFILE = Path(__file__).resolve().parents[1] / "loadtests" / "shared_state_locustfile.py"
ROUTERS = ("r1", "r2")
MIN_BUDGET_SAMPLES = 200


def defenses(budget_samples: int, prada_delta: float, prada_action: str = "block") -> list[dict]:
    """A total budget only (no rate limit); PRADA with 100 distances and a test every 10. Its delta defaults to
    0.7, not the paper's 0.9: natural mnist1d streams sit at W 0.85-0.94 over their first 1,200 samples, and at
    0.9 PRADA flagged 2 of 4 benign keys and the attacker's natural queries in this run (docs/loadtests.md); the
    JBDA-like stream falls to W ~0.4. This benchmark tests the store, not PRADA's threshold."""
    return [{"name": "query_budget", "max_samples": budget_samples},
            {"name": "prada", "action": prada_action, "delta": prada_delta}]


@dataclass(frozen=True)
class StateStoreLocustSettings:
    zoo_dir: Path = Path("model_repository/default")
    duration_s: float = 30.0  # seconds of Locust load
    budget_samples: int = 2000  # query_budget's max_samples per key
    benign_keys: int = 4  # benign keys, one Locust user each
    attacker_users: int = 2  # Locust users sharing the attacker key
    attack_batch_samples: int = 30  # the attacker's first batch, halved on each refusal (30 does not divide 2,000)
    synthetic_batch_samples: int = 10  # seeds of the synthetic stream (its batch)
    prada_delta: float = 0.7  # PRADA's W threshold (see defenses())
    workers: int = 2  # workers per router
    seed: int = 0  # routers' seed and the Locust users' streams
    prada_action: str = "block"  # block: the flag refuses at every router; log: leases and held slots on

    def __post_init__(self):
        if self.prada_action not in ("block", "log"):
            raise ConfigError(f"--prada-action: choose block or log, got {self.prada_action!r}")
        if not self.duration_s > 0:
            raise ConfigError(f"--duration-s must be > 0 seconds, got {self.duration_s:g}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if self.budget_samples < MIN_BUDGET_SAMPLES:
            raise ConfigError(f"--budget-samples must be >= {MIN_BUDGET_SAMPLES}: every key has the budget, and the "
                              "synthetic key must get past PRADA's first test (100 distances) before its budget is "
                              "spent")
        self.load()  # the load's own checks (keys, users, batches >= 1)

    def load(self) -> SharedStateLoad:
        """The Locust run's settings (no router URLs yet)."""
        return SharedStateLoad(data_file=str(Path(self.zoo_dir) / "data.npz"), duration_s=self.duration_s,
                               benign_keys=self.benign_keys, attacker_users=self.attacker_users,
                               attack_batch=self.attack_batch_samples, synthetic_batch=self.synthetic_batch_samples,
                               seed=self.seed)

    def as_dict(self) -> dict:
        """The settings under the names the result file has always used (its command-line flags)."""
        return {"zoo": str(self.zoo_dir), "duration_s": self.duration_s, "budget_samples": self.budget_samples,
                "benign_keys": self.benign_keys, "attacker_users": self.attacker_users,
                "attack_batch": self.attack_batch_samples, "synthetic_batch": self.synthetic_batch_samples,
                "prada_delta": self.prada_delta, "workers": self.workers, "seed": self.seed} | (
                {} if self.prada_action == "block" else {"prada_action": self.prada_action})


def check_pool(s: StateStoreLocustSettings) -> None:
    """ConfigError (one sentence) when the zoo's data cannot be read or its attacker pool cannot outlast the budget."""
    try:
        pool = len(Dataset.load(Path(s.zoo_dir) / "data.npz").x["attacker_pool"])
    except (PsmlError, OSError) as e:
        raise ConfigError(str(e)) from e
    if s.budget_samples >= pool:
        raise ConfigError(f"--budget-samples {s.budget_samples} must be below the attacker pool ({pool} samples): "
                          "the attacker must ask for more than its budget without repeating a sample")


def run_stack(s: StateStoreLocustSettings, run_dir: Path) -> dict:
    """Start the stack, run Locust, stop the routers; every router's audit records and Locust's statistics."""
    timings, t0 = {}, time.perf_counter()
    with contextlib.ExitStack() as stack:
        triton = stack.enter_context(triton_for(s.zoo_dir, run_dir))
        store = stack.enter_context(StoreServer(run_dir / "store"))
        routers = {}
        for name in ROUTERS:
            settings = write_router_settings(
                run_dir, Path(s.zoo_dir), triton.endpoints, name, api_keys=api_keys(s.benign_keys),
                defenses=defenses(s.budget_samples, s.prada_delta, s.prada_action), state_store=store.url,
                workers=s.workers,
                seed=s.seed, allow_more_workers_than_cores=True)
            routers[name] = stack.enter_context(RouterProcess(settings, log_path=run_dir / f"{name}.log"))
        timings["stack_start_s"] = time.perf_counter() - t0
        load = SharedStateLoad(**asdict(s.load()) | {"router_urls": ",".join(r.url for r in routers.values())})
        t1 = time.perf_counter()
        prefix = run_locust(routers["r1"].url, load, prepare_out_dir(run_dir / "locust"), locustfile=LOCUSTFILE)
        timings["locust_s"] = time.perf_counter() - t1
        for r in routers.values():
            r.stop()  # every answer written before the logs are read
        records = {name: list(read_audit_log(r.audit_path)) for name, r in routers.items()}
    timings["total_s"] = time.perf_counter() - t0
    return {"records": records, "locust": locust_stats(prefix), "timings": timings, "load": load}


def run(s: StateStoreLocustSettings, log=functools.partial(print, flush=True),
        run_dir: Path | str | None = None) -> dict:
    """The zoo checked (ConfigError before any server starts), the stack under Locust, the claims judged on the
    audit logs; the result file's fields, and ``per_router`` (the table's rows, not written to the file).
    ``run_dir`` keeps the logs, audit logs and Locust reports (default: a temporary folder). ``log``: the
    benchmarks' common signature; one Locust run, nothing reported on the way."""
    check_pool(s)
    if run_dir:
        Path(run_dir).mkdir(parents=True, exist_ok=True)  # a folder named for the logs need not exist yet
    kept = contextlib.nullcontext(run_dir) if run_dir else None
    with kept or tempfile.TemporaryDirectory(prefix="psml-storeload-") as tmp:
        got = run_stack(s, Path(tmp))
    records = got["records"]
    budget = budget_claim(records, "attacker", s.budget_samples)
    flag = flag_claim(records, "synthetic", refuses=s.prada_action == "block")
    benign = benign_claim(records, [f"benign-{i}" for i in range(s.benign_keys)])
    return {"seed": s.seed, "settings": s.as_dict() | {"defenses": defenses(s.budget_samples, s.prada_delta),
                                                       "routers": list(ROUTERS)},
            "load": asdict(got["load"]), "budget": budget, "flag": flag, "benign": benign,
            "verdicts": verdicts(budget, flag, benign), "locust": got["locust"], "timings": got["timings"],
            "per_router": per_router(records, budget, flag, benign)}


def verdicts(budget: dict, flag: dict, benign: dict) -> list[str]:
    """One line per condition, VALID / INVALID / UNDETERMINED and why."""
    b = (f"served {budget['served_samples']} of {budget['budget_samples']} samples over both routers "
         f"({', '.join(f'{n} {s}' for n, s in budget['served_per_router'].items())})")
    if not budget["asked_more"]:
        lines = [f"UNDETERMINED budget: the attacker was never refused by the budget ({b}): run longer"]
    elif budget["holds"] and budget["exact"]:
        lines = [f"VALID budget: {b}, exactly the budget, after asking at least "
                 f"{budget['asked_samples_at_least']}"]
    else:
        lines = [f"INVALID budget: {b} after a refused batch of {budget['smallest_refused_batch']}"]
    if not flag["flagged"]:
        lines.append(f"UNDETERMINED flag: PRADA never flagged the synthetic key ({flag['samples_sent']} samples sent)")
    else:
        other = [n for n in flag["after_flag"] if n != flag["flagged_by"]]
        after = ", ".join(f"{n} {v['blocked']} of {v['requests']}" for n, v in flag["after_flag"].items())
        head = (f"{'VALID' if flag['holds'] else 'INVALID'} flag: raised {flag['detections']} time(s), first "
                f"through {flag['flagged_by']} after {flag['detector_samples']} samples (the key had sent "
                f"{flag['samples_at_flag_all_routers']} over all routers)")
        lines.append(f"{head}; refused afterwards: {after}; first request at {'/'.join(other)} after the flag "
                     f"{'refused' if flag['crossed'] else 'NOT refused'}" if flag["refuses"] else
                     f"{head}; log: served afterwards, as the action says")
    lines.append(f"benign: {len(benign['keys_flagged'])} of {benign['keys']} keys flagged, "
                 f"{len(benign['keys_refused'])} refused ({benign['refused_requests']} of {benign['requests']} "
                 f"requests); goodput {benign['goodput_share']:.3f}" if benign["requests"] else "benign: no requests")
    return lines


def per_router(records: dict, budget: dict, flag: dict, benign: dict) -> list[dict]:
    """The table's rows: what each router served and refused to each kind of key."""
    return [{"router": n, "requests": len(rs), "attacker_served": budget["served_per_router"][n],
             "attacker_refused": budget["budget_refusals_per_router"][n],
             "synthetic_after_flag": flag.get("after_flag", {}).get(n, {}).get("requests", 0),
             "synthetic_refused_after": flag.get("after_flag", {}).get(n, {}).get("blocked", 0),
             "benign_requests": benign["per_router_requests"][n],
             "benign_refused": sum(r["outcome"] == "refused" and (r["client"] or "").startswith("benign-") for r in rs)}
            for n, rs in records.items()]


def table(rows: list[dict]) -> str:
    return format_table(rows, [
        ("router", "router"), ("requests", "requests"), ("attacker_served", "attacker samples served"),
        ("attacker_refused", "attacker budget refusals"), ("synthetic_after_flag", "synthetic reqs after flag"),
        ("synthetic_refused_after", "refused"), ("benign_requests", "benign reqs"),
        ("benign_refused", "benign refused")])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="model_repository/default")
    ap.add_argument("--duration-s", type=float, default=30.0, help="seconds of Locust load")
    ap.add_argument("--budget-samples", type=int, default=2000, help="query_budget's max_samples per key")
    ap.add_argument("--benign-keys", type=int, default=4, help="benign keys, one Locust user each")
    ap.add_argument("--attacker-users", type=int, default=2, help="Locust users sharing the attacker key")
    ap.add_argument("--attack-batch", type=int, default=30,
                    help="the attacker's first batch, halved on each budget refusal (30 does not divide 2,000)")
    ap.add_argument("--synthetic-batch", type=int, default=10, help="seeds of the synthetic stream (its batch)")
    ap.add_argument("--prada-delta", type=float, default=0.7, help="PRADA's W threshold (see defenses())")
    ap.add_argument("--workers", type=int, default=2, help="workers per router")
    ap.add_argument("--seed", type=int, default=0, help="routers' seed and the Locust users' streams")
    ap.add_argument("--prada-action", choices=("block", "log"), default="block",
                    help="block: the flag refuses at every router; log: budget leases and held slots admit")
    ap.add_argument("--out", default="results/state_store_locust.json")
    ap.add_argument("--run-dir", help="keep the logs, audit logs and Locust reports here (default: a temporary folder)")
    a = ap.parse_args(argv)
    try:  # bad settings, or a zoo whose data cannot serve them: one line and exit 2 before any server starts
        s = StateStoreLocustSettings(Path(a.zoo), a.duration_s, a.budget_samples, a.benign_keys, a.attacker_users,
                                     a.attack_batch, a.synthetic_batch, a.prada_delta, a.workers, a.seed,
                                     a.prada_action)
        result = run(s, run_dir=a.run_dir)
    except ConfigError as e:
        print(f"state_store_locust: {e}", file=sys.stderr)
        return 2
    rows = result.pop("per_router")
    result["settings"] = s.as_dict() | {"out": a.out, "run_dir": a.run_dir} | result["settings"]  # the old order
    print(f"two routers x {s.workers} workers sharing one valkey store; Locust {s.duration_s:g} s, "
          f"budget {s.budget_samples} samples per key, PRADA {s.prada_action} (delta {s.prada_delta:g})")
    print(table(rows))
    print("\n".join(result["verdicts"]))
    print(f"stack start {result['timings']['stack_start_s']:.1f} s, Locust {result['timings']['locust_s']:.1f} s")
    write_result(a.out, "state_store_locust", result)
    print(f"result: {a.out}")
    return 0 if all(line.startswith(("VALID", "benign")) for line in result["verdicts"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
