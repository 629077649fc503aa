"""``psml attack fingerprint|extract``: each starts its own Triton and router (from a zoo and a router settings
file, so defenses can be switched on), runs the attack through the public API, scores it, prints a table and
writes a JSON result with seeds, settings and software versions."""

from __future__ import annotations

import tempfile
from pathlib import Path

from common.errors import ConfigError
from stack.loopback import router_for, triton_for
from attacks.campaigns import ATTACKER_KEY, check_budgets, extract_and_score, fingerprint_and_score
from common.tables import format_table
from .cli_shared import load_zoo, router_overrides, write_result_file

def fingerprint_rows(results: dict) -> list[dict]:
    rows = []
    for method, r in results.items():
        spec = r["spec"] or {}
        rows.append({"method": method, "queries": r["queries"], "min_accuracy": spec.get("min_accuracy", "-"),
                     "max_latency_ms": spec.get("max_latency_ms", "-"), "consistency": r["consistency"]["consistency"]})
    return rows


FINGERPRINT_COLUMNS = [("method", "method"), ("queries", "queries spent"), ("min_accuracy", "min_accuracy"),
                       ("max_latency_ms", "max_latency_ms"), ("consistency", "consistency")]


def fingerprint(a) -> None:
    from types import SimpleNamespace

    manifest, data = load_zoo(a.zoo)
    methods = ["staircase", "grid_scan"] if a.method == "both" else [a.method]
    args = (manifest, data, methods, a.target_rank, a.consistency_queries, a.grid_size, a.repeats)
    if a.router_url:  # a router that is already running (e.g. the compose deployment)
        external = SimpleNamespace(url=a.router_url, audit_path=Path(a.audit_log) if a.audit_log else None)
        out = fingerprint_and_score(external, *args, api_key=a.api_key)
        router_info = {"external": a.router_url, "audit_log": a.audit_log}
    else:
        with tempfile.TemporaryDirectory(prefix="psml-attack-") as tmp, triton_for(a.zoo, tmp) as triton, \
                router_for(a.zoo, tmp, triton, **router_overrides(a.settings)) as router:
            out = fingerprint_and_score(router, *args)
        router_info = router_overrides(a.settings)
    print(f"fingerprinting target: rank {a.target_rank} along the accuracy axis = {out['target']} (harness view)\n")
    print(format_table(fingerprint_rows(out["results"]), FINGERPRINT_COLUMNS))
    write_result_file(a.out, "fingerprint", vars(a), out | {"router": router_info})


EXTRACTION_COLUMNS = [("budget", "budget"), ("setting", "setting"), ("outputs", "outputs"), ("seeds", "seeds"),
                      ("accuracy", "accuracy"), ("accuracy_std", "+/-"), ("fidelity", "fidelity"),
                      ("fidelity_std", "+/-"), ("failed", "failed seeds")]


def extraction_table(rows: list[dict]) -> str:
    from attacks.psml_paper import attack_claims

    paper = attack_claims()
    shown = [r | {"outputs": "labels" if r.get("labels_only") else "probabilities",
                  "failed": ", ".join(map(str, r.get("failed_seeds") or [])) or "-"} for r in rows]
    lines = [format_table(shown, EXTRACTION_COLUMNS), ""]
    by = {(r["budget"], r.get("labels_only", False), r["setting"]): r for r in rows}
    for budget, lo in dict.fromkeys((r["budget"], r.get("labels_only", False)) for r in rows):
        f, e, n = (by.get((budget, lo, s)) for s in ("fingerprinted", "explicit", "naive"))
        if not (f and e and n):
            continue
        if f["accuracy"] is None or e["accuracy"] is None or n["accuracy"] is None:
            lines.append(f"{budget}{' labels' if lo else ''}: no comparison, a setting has no trained surrogate "
                         f"(fingerprinting or training failed; see failed seeds)")
            continue
        lines.append(f"{budget}{' labels' if lo else ''}: fingerprinted - explicit = {f['accuracy'] - e['accuracy']:+.3f} "
                     f"acc, {f['fidelity'] - e['fidelity']:+.3f} fid (PSML: {paper['fingerprinted_vs_explicit']}); "
                     f"fingerprinted - naive = {f['accuracy'] - n['accuracy']:+.3f} acc, "
                     f"{f['fidelity'] - n['fidelity']:+.3f} fid (PSML: {paper['fingerprinted_vs_naive']})")
    return "\n".join(lines)


