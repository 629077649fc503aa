"""``psml demo``: the whole story on the embedded default, end to end, printing its results.

1. build the default zoo (train, export, parity, profile) unless it is already built;
2. start a real Triton and the real router on free loopback ports;
3. run every zoo model once through Triton and print the zoo table;
4. send benign queries through the router and print what they got and the goodput from the audit log.
5. fingerprinting without and with the noise defense, and extraction in the three settings;
6. a short mixed Locust load.
``DemoSettings`` holds the sizes; ``--quick`` shrinks them for a smoke run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stack.loopback import DEMO_KEYS, router_for, triton_for
from stack.clients import DirectTriton, RouterClient, RouterRejected
from common.tables import format_table
from zoo.table import zoo_table


@dataclass(frozen=True)
class DemoSettings:
    budgets: tuple[str, ...] = ("small", "medium")
    seeds: tuple[int, ...] = (0, 1, 2)
    surrogate_epochs: int = 40
    consistency_queries: int = 200
    benign_users: int = 8
    warmup_s: float = 10.0
    attack_s: float = 40.0
    cooldown_s: float = 10.0
    attack_budget: int = 1000


QUICK = DemoSettings(budgets=("small",), seeds=(0, 1, 2), surrogate_epochs=10, consistency_queries=50,
                     benign_users=3, warmup_s=3.0, attack_s=8.0, cooldown_s=3.0, attack_budget=250)


def ensure_zoo(zoo_root: Path, profile: str, rebuild: bool) -> Path:
    from zoo.build import build_zoo, get_profile

    zoo_dir = zoo_root / profile
    if (zoo_dir / "zoo.json").is_file() and not rebuild:
        print(f"[1] zoo {zoo_dir} is already built (psml demo --rebuild to train it again)")
        return zoo_dir
    print(f"[1] building zoo {profile!r} ...")
    t0 = time.perf_counter()
    build_zoo(get_profile(profile), zoo_root)
    print(f"    built in {time.perf_counter() - t0:.0f} s")
    return zoo_dir


def run_every_model_once(triton, manifest, x: np.ndarray) -> None:
    for m in manifest.models:
        sut = DirectTriton.for_entry(triton.endpoints.http_url, m)
        try:
            probs = sut.infer(x[:4])
        finally:
            sut.close()
        if probs.shape != (4, manifest.zoo.dataset.n_classes):
            raise RuntimeError(f"model {m.name} answered shape {probs.shape}")


BENIGN_QUERIES = [  # (min_accuracy, max_latency_ms) as a client would state them
    (None, None), (0.5, None), (0.9, None), (None, 1.2), (0.7, 5.0), (0.99, None), (0.95, 0.5),
]


def benign_queries(router, data) -> None:
    client = RouterClient(router.url, next(k for k, v in DEMO_KEYS.items() if v == "benign"))
    rows = []
    for i, (acc, lat) in enumerate(BENIGN_QUERIES):
        x, y = data.x["test"][i * 8 : (i + 1) * 8], data.y["test"][i * 8 : (i + 1) * 8]
        t0 = time.perf_counter()
        try:
            probs = client.infer(x, acc, lat)
            answer = f"200, {np.mean(probs.argmax(1) == y):.0%} of 8 correct"
        except RouterRejected as e:
            answer = f"{e.status} {e.body.get('error')}"
        rows.append(dict(min_accuracy=acc if acc is not None else "-", max_latency_ms=lat if lat is not None else "-",
                         answer=answer, client_ms=(time.perf_counter() - t0) * 1e3))
    client.close()
    print(format_table(rows, [("min_accuracy", "min_accuracy"), ("max_latency_ms", "max_latency_ms"),
                              ("answer", "answer"), ("client_ms", "client ms")]))


def goodput_table(audit_path: Path) -> str:
    from router.audit_log import read_audit_log
    from router.goodput import goodput_by_client

    from .cli_router import GOODPUT_COLUMNS

    report = goodput_by_client(read_audit_log(audit_path))
    return format_table([{"client": c} | r for c, r in report.items()], GOODPUT_COLUMNS)


def run_demo(zoo_root: Path, profile: str, run_dir: Path, rebuild: bool, steps, demo: DemoSettings = DemoSettings()) -> None:
    from zoo.data import Dataset
    from zoo.manifest import load_manifest

    zoo_dir = ensure_zoo(zoo_root, profile, rebuild)
    manifest = load_manifest(zoo_dir)
    data = Dataset.load(zoo_dir / manifest.zoo.dataset.data_file)
    run_dir.mkdir(parents=True, exist_ok=True)
    print("[2] starting Triton and the router on loopback ...")
    with triton_for(zoo_dir, run_dir) as triton, router_for(zoo_dir, run_dir, triton, "router") as router:
        print(f"    Triton gRPC {triton.endpoints.grpc_url}, router {router.url}, audit log {router.audit_path}")
        run_every_model_once(triton, manifest, data.x["test"])
        print("[3] every model answered through Triton; the zoo (latencies profiled at build time on this machine):\n")
        print(zoo_table(manifest) + "\n")
        print("[4] benign queries through the router:\n")
        benign_queries(router, data)
        print("\n    goodput from the router's audit log:\n")
        print(goodput_table(router.audit_path) + "\n")
        for step in steps:
            step(zoo_dir=zoo_dir, manifest=manifest, data=data, triton=triton, router=router, run_dir=run_dir, demo=demo)


DEMO_NOISE = {"name": "metric_noise", "distribution": "laplace", "accuracy_scale": 0.02, "latency_scale_ms": 0.1}


def attack_step(zoo_dir, manifest, data, triton, router, run_dir, demo: DemoSettings, **_) -> None:
    """[5] fingerprinting (staircase vs grid scan) without and with the noise defense; [6] extraction."""
    from attacks.knockoff import KnockoffSettings

    from common.atomic import write_json_atomic
    from common.versions import software_versions
    from attacks.campaigns import extract_and_score, fingerprint_and_score

    from .cli_attack import FINGERPRINT_COLUMNS, extraction_table, fingerprint_rows

    print("[5] fingerprinting the most accurate model through the router's public API:\n")
    n = demo.consistency_queries
    plain = fingerprint_and_score(router, manifest, data, ["staircase", "grid_scan"], 1, n, 25, 3)
    rows = [r | {"router": "no defense"} for r in fingerprint_rows(plain["results"])]
    with router_for(zoo_dir, run_dir, triton, "router_noise", defenses=[DEMO_NOISE]) as noisy:
        defended = fingerprint_and_score(noisy, manifest, data, ["staircase"], 1, n, 25, 3)
    rows += [r | {"router": f"metric noise (laplace, {DEMO_NOISE['accuracy_scale']} acc, "
                            f"{DEMO_NOISE['latency_scale_ms']} ms)"} for r in fingerprint_rows(defended["results"])]
    print(format_table(rows, [("router", "router")] + FINGERPRINT_COLUMNS))
    print(f"    target (harness view): {plain['target']}; consistency = share of {n} later queries it served\n")
    print("[6] Knockoff extraction of that model: explicit (served alone), fingerprinted, naive (no requirements):\n")
    knockoff = KnockoffSettings(epochs=demo.surrogate_epochs)
    out = extract_and_score(zoo_dir, manifest, data, triton, router, list(demo.budgets), list(demo.seeds),
                            "attacker_pool", knockoff, log=lambda *_: None)
    print(extraction_table(out["summary"]) + "\n")
    write_json_atomic(run_dir / "attacks.json", {"fingerprint": plain, "fingerprint_defended": defended,
                                                 "defense": DEMO_NOISE, "extraction": out,
                                                 "knockoff": knockoff.as_dict(), "demo": demo.__dict__,
                                                 "software": software_versions()})


def load_step(zoo_dir, manifest, data, triton, router, run_dir, demo: DemoSettings, **_) -> None:
    """[7] a short mixed load with Locust (benign warm-up, attack, cool-down) against a fresh router."""
    from attacks.knockoff import KnockoffSettings
    from loadtests.config import LoadSettings

    from common.atomic import write_json_atomic
    from loadtests.run import prepare_out_dir, run_locust

    from loadtests.run_summary import summarize_run

    from .cli_loadtest import print_summary
    from common.versions import software_versions

    out_dir = prepare_out_dir(run_dir / "loadtest")
    s = LoadSettings(data_file=str(zoo_dir / "data.npz"), out_dir=str(out_dir), benign_users=demo.benign_users,
                     attackers=1, warmup_s=demo.warmup_s, attack_s=demo.attack_s, cooldown_s=demo.cooldown_s,
                     attack_budget=demo.attack_budget)
    print(f"[7] mixed load with Locust: {s.benign_users} benign users throughout, {s.attackers} attacker in the "
          f"middle {s.attack_s:.0f} s ({s.total_s:.0f} s in all) ...\n")
    with router_for(zoo_dir, out_dir, triton, "router_load") as load_router:
        prefix = run_locust(load_router.url, s, out_dir)
    summary = summarize_run(out_dir, prefix, load_router.audit_path, zoo_dir, s,
                            KnockoffSettings(epochs=demo.surrogate_epochs))
    print_summary(summary)
    write_json_atomic(out_dir / "summary.json", {"kind": "loadtest", "settings": s.__dict__, "seed": s.seed,
                                                 "software": software_versions()} | summary)
    print(f"\n    reports: {out_dir}/locust.html, {out_dir}/locust_stats.csv, {out_dir}/summary.json")
