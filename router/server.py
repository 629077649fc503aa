"""Run the router: ``python -m router.server --settings router.json [--port N]``.

uvicorn with uvloop + httptools, no access log on the hot path (the audit log is the record of requests).
With ``workers: N`` (N > 1) this process is a supervisor: it binds the port once, starts N worker processes
that share the listening socket (the kernel hands each new connection to one of them), restarts any worker
that dies (same index, next restart number, so its random stream stays its own: router/workers.py), and
stops them all on SIGTERM/SIGINT. Metrics from all workers are summed (router/metrics.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import uvicorn

from common.errors import PsmlError

from .settings import RouterSettings, load_settings
from .workers import WorkerIdentity

UVICORN = dict(loop="uvloop", http="httptools", access_log=False, log_level="warning", timeout_graceful_shutdown=5,
               backlog=4096, proxy_headers=False)  # no proxy in front by default: skip that middleware
QUICK_DEATH_S, MAX_QUICK_DEATHS = 2.0, 5  # a worker that keeps dying at start is a bug, not bad luck


def _args(argv):
    ap = argparse.ArgumentParser(prog="python -m router.server")
    ap.add_argument("--settings", required=True, help="router settings JSON")
    ap.add_argument("--port", type=int, help="override the settings' port")
    ap.add_argument("--triton-http-url", help="override the settings' Triton HTTP address")
    ap.add_argument("--triton-grpc-url", help="override the settings' Triton gRPC address")
    ap.add_argument("--audit-log", help="override the settings' audit log path")
    ap.add_argument("--host", help="override the settings' bind address (127.0.0.1 unless told otherwise)")
    # set by the supervisor for its workers only
    ap.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker-restart", type=int, default=0, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    try:
        s = load_settings(a.settings, port=a.port, triton_http_url=a.triton_http_url,
                          triton_grpc_url=a.triton_grpc_url, audit_log=a.audit_log, host=a.host)
        if a.worker_fd is not None:
            return _worker(s, a)
        if s.workers > 1:
            return Supervisor(s, sys.argv[1:] if argv is None else argv).run()
        from .app import create_app

        app = create_app(s)
    except PsmlError as e:
        print(f"router: error: {e}", file=sys.stderr)
        return 1
    uvicorn.run(app, host=s.host, port=s.port, **UVICORN)
    return 0


def _worker(s: RouterSettings, a) -> int:
    from .app import create_app

    app = create_app(s, worker=WorkerIdentity(a.worker_index, s.workers, a.worker_restart))
    sock = socket.socket(fileno=a.worker_fd)
    uvicorn.Server(uvicorn.Config(app, **UVICORN)).run(sockets=[sock])
    return 0


class Supervisor:
    def __init__(self, settings: RouterSettings, argv: list[str]):
        self.s, self.argv = settings, list(argv)
        self.procs: dict[int, subprocess.Popen] = {}
        self.restarts = [0] * settings.workers
        self.started_at = [0.0] * settings.workers
        self.quick_deaths = 0
        self.stopping = False

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.s.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.s.host, self.s.port))
        except OSError as e:
            raise PsmlError(f"cannot listen on {self.s.host}:{self.s.port}: {e.strerror}") from e
        sock.listen(UVICORN["backlog"])
        sock.set_inheritable(True)
        return sock

    def _spawn(self, k: int, fd: int, env: dict) -> None:
        cmd = [sys.executable, "-m", "router.server", *self.argv, "--worker-fd", str(fd), "--worker-index", str(k),
               "--worker-restart", str(self.restarts[k])]
        self.procs[k] = subprocess.Popen(cmd, pass_fds=(fd,), env=env)
        self.started_at[k] = time.monotonic()

    def run(self) -> int:
        from .app import Router

        Router(self.s.model_copy(update={"audit_log": os.devnull}))  # bad zoo or defense: fail here, once
        sock = self._bind()
        metrics_dir = tempfile.mkdtemp(prefix="psml-router-metrics-")
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=metrics_dir)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: setattr(self, "stopping", True))
        code = 0
        try:
            for k in range(self.s.workers):
                self._spawn(k, sock.fileno(), env)
            print(f"router: {self.s.workers} workers on {self.s.host}:{self.s.port}", file=sys.stderr, flush=True)
            while not self.stopping:
                time.sleep(0.1)
                for k, p in list(self.procs.items()):
                    if self.stopping or p.poll() is None:
                        continue
                    quick = time.monotonic() - self.started_at[k] < QUICK_DEATH_S
                    self.quick_deaths = self.quick_deaths + 1 if quick else 0
                    if self.quick_deaths >= MAX_QUICK_DEATHS:
                        print(f"router: error: workers keep exiting at start (last: worker {k}, code {p.returncode})",
                              file=sys.stderr, flush=True)
                        self.stopping, code = True, 1
                        break
                    self.restarts[k] += 1
                    print(f"router: worker {k} (pid {p.pid}) exited with code {p.returncode}; restarting it "
                          f"(restart {self.restarts[k]})", file=sys.stderr, flush=True)
                    from prometheus_client import multiprocess

                    multiprocess.mark_process_dead(p.pid, metrics_dir)
                    self._spawn(k, sock.fileno(), env)
        finally:
            for p in self.procs.values():
                if p.poll() is None:
                    p.terminate()
            deadline = time.monotonic() + 10
            for p in self.procs.values():
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
            sock.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
        return code


if __name__ == "__main__":
    sys.exit(main())