def extract(a) -> None:
    from attacks.knockoff import KnockoffSettings

    manifest, data = load_zoo(a.zoo)
    kind = manifest.zoo.kind if a.kind == "auto" else a.kind
    if kind == "encoder":
        from .cli_encoder_attack import extract as extract_encoders

        return extract_encoders(a)
    if manifest.zoo.kind == "encoder":
        raise ConfigError(f"zoo {a.zoo} holds encoders: use --kind encoder (or auto)")
    base = KnockoffSettings(surrogate=a.surrogate, epochs=a.epochs, labels_only=a.labels_only, batch_size=a.batch_size)
    check_budgets(a.budgets, data, a.pool)  # before Triton starts: a bad budget costs nothing
    with tempfile.TemporaryDirectory(prefix="psml-attack-") as tmp, triton_for(a.zoo, tmp) as triton, \
            router_for(a.zoo, tmp, triton, **router_overrides(a.settings)) as router:
        out = extract_and_score(Path(a.zoo), manifest, data, triton, router, a.budgets, a.seeds, a.pool, base)
    print(f"\nextraction of {out['victim']} (most accurate model), pool {a.pool}, "
          f"{'top-1 labels' if a.labels_only else 'probabilities'}, surrogate {a.surrogate}:\n")
    print(extraction_table(out["summary"]))
    write_result_file(a.out, "extraction", vars(a), out | {"knockoff": base.as_dict(), "router": router_overrides(a.settings)})


def register(sub) -> None:
    g = sub.add_parser("attack", help="fingerprint the zoo and extract a victim through the router").add_subparsers(
        dest="cmd", required=True)
    helps = {"fingerprint": "find a specification that always reaches one front model (staircase and/or grid scan)",
             "extract": "steal the most accurate model (Knockoff; encoders: direct extraction): explicit, fingerprinted, naive"}
    for name, func in (("fingerprint", fingerprint), ("extract", extract)):
        p = g.add_parser(name, help=helps[name])
        p.add_argument("--zoo", default="model_repository/default", help="a built zoo folder (psml zoo build)")
        p.add_argument("--settings", default="router/settings.default.json",
                       help="router settings whose policy, defenses, on_no_model and seed the attacked router uses")
        p.add_argument("--out", default=f"results/{name}.json", help="JSON result file (written atomically)")
        p.set_defaults(func=func)
        if name == "fingerprint":
            p.add_argument("--method", choices=["staircase", "grid_scan", "both"], default="both",
                           help="fingerprinting method(s) to run and compare")
            p.add_argument("--target-rank", type=int, default=1, help="1 = most accurate Pareto model")
            p.add_argument("--consistency-queries", type=int, default=200,
                           help="later queries with the found specification, scored by who served them")
            p.add_argument("--grid-size", type=int, default=25, help="grid scan: cells per axis")
            p.add_argument("--repeats", type=int, default=3, help="grid scan: queries per cell")
            p.add_argument("--router-url", help="attack this running router instead of starting a stack")
            p.add_argument("--api-key", default=ATTACKER_KEY, help="with --router-url: the attacker's API key")
            p.add_argument("--audit-log", help="with --router-url: its audit log, to score consistency by the model "
                                               "that really answered (else: by answer signatures)")
        else:
            p.add_argument("--budgets", nargs="+", default=["small", "medium", "large"],
                           help="query budgets: names (small 250, medium 1000, large 3000 samples), sample counts "
                                "or fractions of the query pool, e.g. small 600 0.5")
            p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                           help="one extraction per seed (which pool samples, the surrogate's initialisation)")
            p.add_argument("--pool", default="attacker_pool", choices=["attacker_pool", "ood_noise"],
                           help="the attacker's query pool: in-distribution samples or out-of-distribution noise")
            p.add_argument("--labels-only", action="store_true", help="train on top-1 labels, not probabilities")
            p.add_argument("--surrogate", default="cnn_large", help="the attacker's architecture (zoo/architectures.py)")
            p.add_argument("--epochs", type=int, default=40, help="surrogate training epochs")
            p.add_argument("--batch-size", type=int, default=25, help="samples per request")
            p.add_argument("--kind", choices=["auto", "classifier", "encoder"], default="auto",
                           help="Knockoff on a classifier zoo, or direct extraction of an encoder (default: the zoo's)")
            p.add_argument("--losses", nargs="+", default=["mse", "infonce", "softnn"],
                           help="encoder extraction only: losses to train the stolen encoder with")
