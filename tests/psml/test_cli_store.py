"""``psml store start|stop|status`` end to end: a real valkey-server, its data kept across restarts and crashes."""

import json
import os
import signal
import socket
import time

from router.state_store import encode
from tests.psml.test_cli import run


def _command(port: int, *parts: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(encode(*parts))
        return s.recv(1024)


def test_store_lifecycle_keeps_data_and_its_port_and_calls_a_killed_store_stale(tmp_path):
    """Catches a store without persistence (a spent budget whole again after a restart), a restart on a new port
    (every router's state_store would point at nothing), a status that trusts a dead pid, a second start over a
    running store, and a bad --port that is not one line with exit 2."""
    state = ["--state-dir", str(tmp_path)]
    started = run("store", "start", *state, timeout=60)
    assert started.returncode == 0, started.stderr
    last = started.stdout.strip().splitlines()[-1]
    assert last.startswith("store ready: pid ") and ", redis://127.0.0.1:" in last
    port = int(last.rsplit(":", 1)[1])
    assert _command(port, "SET", "spent", "42") == b"+OK\r\n"
    assert run("store", "status", *state).returncode == 0
    twice = run("store", "start", *state)
    assert twice.returncode == 1 and "already running" in twice.stderr
    assert run("store", "stop", *state).returncode == 0
    again = run("store", "start", *state)
    assert again.returncode == 0 and again.stdout.strip().endswith(f":{port}")
    assert _command(port, "GET", "spent") == b"$2\r\n42\r\n"
    time.sleep(1.2)  # appendfsync everysec: what a crash may lose is the last second
    os.kill(json.loads((tmp_path / "store.state.json").read_text())["pid"], signal.SIGKILL)
    time.sleep(0.3)
    st = run("store", "status", *state)
    assert st.returncode == 1 and "stale state file" in st.stderr
    revived = run("store", "start", *state)
    try:
        assert revived.returncode == 0 and "stale store state file" in revived.stdout, revived.stderr
        assert _command(port, "GET", "spent") == b"$2\r\n42\r\n"
    finally:
        assert run("store", "stop", *state).returncode == 0
    bad = run("store", "start", *state, "--port", "70000")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--port" in bad.stderr
