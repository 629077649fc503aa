"""Run the router as a real separate process (what users run, what tests start on free loopback ports)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from common.errors import PsmlError
from common.ports import check_free, free_port
from .triton_server import stop_process_group


class RouterProcess:
    def __init__(self, settings_path: Path, port: int = 0, host: str = "127.0.0.1", log_path: Path | None = None,
                 triton_http_url: str | None = None, triton_grpc_url: str | None = None, audit_log: Path | None = None,
                 startup_timeout_s: float = 60.0):
        self.settings_path = Path(settings_path)
        self.host, self.port = host, port or free_port(host)
        self.log_path = Path(log_path) if log_path else self.settings_path.with_suffix(".log")
        self.triton_http_url, self.triton_grpc_url, self.audit_log = triton_http_url, triton_grpc_url, audit_log
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def audit_path(self) -> Path:
        """The audit log this router writes (its settings' ``audit_log`` unless overridden)."""
        return Path(self.audit_log or json.loads(self.settings_path.read_text())["audit_log"])

    def start(self) -> "RouterProcess":
        check_free(self.host, self.port, "router")
        cmd = [sys.executable, "-m", "router.server", "--settings", str(self.settings_path), "--port", str(self.port)]
        if self.triton_http_url:
            cmd += ["--triton-http-url", self.triton_http_url]
        if self.triton_grpc_url:
            cmd += ["--triton-grpc-url", self.triton_grpc_url]
        if self.audit_log:
            cmd += ["--audit-log", str(self.audit_log)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def health(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(empty log)"]
                raise PsmlError(f"router exited with code {self.process.returncode}: {tail[0]}")
            if self.health() is not None:
                return
            time.sleep(0.1)
        raise PsmlError(f"router did not answer /healthz within {self.startup_timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process.pid, timeout_s=10)
            self.process.wait(timeout=10)
            self.process = None

    def __enter__(self) -> "RouterProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
