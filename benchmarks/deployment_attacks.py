"""Attacks on the deployment itself, each fielded against a router with the hole open and with it closed.

Routers on one Triton, same zoo, same defenses (PSML metric noise and latency padding; the timing attacker
gets routers with padding alone, since its staircase needs clean 200/422 answers to find every rank):
- "exposed": the settings psml's routers had before the deployment was hardened, reproduced by settings:
  seed 0, a /metrics page the attacker can read (it is given the metrics token), padding floors fixed at the
  profile's batch size (``per_sample_ms: 0``);
- "default": today's defaults (seed from OS entropy, /metrics off the client listener, floors per batch size).
Attackers (attacks/seed_replay.py, attacks/metrics_oracle.py, attacks/timing.py with large batches):
1. seed replay: the public code run with seed 0 predicts the model for each of the attacker's first requests;
   the share predicted right (chance: 1 / front size);
2. /metrics oracle: before and after each request at the top model's accuracy, the good/counted counters say
   whether noise diverted it; the share of requests classified right (scored by the audit log);
3. large-batch timing: the staircase's corners, then timed batch-N answers per front rank; the share of single
   answers whose rank is named right from their time alone (scored by the audit log; chance 1 / ranks).
Then, against the default router only (the old behaviour cannot be configured back): stalled bodies (many
connections send headers and '{' and stall) while a benign client sends requests; a 4 MB wrong-typed JSON body.

    from benchmarks.deployment_attacks import DeploymentAttacksSettings, run
    result = run(DeploymentAttacksSettings(requests=20, oracle_requests=10))

    python -m benchmarks.deployment_attacks [--zoo model_repository/default] [--batch-size 256] [--seed 0]
"""

from __future__ import annotations

import argparse
import functools
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from attacks.experiment import run_timing
from attacks.metrics_oracle import MetricsUnavailable, diverted
from attacks.seed_replay import SeedReplaySettings, predicted_models, prediction_share
from attacks.timing import TimingSettings
from common.errors import ConfigError
from common.results import write_result
from common.tables import format_table
from router.audit_log import read_audit_log
from router.requirements import Requirements
from router.zoo_view import ZooView
from stack.clients import RouterClient
from stack.loopback import DEMO_KEYS, router_for, triton_for
from zoo.data import Dataset
from zoo.manifest import load_manifest

TOKEN = "benchmark-metrics-token-0000"
NOISE = {"name": "metric_noise", "distribution": "laplace", "accuracy_scale": 0.02, "latency_scale_ms": 0.1}
BENIGN, ATTACKER = list(DEMO_KEYS)
CONFIGS = {
    "exposed": dict(seed=0, metrics_token=TOKEN,
                    defenses=[NOISE, {"name": "latency_padding", "floor": "slowest_front", "per_sample_ms": 0.0,
                                      "learn_quantile": None}]),
    "default": dict(seed=None, defenses=[NOISE, {"name": "latency_padding", "floor": "slowest_front"}]),
}


@dataclass(frozen=True)
class DeploymentAttacksSettings:
    zoo_dir: Path = Path("model_repository/default")
    batch_size: int = 256  # samples per request of the timing attacker
    requests: int = 60  # requests of the seed-replay attacker
    oracle_requests: int = 40  # requests of the /metrics oracle
    seed: int = 0  # the timing attacker's seed (the routers' are the point)

    def __post_init__(self):
        if min(self.batch_size, self.requests, self.oracle_requests) < 1:
            raise ConfigError(f"--batch-size, --requests and --oracle-requests must be at least 1, got "
                              f"{self.batch_size}, {self.requests} and {self.oracle_requests}")

    def as_dict(self) -> dict:
        """The settings under the names the result file has always used (its command-line flags)."""
        return {"zoo": str(self.zoo_dir), "batch_size": self.batch_size, "requests": self.requests,
                "oracle_requests": self.oracle_requests, "seed": self.seed}


def _records(router, start: int) -> list[dict]:
    return list(read_audit_log(router.audit_path))[start:]


def seed_replay(router, zoo: ZooView, x, n: int) -> dict:
    start = len(_records(router, 0))
    client = RouterClient(router.url, ATTACKER)
    for _ in range(n):
        client.infer(x, 0.0, None)
    client.close()
    served = [r["model"] for r in _records(router, start)]
    predicted = predicted_models(zoo, [Requirements(0.0, None)] * n,
                                 SeedReplaySettings(guessed_seed=0, defenses=(NOISE,)))
    return {"requests": n, "predicted_share": prediction_share(predicted, served), "chance": 1 / len(zoo.pareto)}


def metrics_oracle(router, zoo: ZooView, x, n: int) -> dict:
    ask = max(m.accuracy for m in zoo.pareto)
    client = RouterClient(router.url, ATTACKER)
    start = len(_records(router, 0))
    try:
        guesses = [diverted(client, f"{router.url}/metrics", "attacker", x, ask, None, {"authorization": f"Bearer {TOKEN}"}
                            if router.name == "exposed" else None) for _ in range(n)]
    except MetricsUnavailable as e:
        return {"requests": n, "classified_right": None, "unavailable": str(e)}
    finally:
        client.close()
    truth = [r["outcome"] != "served" or r["model_accuracy"] < ask for r in _records(router, start)]
    return {"requests": n, "classified_right": sum(g == t for g, t in zip(guesses, truth)) / n,
            "diverted": sum(truth)}


