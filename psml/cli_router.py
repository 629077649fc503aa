"""``psml router start|stop|status|goodput``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from common.errors import PsmlError

from .process_state import load_state, refuse_if_running, stop_recorded

STATE = "router.state.json"
DEFAULT_SETTINGS = "router/settings.default.json"


def start(a) -> None:
    from router.settings import load_settings

    from stack.router_process import RouterProcess
    from stack.triton_server import process_start_ticks

    state_path = Path(a.state_dir) / STATE
    refuse_if_running(state_path, "router")
    s = load_settings(a.settings)  # validate here, so a bad file fails with its reason before any process starts
    r = RouterProcess(Path(a.settings), a.port if a.port is not None else s.port, host=s.host,
                      log_path=Path(a.state_dir) / "router.log", triton_http_url=a.triton_http_url, triton_grpc_url=a.triton_grpc_url).start()
    state_path.write_text(json.dumps({"pid": r.process.pid, "url": r.url, "settings": a.settings,
                                      "start_ticks": process_start_ticks(r.process.pid)}))
    print(f"router ready: pid {r.process.pid}, {r.url} (audit log {s.audit_log})")


def stop(a) -> None:
    state_path = Path(a.state_dir) / STATE
    st = load_state(state_path)
    if st is None:
        print("the router is not running (no state file)")
        return
    stop_recorded(st, "router")
    state_path.unlink(missing_ok=True)
    print(f"router stopped (pid {st['pid']})")


def status(a) -> None:
    import urllib.request

    from stack.triton_server import stale_reason

    st = load_state(Path(a.state_dir) / STATE)
    if st is None:
        raise PsmlError("the router is not running")
    reason = stale_reason(st["pid"], st.get("start_ticks"))
    if reason:
        raise PsmlError(f"the router is not running (stale state file: {reason})")
    try:
        with urllib.request.urlopen(f"{st['url']}/healthz", timeout=2) as r:
            print(f"router pid {st['pid']}, {st['url']}: {r.read().decode()}")
    except OSError as e:
        raise PsmlError(f"the router at {st['url']} does not answer: {e}") from e


def goodput(a) -> None:
    from router.audit_log import read_audit_log
    from router.goodput import goodput_by_client

    from common.tables import format_table

    path = Path(a.audit_log)
    if not path.is_file():
        raise PsmlError(f"audit log {path} does not exist")
    torn: list[int] = []
    report = goodput_by_client(read_audit_log(path, torn))
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table([{"client": c} | r for c, r in report.items()], GOODPUT_COLUMNS))
    if torn:
        print(f"skipped {len(torn)} torn line(s) of {path} (line {', '.join(map(str, torn[:5]))}"
              f"{', ...' if len(torn) > 5 else ''}): records cut short by a crash or a full disk",
              file=sys.stderr)


GOODPUT_COLUMNS = [("client", "client"), ("requests", "requests"), ("served", "served"), ("good", "good"),
                   ("goodput_share", "goodput e2e"),
                   ("goodput_share_profiled", "goodput profiled"), ("goodput_rate_per_s", "good/s"), ("slo_attainment", "SLO met"),
                   ("reject_rate", "rejected"), ("drop_rate", "dropped"), ("invalid", "invalid")]


def register(sub) -> None:
    g = sub.add_parser("router", help="run the model-selecting router in front of Triton").add_subparsers(dest="cmd", required=True)
    for name, func in (("start", start), ("stop", stop), ("status", status)):
        p = g.add_parser(name, help={"start": "start the router from a settings file and wait until it is ready",
                                     "stop": "stop the router that psml router start started",
                                     "status": "whether the router is running and ready"}[name])
        p.add_argument("--state-dir", default="runs", help="where the router's pid, port and log are kept")
        p.set_defaults(func=func)
        if name == "start":
            p.add_argument("--settings", default=DEFAULT_SETTINGS, help="router settings JSON")
            p.add_argument("--port", type=int, help="override the settings' port")
            p.add_argument("--triton-http-url", help="override the settings' Triton HTTP address (host:port)")
            p.add_argument("--triton-grpc-url", help="override the settings' Triton gRPC address (triton_protocol grpc)")
    p = g.add_parser("goodput", help="goodput, SLO attainment and reject/drop rates from the audit log")
    p.add_argument("--audit-log", default="runs/audit.jsonl", help="the router's audit log (JSON lines)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=goodput)
