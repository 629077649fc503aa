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

from .http_protocol import bounded_protocol, connection_bound
from .settings import RouterSettings, load_settings
from .workers import WorkerIdentity, fresh_seed

UVICORN = dict(loop="uvloop", access_log=False, log_level="warning", timeout_graceful_shutdown=5,
               proxy_headers=False)  # no proxy in front by default: skip that middleware
BACKLOG = 4096
SEED_ENV = "PSML_ROUTER_SEED"  # the supervisor's drawn seed, for its workers
QUICK_DEATH_S, MAX_QUICK_DEATHS = 2.0, 5  # a worker that keeps dying at start is a bug, not bad luck


def _args(argv):
    ap = argparse.ArgumentParser(prog="python -m router.server")
    ap.add_argument("--settings", required=True, help="router settings JSON")
    ap.add_argument("--port", type=int, help="override the settings' port")
    ap.add_argument("--triton-http-url", help="override the settings' Triton HTTP address")
    ap.add_argument("--triton-grpc-url", help="override the settings' Triton gRPC address")
    ap.add_argument("--audit-log", help="override the settings' audit log path")
    ap.add_argument("--host", help="override the settings' bind address (127.0.0.1 unless told otherwise)")
    ap.add_argument("--seed", type=int, help="override the settings' seed (default: fresh OS entropy)")
    ap.add_argument("--metrics-port", type=int, help="override the settings' metrics listener port")
    # set by the supervisor for its workers only
    ap.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--metrics-fd", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker-restart", type=int, default=0, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    try:
        seed = a.seed if a.seed is not None else (int(os.environ[SEED_ENV]) if a.worker_fd is not None and SEED_ENV in os.environ else None)
        s = load_settings(a.settings, port=a.port, triton_http_url=a.triton_http_url,
                          triton_grpc_url=a.triton_grpc_url, audit_log=a.audit_log, host=a.host, seed=seed,
                          metrics_port=a.metrics_port)
        if a.worker_fd is not None:
            return _worker(s, a)
        if s.seed is None:  # drawn once here, so every worker derives its stream from the same recorded root
            s = s.model_copy(update={"seed": fresh_seed()})
        if s.workers > 1:
            return Supervisor(s, sys.argv[1:] if argv is None else argv).run()
        from .asgi import create_app

        sockets = bind_listeners(s)
        s = _with_bound_metrics_port(s, sockets)
        app = create_app(s)
    except PsmlError as e:
        print(f"router: error: {e}", file=sys.stderr)
        return 1
    _serve(app, s, sockets)
    return 0


def bind_listeners(s: RouterSettings) -> list[socket.socket]:
    """The request listener, then the metrics listener when ``metrics_port`` is set (its own address)."""
    socks = [_bind(s.host, s.port, "router")]
    if s.metrics_port is not None:
        socks.append(_bind(s.metrics_host, s.metrics_port, "metrics"))
    return socks


def _bind(host: str, port: int, what: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise PsmlError(f"cannot listen for {what} on {host}:{port}: {e.strerror}") from e
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def _with_bound_metrics_port(s: RouterSettings, sockets: list[socket.socket]) -> RouterSettings:
    if len(sockets) < 2:
        return s
    port = sockets[1].getsockname()[1]
    print(f"router: metrics on http://{s.metrics_host}:{port}/metrics", file=sys.stderr, flush=True)
    return s.model_copy(update={"metrics_port": port})


def _serve(app, s: RouterSettings, sockets: list[socket.socket]) -> None:
    protocol = bounded_protocol(s.header_timeout_ms / 1e3, max_connections=connection_bound(s.max_connections),
                                max_connections_per_ip=s.max_connections_per_ip)
    config = uvicorn.Config(app, http=protocol, **UVICORN)
    uvicorn.Server(config).run(sockets=sockets)


def _worker(s: RouterSettings, a) -> int:
    from .asgi import create_app

    sockets = [socket.socket(fileno=a.worker_fd)] + ([socket.socket(fileno=a.metrics_fd)] if a.metrics_fd else [])
    app = create_app(s, worker=WorkerIdentity(a.worker_index, s.workers, a.worker_restart))
    _serve(app, s, sockets)
    return 0


class Supervisor:
    def __init__(self, settings: RouterSettings, argv: list[str]):
        self.s, self.argv = settings, list(argv)
        self.procs: dict[int, subprocess.Popen] = {}
        self.restarts = [0] * settings.workers
        self.started_at = [0.0] * settings.workers
        self.quick_deaths = 0
        self.stopping = False

    def _spawn(self, k: int, fds: list[int], env: dict) -> None:
        cmd = [sys.executable, "-m", "router.server", *self.argv, "--worker-fd", str(fds[0]), "--worker-index", str(k),
               "--worker-restart", str(self.restarts[k])]
        if len(fds) > 1:
            cmd += ["--metrics-fd", str(fds[1]), "--metrics-port", str(self.s.metrics_port)]
        # the seed in the environment, not the command line: /proc/<pid>/cmdline is readable by every local user,
        # /proc/<pid>/environ only by the router's own
        self.procs[k] = subprocess.Popen(cmd, pass_fds=tuple(fds), env=env | {SEED_ENV: str(self.s.seed)})
        self.started_at[k] = time.monotonic()

    def _forward(self, sig: int) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(sig)

    def run(self) -> int:
        from .app import Router

        Router(self.s.model_copy(update={"audit_log": os.devnull}))  # bad zoo or defense: fail here, once
        sockets = bind_listeners(self.s)
        self.s = _with_bound_metrics_port(self.s, sockets)
        fds = [sock.fileno() for sock in sockets]
        metrics_dir = tempfile.mkdtemp(prefix="psml-router-metrics-")
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=metrics_dir)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGHUP, lambda *_: self._forward(signal.SIGHUP))  # reopen the audit log (logrotate)
        code = 0
        try:
            for k in range(self.s.workers):
                self._spawn(k, fds, env)
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
                    self._spawn(k, fds, env)
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
            for sock in sockets:
                sock.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
        return code


if __name__ == "__main__":
    sys.exit(main())