def batch_timing(router, manifest, data, batch: int, seed: int) -> dict:
    s = TimingSettings(template_queries=15, test_queries=25, samples=(1,), trials=300, seed=seed, batch_size=batch)
    out = run_timing(router.url, ATTACKER, router.audit_path, manifest, data.x["test"][:1], s,
                     pool=data.x["attacker_pool"])
    return {"batch": batch, "identified_share": out["accuracy_by_samples"].get("1"), "chance": out["chance"],
            "template_median_ms": out["template_median_ms"]}


def stalled_bodies(router, x, connections: int = 80) -> dict:
    port = int(router.url.rsplit(":", 1)[1])
    head = (b"POST /v1/infer HTTP/1.1\r\nhost: x\r\nx-api-key: demo-attacker-key\r\n"
            b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n{")
    socks = []
    for _ in range(connections):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(head)
        socks.append(s)
    time.sleep(0.3)
    codes = [requests.post(f"{router.url}/v1/infer", json={"inputs": x.tolist()}, headers={"x-api-key": BENIGN},
                           timeout=30).status_code for _ in range(20)]
    for s in socks:
        s.close()
    return {"stalled_connections": connections, "benign_answered_200": codes.count(200) / len(codes)}


def huge_body(router) -> dict:
    body = b'{"inputs": [' + b",".join([b'["x"' + b',"x"' * 39 + b"]"] * 25_000) + b"]}"
    t0 = time.perf_counter()
    r = requests.post(f"{router.url}/v1/infer", data=body, timeout=60,
                      headers={"x-api-key": ATTACKER, "content-type": "application/json"})
    return {"body_bytes": len(body), "status": r.status_code, "refused_in_ms": (time.perf_counter() - t0) * 1e3}


def run(s: DeploymentAttacksSettings, log=functools.partial(print, flush=True)) -> dict:
    """Every attacker against the exposed and the default router, then the default router's body checks; the
    result file's fields."""
    manifest = load_manifest(s.zoo_dir)
    data = Dataset.load(Path(s.zoo_dir) / manifest.zoo.dataset.data_file)
    zoo = ZooView.from_manifest(manifest)
    x = data.x["test"][:1]
    rows, extra = [], {}
    with tempfile.TemporaryDirectory(prefix="psml-deploy-") as tmp, triton_for(s.zoo_dir, tmp) as triton:
        for name, settings in CONFIGS.items():
            padding_only = settings | {"defenses": settings["defenses"][1:]}
            with router_for(s.zoo_dir, tmp, triton, f"{name}-padding", **padding_only) as router:
                timing = batch_timing(router, manifest, data, s.batch_size, s.seed)
            with router_for(s.zoo_dir, tmp, triton, name, **settings) as router:
                router.name = name
                row = {"router": name, "seed_replay": seed_replay(router, zoo, x, s.requests),
                       "metrics_oracle": metrics_oracle(router, zoo, x, s.oracle_requests),
                       "batch_timing": timing}
                if name == "default":
                    extra = {"stalled_bodies": stalled_bodies(router, data.x["test"][:4]),
                             "huge_body": huge_body(router)}
                rows.append(row)
                log(f"{name} done")
    return {"seed": s.seed, "settings": s.as_dict() | {"configs": CONFIGS}, "rows": rows, "default_router": extra}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="model_repository/default")
    ap.add_argument("--batch-size", type=int, default=256, help="samples per request of the timing attacker")
    ap.add_argument("--requests", type=int, default=60, help="requests of the seed-replay attacker")
    ap.add_argument("--oracle-requests", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0, help="the timing attacker's seed (the routers' are the point)")
    ap.add_argument("--out", default="results/deployment_attacks.json")
    a = ap.parse_args(argv)
    try:
        s = DeploymentAttacksSettings(Path(a.zoo), a.batch_size, a.requests, a.oracle_requests, a.seed)
    except ConfigError as e:
        ap.error(str(e))
    result = run(s)
    result["settings"] = s.as_dict() | {"out": a.out, "configs": CONFIGS}  # the keys in the order they always had
    rows, extra = result["rows"], result["default_router"]
    table = [{"router": r["router"], "seed_predicted": r["seed_replay"]["predicted_share"],
              "seed_chance": r["seed_replay"]["chance"],
              "metrics_right": r["metrics_oracle"]["classified_right"],
              "timing_identified": r["batch_timing"]["identified_share"], "timing_chance": r["batch_timing"]["chance"]}
             for r in rows]
    print(format_table(table, [("router", "router"), ("seed_predicted", "seed replay: predicted"),
                               ("seed_chance", "chance"), ("metrics_right", "/metrics oracle: right"),
                               ("timing_identified", f"timing at batch {s.batch_size}: identified"),
                               ("timing_chance", "chance")]))
    print(f"default router: {extra['stalled_bodies']['stalled_connections']} stalled bodies, benign answered 200: "
          f"{extra['stalled_bodies']['benign_answered_200']:.2f}; a {extra['huge_body']['body_bytes']:,}-byte "
          f"wrong-typed body: {extra['huge_body']['status']} in {extra['huge_body']['refused_in_ms']:.0f} ms")
    write_result(a.out, "deployment_attacks", result)
    print(f"result: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
