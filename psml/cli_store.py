"""``psml store start|stop|status``: the Redis-protocol store that holds the router's per-client state."""

from __future__ import annotations

import json
from pathlib import Path

from common.errors import ConfigError, PsmlError

from .process_state import load_state, refuse_if_running, stop_recorded

STATE = "store.state.json"


class BadArgument(ConfigError):
    exit_code = 2


def start(a) -> None:
    from stack.store_server import StoreServer
    from stack.triton_server import process_start_ticks

    if a.port is not None and not 0 <= a.port <= 65535:
        raise BadArgument(f"--port must be in 0..65535 (0: a free port), got {a.port}")
    state_path = Path(a.state_dir) / STATE
    refuse_if_running(state_path, "store")
    data_dir = Path(a.state_dir) / "store"
    # no --port: the last run's port, so that routers configured with its address find the store again
    s = StoreServer(data_dir, a.port if a.port is not None else _last_port(state_path)).start()
    pid = s.process.pid
    state_path.write_text(json.dumps({"pid": pid, "url": s.url, "port": s.port, "data_dir": str(data_dir),
                                      "start_ticks": process_start_ticks(pid)}))
    print(f"data in {data_dir} (append-only file), log {s.log_path}; set the router's state_store to {s.url}")
    print(f"store ready: pid {pid}, {s.url.removesuffix('/0')}")


def stop(a) -> None:
    state_path = Path(a.state_dir) / STATE
    st = load_state(state_path)
    if st is None:
        print("the store is not running (no state file)")
        return
    stop_recorded(st, "store")
    state_path.write_text(json.dumps({"port": st.get("port"), "stopped": True}))  # the port, for the next start
    print(f"store stopped (pid {st['pid']})")


def status(a) -> None:
    from stack.store_server import ping
    from stack.triton_server import stale_reason

    st = load_state(Path(a.state_dir) / STATE)
    if st is None:
        raise PsmlError("the store is not running")
    reason = stale_reason(st["pid"], st.get("start_ticks"))
    if reason:
        raise PsmlError(f"the store is not running (stale state file: {reason})")
    host, port = st["url"].removeprefix("redis://").split("/")[0].rsplit(":", 1)
    if not ping(host, int(port)):
        raise PsmlError(f"the store at {st['url']} (pid {st['pid']}) does not answer PING")
    print(f"store pid {st['pid']}, {st['url']}: PONG")


def _last_port(path: Path) -> int:
    try:
        port = json.loads(path.read_text()).get("port")
    except (OSError, ValueError, AttributeError):
        return 0
    return port if isinstance(port, int) and 0 < port <= 65535 else 0


def register(sub) -> None:
    g = sub.add_parser("store", help="run the Redis-protocol store for the router's per-client state"
                       ).add_subparsers(dest="cmd", required=True)
    helps = {"start": "start the store on loopback (data kept in <state-dir>/store) and wait until it answers",
             "stop": "stop the store that psml store start started", "status": "whether the store answers"}
    for name, func in (("start", start), ("stop", stop), ("status", status)):
        p = g.add_parser(name, help=helps[name])
        p.add_argument("--state-dir", default="runs", help="where the store's pid, port, log and data are kept")
        p.set_defaults(func=func)
        if name == "start":
            p.add_argument("--port", type=int, help="the store's port on 127.0.0.1 (default: the last run's, else a "
                           "free one; 0: a free one)")
