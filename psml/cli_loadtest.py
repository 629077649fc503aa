"""``psml loadtest``: benign and attacker users against a real router and Triton, with the psml summary (JSON
plus a printed table) and a perf_analyzer-style CSV. ``--arrival closed`` (the default): a headless Locust run
with Locust's CSV and HTML reports. ``--arrival poisson --rate R``: an open loop (loadtests/open_loop.py).
``--find-max-rate --p99-ms B``: the highest Poisson rate within B (loadtests/max_rate.py)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from common.atomic import write_json_atomic
from common.errors import PsmlError
from common.tables import format_table
from common.versions import hardware, software_versions
from loadtests.arrivals import ARRIVALS, SEED_STREAMS
from loadtests.open_run import open_loop_run
from loadtests.open_summary import format_open_loop
from loadtests.perf_csv import perf_row, server_means_us, triton_stats, write_perf_csv
from loadtests.run import prepare_out_dir, run_locust
from loadtests.run_summary import summarize_run
from loadtests.summary import check_goals



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
    print(f"\nrequests: load generator {check['locust']} + cut off at stop {check['interrupted']}, audit log "
          f"{check['audit_records']} -> {'match' if check['match'] else str(check['unaccounted']) + ' unaccounted'}")
    share = summary["audit"]["attacker_victim_share"]
    if share is not None:
        print(f"\nattacker extraction queries served by the victim ({summary['victim']}): {share:.1%}")


class LoadArgumentError(PsmlError):
    """A load-test argument that cannot work: one line, exit 2, before any server starts."""

    exit_code = 2


def check_args(a) -> None:
    """Every argument that cannot work, refused before any server starts."""
    poisson = a.arrival == "poisson" or a.find_max_rate
    if a.arrival == "poisson" and a.find_max_rate:
        raise LoadArgumentError("--find-max-rate runs its own Poisson rates: leave out --arrival poisson")
    if a.arrival == "poisson" and a.rate is None:
        raise LoadArgumentError("--arrival poisson needs --rate (requests per second)")
    if a.rate is not None and a.arrival != "poisson":
        raise LoadArgumentError("--rate needs --arrival poisson (the closed loop's rate follows the server)")
    if a.rate is not None and not a.rate > 0:
        raise LoadArgumentError(f"--rate must be > 0 requests/s, got {a.rate:g}")
    if a.duration_s is not None and (not poisson or not a.duration_s > 0):
        raise LoadArgumentError("--duration-s needs --arrival poisson and must be > 0 seconds")
    if a.processes < 0:
        raise LoadArgumentError(f"--processes must be >= 0, got {a.processes}")
    if a.find_max_rate and a.p99_ms is None:
        raise LoadArgumentError("--find-max-rate needs --p99-ms (the p99 bound the rate must keep)")
    if a.p99_ms is not None and not a.find_max_rate:
        raise LoadArgumentError("--p99-ms goes with --find-max-rate (a single run's goal is --max-p99-ms)")
    if a.find_max_rate:
        from zoo.manifest import load_manifest

        fastest = min(m.selection_latency_ms for m in load_manifest(Path(a.zoo)).models)
        if not a.p99_ms >= fastest:
            raise LoadArgumentError(f"--p99-ms {a.p99_ms:g} is below the zoo's fastest profiled latency "
                                    f"({fastest:.3f} ms): no rate can keep it")
        if a.min_goodput is not None and not 0 <= a.min_goodput <= 1:  # a single run's goal may be unreachable
            raise LoadArgumentError(f"--min-goodput must be a share in [0, 1], got {a.min_goodput:g}")
        if not (a.start_rate > 0 and a.trial_s > 0 and a.resolution > 0):
            raise LoadArgumentError("--start-rate, --trial-s and --resolution must be > 0")


def loadtest(a) -> None:
    from attacks.knockoff import KnockoffSettings
    from loadtests.config import LoadSettings

    check_args(a)
    out_dir = prepare_out_dir(Path(a.out_dir))
    zoo_dir = Path(a.zoo)
    settings = LoadSettings(data_file=str(zoo_dir / "data.npz"), out_dir=str(out_dir), benign_users=a.benign_users,
                            attackers=0 if a.find_max_rate else a.attackers, warmup_s=a.warmup_s,
                            attack_s=a.attack_s, cooldown_s=a.cooldown_s, spawn_rate_per_s=a.spawn_rate,
                            attack_budget=a.attack_budget, seed=a.seed, benign_key=a.benign_key,
                            attacker_key=a.attacker_key)
    with _stack(a, zoo_dir, out_dir) as (router_url, audit_path, triton_url, router_info):
        if a.find_max_rate:
            return _find_max_rate(a, settings, router_url, audit_path, triton_url, router_info)
        started = time.time()
        before = triton_stats(triton_url)
        if a.arrival == "poisson":
            open_settings = _open_settings(a, a.rate, _duration_s(a, settings))
            figures = open_loop_run(router_url, settings, open_settings, None, triton_url)
            prefix, perf = None, figures.pop("perf")
            figures["open_loop_settings"] = asdict(open_settings) | {"seed_streams": SEED_STREAMS}
        else:
            cpu0, wall0 = _children_cpu_s(), time.perf_counter()
            prefix = run_locust(router_url, settings, out_dir, a.processes)
            figures = {"arrival": "closed", "offered_rate_per_s": None,
                       "generator": _locust_check(_children_cpu_s() - cpu0, time.perf_counter() - wall0, a.processes)}
        after = triton_stats(triton_url)
    knockoff = KnockoffSettings(seed=a.seed)
    summary = summarize_run(out_dir, prefix, audit_path, zoo_dir, settings, knockoff, since_ts=started)
    if a.arrival == "closed":
        figures["achieved_rate_per_s"] = sum(v["requests"] for k, v in summary["latency"].items()
                                             if k.startswith("benign ")) / settings.total_s
        perf = _closed_perf_row(summary, a, settings, server_means_us(before, after))
    goals = check_goals(summary["latency"], summary["audit"]["goodput"], a.max_p99_ms, a.min_goodput)
    print_summary(summary)
    print()
    if a.arrival == "poisson":
        print("\n".join(format_open_loop(figures)))
    elif figures["generator"]["limited"]:
        print("\n".join(f"GENERATOR-LIMITED: {r}" for r in figures["generator"]["reasons"]))
    for line in goals:
        print(line)
    write_perf_csv(out_dir / "perf.csv", [perf])
    write_json_atomic(out_dir / "summary.json", {
        "kind": "loadtest", "created_unix": started, "seed": a.seed, "settings": settings.__dict__,
        "router": router_info, "processes": a.processes, "knockoff": knockoff.as_dict(),
        "goals": goals, "software": software_versions(), "hardware": hardware()} | figures | summary)
    reports = "perf.csv, summary.json" + (", locust_stats.csv, locust.html" if prefix else "")
    print(f"\nreports in {out_dir}: {reports}")
    if any(line.startswith("INVALID") for line in goals):
        raise PsmlError("a load-test goal was missed (see the INVALID lines above)")


@contextmanager
def _stack(a, zoo_dir: Path, out_dir: Path):
    """(router URL, audit log, Triton HTTP URL or None, what the summary records of the router)."""
    from stack.loopback import router_for, triton_for

    from .cli_shared import router_overrides

    if a.router_url:  # a router that is already running: only its audit records from this run count
        if not a.audit_log:
            raise PsmlError("--router-url needs --audit-log: goodput and the count check come from the router's audit log")
        yield a.router_url, Path(a.audit_log), a.triton_url, {"external": a.router_url}
        return
    with triton_for(zoo_dir, out_dir) as triton, \
            router_for(zoo_dir, out_dir, triton, **router_overrides(a.settings)) as router:
        yield router.url, router.audit_path, triton.endpoints.http_url, router_overrides(a.settings)


def _duration_s(a, settings) -> float:
    return a.duration_s if a.duration_s is not None else settings.total_s


def _open_settings(a, rate: float, duration_s: float, trial: int = 0):
    from loadtests.open_loop import OpenLoopSettings

    return OpenLoopSettings(rate_per_s=rate, duration_s=duration_s, processes=max(1, a.processes),
                            late_slack_ms=a.late_slack_ms, trial=trial)


def _children_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _locust_check(cpu_s: float, wall_s: float, processes: int) -> dict:
    """Locust's processes' CPU over the run: above 90% of a core each, Locust, not the server, set the pace."""
    share = cpu_s / wall_s / max(1, processes) if wall_s > 0 else 0.0
    limited = share > 0.9
    return {"limited": limited, "cpu_share_of_one_core": share,
            "reasons": [f"Locust used {share:.0%} of one core per process: add --processes"] if limited else []}


def _closed_perf_row(summary: dict, a, settings, server_us: dict) -> dict:
    import json

    from loadtests.config import LATENCY_FILE_GLOB
    from loadtests.open_summary import quantiles_ms

    ms = [r["ms"] for p in sorted(Path(settings.out_dir).glob(LATENCY_FILE_GLOB)) for line in p.read_text().splitlines()
          if (r := json.loads(line))["name"].startswith("benign /v1/") and r["ok"] and r["name"] != "benign /v1/zoo"]
    useful = summary.get("benign_useful") or {}
    samples = useful.get("samples_answered")
    return perf_row("Concurrency", a.benign_users, samples / settings.total_s if samples else None, quantiles_ms(ms),
                    server_us)


def _find_max_rate(a, settings, router_url: str, audit_path: Path, triton_url: str | None, router_info) -> None:
    from loadtests.max_rate import SearchSettings, search_max_rate
    from loadtests.open_run import trial_figures

    search = SearchSettings(p99_ms=a.p99_ms, min_goodput=a.min_goodput, start_rate_per_s=a.start_rate,
                            trial_s=a.trial_s, resolution=a.resolution, max_trials=a.max_trials)
    from loadtests.open_run import warm_up

    warm_up(router_url, settings, a.start_rate)
    started = time.time()
    print(f"searching the highest Poisson rate with p99 <= {a.p99_ms:g} ms"
          + (f" and goodput >= {a.min_goodput:g}" if a.min_goodput is not None else ""), flush=True)
    result = search_max_rate(lambda rate, duration_s, i: trial_figures(open_loop_run(
        router_url, settings, _open_settings(a, rate, duration_s, i), audit_path, triton_url)), search,
        log=lambda line: print(line, flush=True))
    print(format_table(result["trials"], [("offered_rate_per_s", "offered req/s"), ("achieved_rate_per_s", "achieved"),
                                          ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("goodput", "goodput"),
                                          ("dropped_share", "dropped"), ("late_share", "late sends"),
                                          ("passed", "pass")]))
    best = result["max_rate_per_s"]
    print(f"max rate within p99 {a.p99_ms:g} ms: " + (f"{best:.1f} req/s" if best else "none") + f" ({result['stopped']})")
    if result["generator_limited_trials"]:
        print(f"{result['generator_limited_trials']} trial(s) were generator-limited: the rate found may be the "
              "generator's limit, not the server's (try --processes)")
    write_perf_csv(Path(a.out_dir) / "perf.csv", [t["perf"] for t in result["trials"]])
    write_json_atomic(Path(a.out_dir) / "max_rate.json", {
        "kind": "max_rate", "created_unix": started, "seed": a.seed, "arrival": "poisson", "router": router_info,
        "processes": max(1, a.processes), "late_slack_ms": a.late_slack_ms, "seed_streams": SEED_STREAMS,
        "open_loop_settings": asdict(_open_settings(a, a.start_rate, a.trial_s)), "settings": settings.__dict__,
        "software": software_versions(), "hardware": hardware()} | result)
    print(f"\nreports in {a.out_dir}: max_rate.json, perf.csv (one row per rate tried)")


def register(sub) -> None:
    p = sub.add_parser("loadtest", help="benign and attacker load against a real stack (closed loop or Poisson)")
    p.add_argument("--zoo", default="model_repository/default", help="a built zoo folder (psml zoo build)")
    p.add_argument("--settings", default="router/settings.default.json", help="router settings (policy, defenses)")
    p.add_argument("--out-dir", default="runs/loadtest", help="reports, exact request times and summary.json")
    p.add_argument("--arrival", choices=ARRIVALS, default="closed",
                   help="closed: Locust users wait for each answer (default); poisson: open loop at --rate")
    p.add_argument("--rate", type=float, help="with --arrival poisson: offered requests per second in all")
    p.add_argument("--duration-s", type=float,
                   help="with --arrival poisson: seconds of sends (default: warm-up + attack + cool-down)")
    p.add_argument("--late-slack-ms", type=float, default=5.0,
                   help="a Poisson send issued later than this after its scheduled time counts late (default 5)")
    p.add_argument("--benign-users", type=int, default=8, help="closed loop: benign Locust users, present throughout")
    p.add_argument("--attackers", type=int, default=1, help="attackers (closed loop each), during the attack phase")
    p.add_argument("--warmup-s", type=float, default=10.0, help="seconds of benign load before the attack")
    p.add_argument("--attack-s", type=float, default=30.0, help="seconds of the attack phase")
    p.add_argument("--cooldown-s", type=float, default=10.0, help="seconds of benign load after the attack")
    p.add_argument("--spawn-rate", type=float, default=8.0, help="users started per second")
    p.add_argument("--attack-budget", type=int, default=1000, help="samples each attacker sends")
    p.add_argument("--processes", type=int, default=0,
                   help="closed: Locust worker processes; poisson: generator processes sharing the rate (0: one)")
    p.add_argument("--seed", type=int, default=0, help="seeds send times, benign inputs, requirements and attackers")
    p.add_argument("--router-url", help="load this running router instead of starting a stack (needs --audit-log)")
    p.add_argument("--audit-log", help="with --router-url: the router's audit log (same clock as this machine)")
    p.add_argument("--triton-url", help="with --router-url: Triton's HTTP host:port, for the CSV's server columns")
    p.add_argument("--benign-key", default="demo-benign-key", help="API key of the benign users")
    p.add_argument("--attacker-key", default="demo-attacker-key", help="API key of the attackers")
    p.add_argument("--max-p99-ms", type=float, help="goal: benign p99 latency; exit non-zero when missed")
    p.add_argument("--min-goodput", type=float,
                   help="goal: benign goodput share (exit non-zero when missed); with --find-max-rate, a trial's bound")
    p.add_argument("--find-max-rate", action="store_true", help="search the highest Poisson rate within --p99-ms")
    p.add_argument("--p99-ms", type=float, help="with --find-max-rate: the p99 bound from the scheduled send")
    p.add_argument("--start-rate", type=float, default=20.0, help="with --find-max-rate: first rate tried (req/s)")
    p.add_argument("--trial-s", type=float, default=5.0, help="with --find-max-rate: seconds per rate (at least "
                   "300 requests, at most 20 s)")
    p.add_argument("--resolution", type=float, default=0.1,
                   help="with --find-max-rate: stop when the failing rate is within this share of the passing one")
    p.add_argument("--max-trials", type=int, default=12, help="with --find-max-rate: at most this many rates")
    p.set_defaults(func=loadtest)
