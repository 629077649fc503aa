"""``psml loadtest``: a headless Locust run of benign and attacker users against a real router and Triton,
with Locust's CSV and HTML reports and the psml summary (JSON plus a printed table)."""

from __future__ import annotations

import time
from pathlib import Path

from common.atomic import write_json_atomic
from common.errors import PsmlError
from common.tables import format_table
from common.versions import hardware, software_versions
from loadtests.run import prepare_out_dir, run_locust
from zoo.manifest import ENDPOINTS



def summarize_run(out_dir: Path, prefix: Path, audit_path: Path, zoo_dir: Path, settings, knockoff,
                  since_ts: float = 0.0) -> dict:
    """``since_ts``: ignore audit records of requests that started before this run (a shared router's log)."""
    from attacks.experiment import front_by_accuracy, victim_labels
    from router.audit_log import read_audit_log
    from zoo.data import Dataset
    from zoo.manifest import load_manifest

    from loadtests.summary import (attacker_success, audit_summary, benign_useful_goodput, encoder_score,
                                   exact_latencies, interrupted_requests, knockoff_score, locust_stats,
                                   per_model_under_load)

    manifest = load_manifest(zoo_dir)
    data = Dataset.load(zoo_dir / manifest.zoo.dataset.data_file)
    victim = front_by_accuracy(manifest)[0]
    stats = locust_stats(prefix)
    records = [r for r in read_audit_log(audit_path) if r["ts"] >= since_ts]
    audit = audit_summary(records, victim.name, settings.attack_batch)
    transcripts = sorted(Path(settings.out_dir).glob("attacker-*.npz"))
    if manifest.zoo.kind == "encoder":  # a stolen encoder per transcript, scored by its downstream probe
        from attacks.encoder_extraction import VictimReference

        score = encoder_score(data, VictimReference.of_model(zoo_dir, victim, data), settings.seed)
    else:
        score = knockoff_score(data, victim_labels(zoo_dir, victim, data.x["test"]), knockoff)
    attackers = attacker_success(transcripts, score)
    interrupted = interrupted_requests(out_dir)
    latency = exact_latencies(out_dir)
    return {"victim": victim.name, "locust": stats, "latency": latency,
            "per_model": per_model_under_load(records, manifest), "audit": audit, "attackers": attackers,
            "benign_useful": benign_useful_goodput(out_dir),
            "interrupted_at_stop": interrupted, "count_check": count_check(latency, interrupted, audit["records"])}


def count_check(latency: dict, interrupted: dict, audit_records: int) -> dict:
    """Requests Locust reported (every request event, from the exact-latency files) plus those it cut off at
    stop, against the router's audit log; ``unaccounted`` != 0 means a request was lost or double-counted.

    Counted from the exact-latency files, not Locust's ``_stats.csv``: Locust rewrites that CSV once a second
    and does not write it again after its users stop, so it can miss the last second's requests."""
    served = tuple(ENDPOINTS.values())  # /v1/infer or /v1/embed: the requests the audit log records
    locust = sum(v["requests"] for k, v in latency.items() if k.endswith(served))
    cut = sum(v for k, v in interrupted.items() if k.endswith(served))
    return {"locust": locust, "interrupted": cut, "audit_records": audit_records,
            "unaccounted": audit_records - locust - cut, "match": audit_records == locust + cut}


def print_summary(summary: dict) -> None:
    rows = [{"name": n, "rps": summary["locust"].get(n, {}).get("rps")} | s
            | {"ci": "[{:.3f}, {:.3f}]".format(*s["ci95"]["p99_ms"])} for n, s in summary["latency"].items()]
    print("latency from every request's exact time (ms)")
    print(format_table(rows, [("name", "requests by class"), ("requests", "requests"), ("failures", "non-200"),
                              ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms"), ("ci", "p99 95% CI"),
                              ("rps", "req/s")]))
    if summary["per_model"]:
        print("\nper model under load (router latency from the audit log) vs the manifest's profile")
        print(format_table(summary["per_model"], [
            ("model", "model"), ("served", "served"), ("profile_selection_ms", "profile selection ms"),
            ("profile_router_p99_ms", "profile router p99 c1"), ("load_p50_ms", "load p50 ms"),
            ("load_p99_ms", "load p99 ms"), ("within_profile", "within profile"), ("slo_attainment", "SLO met")]))
        for row in summary["per_model"]:
            if row["load_p99_ms"] > row["profile_selection_ms"]:
                print(f"  profile does not hold under this load for {row['model']}: p99 {row['load_p99_ms']:.3f} ms in "
                      f"the router vs {row['profile_selection_ms']:.3f} ms profiled ({row['within_profile']:.1%} of "
                      "its requests within it); re-profile with the router path (psml zoo validate)")
    from .cli_router import GOODPUT_COLUMNS

    g = summary["audit"]["goodput"]
    print("\n" + format_table([{"client": c} | r for c, r in g.items()], GOODPUT_COLUMNS))
    useful = summary.get("benign_useful")
    if useful:
        print(f"benign useful goodput (answered within the SLO, label right): {useful['useful_goodput_share']:.3f} of "
              f"{useful['samples_sent']} samples; label accuracy of the answers {useful['label_accuracy']:.3f}")
    actions = summary["audit"].get("defense_actions") or {}
    if actions:
        print("\nper-client defense actions")
        print(format_table([{"client": c} | r | {"detections": len(r["detections"])} for c, r in actions.items()], [
            ("client", "client"), ("flagged_after_samples", "flagged after samples"), ("detections", "detections"),
            ("blocked", "blocked"), ("rate_limited", "rate-limited"), ("budget_exhausted", "budget refusals")]))
    if summary["attackers"]:
        encoder = any("cosine" in r for r in summary["attackers"])
        scores = ([("accuracy", "stolen encoder's probe acc"), ("agreement", "agreement with victim's probe"),
                   ("cosine", "cosine to victim")] if encoder else [("accuracy", "surrogate acc"), ("fidelity", "fidelity")])
        print("\n" + format_table(summary["attackers"], [("transcript", "attacker"),
                                                        ("fingerprint_queries", "fingerprint queries"),
                                                        ("answers", "answers")] + scores))
    if summary["interrupted_at_stop"]:
        print(f"\nrequests cut off by Locust's stop (on the wire, not in its statistics): {summary['interrupted_at_stop']}")
    check = summary["count_check"]
    print(f"\nrequests: Locust {check['locust']} + cut off at stop {check['interrupted']}, audit log "
          f"{check['audit_records']} -> {'match' if check['match'] else str(check['unaccounted']) + ' unaccounted'}")
    share = summary["audit"]["attacker_victim_share"]
    if share is not None:
        print(f"\nattacker extraction queries served by the victim ({summary['victim']}): {share:.1%}")


def loadtest(a) -> None:
    from attacks.knockoff import KnockoffSettings
    from loadtests.config import LoadSettings
    from loadtests.summary import check_goals

    from .cli_attack import router_overrides
    from stack.loopback import router_for, triton_for

    out_dir = prepare_out_dir(Path(a.out_dir))
    zoo_dir = Path(a.zoo)
    settings = LoadSettings(data_file=str(zoo_dir / "data.npz"), out_dir=str(out_dir), benign_users=a.benign_users,
                            attackers=a.attackers, warmup_s=a.warmup_s, attack_s=a.attack_s, cooldown_s=a.cooldown_s,
                            spawn_rate_per_s=a.spawn_rate, attack_budget=a.attack_budget, seed=a.seed,
                            benign_key=a.benign_key, attacker_key=a.attacker_key)
    knockoff = KnockoffSettings(seed=a.seed)
    started = time.time()
    if a.router_url:  # a router that is already running: only its audit records from this run count
        if not a.audit_log:
            raise PsmlError("--router-url needs --audit-log: goodput and the count check come from the router's audit log")
        prefix, audit_path, router_info = run_locust(a.router_url, settings, out_dir, a.processes), Path(a.audit_log), \
            {"external": a.router_url}
    else:
        with triton_for(zoo_dir, out_dir) as triton, \
                router_for(zoo_dir, out_dir, triton, **router_overrides(a.settings)) as router:
            prefix = run_locust(router.url, settings, out_dir, a.processes)
            audit_path = router.audit_path
        router_info = router_overrides(a.settings)
    summary = summarize_run(out_dir, prefix, audit_path, zoo_dir, settings, knockoff, since_ts=started)
    goals = check_goals(summary["latency"], summary["audit"]["goodput"], a.max_p99_ms, a.min_goodput)
    print_summary(summary)
    for line in goals:
        print(line)
    write_json_atomic(out_dir / "summary.json", {
        "kind": "loadtest", "created_unix": started, "seed": a.seed, "settings": settings.__dict__,
        "router": router_info, "processes": a.processes, "knockoff": knockoff.as_dict(),
        "goals": goals, "software": software_versions(), "hardware": hardware()} | summary)
    print(f"\nreports: {out_dir}/locust_stats.csv, {out_dir}/locust.html, {out_dir}/summary.json")
    if any(line.startswith("INVALID") for line in goals):
        raise PsmlError("a load-test goal was missed (see the INVALID lines above)")


def register(sub) -> None:
    p = sub.add_parser("loadtest", help="headless Locust run: benign and attacker users against a real stack")
    p.add_argument("--zoo", default="model_repository/default", help="a built zoo folder (psml zoo build)")
    p.add_argument("--settings", default="router/settings.default.json", help="router settings (policy, defenses)")
    p.add_argument("--out-dir", default="runs/loadtest", help="Locust reports, exact request times and summary.json")
    p.add_argument("--benign-users", type=int, default=8, help="benign Locust users, present throughout")
    p.add_argument("--attackers", type=int, default=1, help="attacker users, present during the attack phase")
    p.add_argument("--warmup-s", type=float, default=10.0, help="seconds of benign load before the attack")
    p.add_argument("--attack-s", type=float, default=30.0, help="seconds of the attack phase")
    p.add_argument("--cooldown-s", type=float, default=10.0, help="seconds of benign load after the attack")
    p.add_argument("--spawn-rate", type=float, default=8.0, help="users started per second")
    p.add_argument("--attack-budget", type=int, default=1000, help="samples each attacker sends")
    p.add_argument("--processes", type=int, default=0, help="Locust worker processes on this machine (0: one process)")
    p.add_argument("--seed", type=int, default=0, help="seeds benign inputs, requirements and attackers")
    p.add_argument("--router-url", help="load this running router instead of starting a stack (needs --audit-log)")
    p.add_argument("--audit-log", help="with --router-url: the router's audit log (same clock as this machine)")
    p.add_argument("--benign-key", default="demo-benign-key", help="API key of the benign users")
    p.add_argument("--attacker-key", default="demo-attacker-key", help="API key of the attackers")
    p.add_argument("--max-p99-ms", type=float, help="goal: benign p99 latency; exit non-zero when missed")
    p.add_argument("--min-goodput", type=float, help="goal: benign goodput share; exit non-zero when missed")
    p.set_defaults(func=loadtest)
