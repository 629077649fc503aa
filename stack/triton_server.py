"""Start, watch and stop a real NVIDIA Triton server from the nvidia-pytriton wheel (no Docker, no GPU needed).

``TritonServer`` is the Python API (tests use it as a fixture on free ports); ``psml triton start|stop|status``
wraps it and keeps the running server's pid and ports in a small state file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from common.errors import ModelLoadError, TritonError
from common.ports import check_free, free_port

LOOPBACK = "127.0.0.1"


def _pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError as e:
        raise TritonError("the Triton binary is missing: install nvidia-pytriton (make setup)") from e
    return Path(pytriton.__file__).parent


def triton_binary() -> Path:
    path = _pytriton_dir() / "tritonserver" / "bin" / "tritonserver"
    if not path.is_file():
        raise TritonError(f"the Triton binary is missing: {path} does not exist")
    return path


def _library_dir() -> Path:
    return _pytriton_dir().parent / "nvidia_pytriton.libs"


def prepare_backend_dir(dest: Path) -> Path:
    """A backend directory whose python/ holds the Python backend and the stub for the running Python."""
    src = _pytriton_dir() / "tritonserver"
    py = dest / "python"
    py.mkdir(parents=True, exist_ok=True)
    for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copyfile(src / "backends" / "python" / f, py / f)
    stub = src / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonError(f"no Triton Python-backend stub for Python {sys.version.split()[0]} in nvidia-pytriton")
    shutil.copyfile(stub, py / "triton_python_backend_stub")
    os.chmod(py / "triton_python_backend_stub", 0o755)
    return dest


@dataclass(frozen=True)
class TritonEndpoints:
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"


def http_json(url: str, method: str = "GET", timeout_s: float = 2.0):
    req = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        body = r.read()
    return json.loads(body) if body else None


def is_ready(endpoints: TritonEndpoints, timeout_s: float = 1.0) -> bool:
    try:
        urllib.request.urlopen(f"http://{endpoints.http_url}/v2/health/ready", timeout=timeout_s).close()
        return True
    except (urllib.error.URLError, OSError):
        return False


def model_states(endpoints: TritonEndpoints) -> dict[str, dict]:
    """Triton's repository index: model name -> {state, reason}."""
    index = http_json(f"http://{endpoints.http_url}/v2/repository/index", method="POST")
    return {m["name"]: {"state": m.get("state", "UNKNOWN"), "reason": m.get("reason", "")} for m in index}


class TritonServer:
    """One tritonserver process serving ``repository`` on loopback; ports of 0 are picked free."""

    def __init__(
        self,
        repository: Path,
        http_port: int = 0,
        grpc_port: int = 0,
        metrics_port: int = 0,
        host: str = LOOPBACK,
        startup_timeout_s: float = 180.0,
        log_path: Path | None = None,
    ):
        self.repository = Path(repository)
        self._asked = (http_port, grpc_port, metrics_port)
        self.endpoints = TritonEndpoints(host, *(p or free_port(host) for p in self._asked))
        self.startup_timeout_s = startup_timeout_s
        self._workdir = Path(tempfile.mkdtemp(prefix="psml-triton-"))
        self.log_path = Path(log_path) if log_path else self._workdir / "triton.log"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        e = self.endpoints
        return [
            str(triton_binary()),
            f"--model-repository={self.repository.resolve()}",
            f"--backend-directory={self._workdir / 'backends'}",
            f"--http-address={e.host}", f"--http-port={e.http_port}",
            f"--grpc-address={e.host}", f"--grpc-port={e.grpc_port}",
            f"--metrics-address={e.host}", f"--metrics-port={e.metrics_port}",
            "--allow-metrics=true", "--allow-gpu-metrics=false",
            "--exit-on-error=false",  # keep serving so we can ask which model failed and why
            "--strict-readiness=true",
            "--exit-timeout-secs=5",  # do not wait 30 s for idle client connections on shutdown
            "--log-verbose=0",
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(_library_dir()), env.get("LD_LIBRARY_PATH")]))
        # The Python-backend stub must import onnxruntime and numpy from this interpreter's environment.
        site = [p for p in sys.path if p.endswith("site-packages")]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, site + [env.get("PYTHONPATH", "")]))
        # ...and it finds its Python through PATH, so this interpreter's bin/ (the virtualenv's) must come first.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def start(self, attempts: int = 3) -> "TritonServer":
        """Start and wait until every model is READY. A port picked here (asked as 0) can be taken by another
        process between the pick and Triton's bind: then new ones are picked, up to ``attempts`` starts."""
        for attempt in range(attempts):
            try:
                return self._start_once()
            except TritonError as err:
                if "already in use" not in str(err) or not any(p == 0 for p in self._asked) \
                        or attempt == attempts - 1:
                    raise
                e = self.endpoints
                self.endpoints = TritonEndpoints(e.host, *(p or free_port(e.host) for p in self._asked))
        raise AssertionError("unreachable")

    def _start_once(self) -> "TritonServer":
        if not (self.repository.is_dir()):
            raise TritonError(f"model repository {self.repository} does not exist; build the zoo first (psml zoo build)")
        e = self.endpoints
        for label, port in (("HTTP", e.http_port), ("gRPC", e.grpc_port), ("metrics", e.metrics_port)):
            check_free(e.host, port, f"Triton {label}")
        prepare_backend_dir(self._workdir / "backends")
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command(), env=self.environment(), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,  # own process group: stop() reaps the stubs too
        )
        log.close()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        expected = {p.name for p in self.repository.iterdir() if (p / "config.pbtxt").is_file()}
        states: dict[str, dict] = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TritonError(f"tritonserver exited with code {self.process.returncode}: {self._last_error()}")
            try:
                states = model_states(self.endpoints)
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(0.2)
                continue
            failed = {n: s for n, s in states.items() if s["state"] == "UNAVAILABLE" and s["reason"]}
            if failed:
                name, s = sorted(failed.items())[0]
                raise ModelLoadError(f"Triton could not load model {name!r}: {s['reason'].splitlines()[0]}")
            if expected <= {n for n, s in states.items() if s["state"] == "READY"} and is_ready(self.endpoints):
                return
            time.sleep(0.2)
        pending = sorted(n for n in expected if states.get(n, {}).get("state") != "READY")
        raise TritonError(
            f"Triton not ready after {self.startup_timeout_s:.0f} s; models not READY: {', '.join(pending) or '?'}; "
            f"last log line: {self._last_error()}"
        )

    def _last_error(self) -> str:
        lines = [l for l in self.log_tail(200).splitlines() if l.startswith("E") or "error" in l.lower()]
        return (lines[-1] if lines else self.log_tail(1)).strip() or "(empty log)"

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process is not None:
            stop_process_group(self.process.pid, timeout_s)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
            self.process = None
        shutil.rmtree(self._workdir / "backends", ignore_errors=True)

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_process_group(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group led by ``pid`` (server and Python stubs), SIGKILL what outlives the timeout."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        _reap(pid)
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@dataclass(frozen=True)
class ServerState:
    """What ``psml triton start`` leaves behind for ``stop`` and ``status``."""

    pid: int
    repository: str
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: str
    start_ticks: int | None = None  # process_start_ticks(pid) at start: tells a reused pid apart

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "ServerState | None":
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    @property
    def endpoints(self) -> TritonEndpoints:
        return TritonEndpoints(self.host, self.http_port, self.grpc_port, self.metrics_port)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), None where unknown: with
    the pid it names one process for good, where the pid alone may since have been reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # fields after "(comm)": state is 3, starttime 22


def stale_reason(pid: int, start_ticks: int | None = None) -> str | None:
    """Why a state file's process is not the server it recorded, or None when it is: gone, a zombie (killed,
    not yet reaped: it still answers kill(pid, 0)), or another process that has since taken the pid."""
    if not process_alive(pid):
        return f"pid {pid} is gone"
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None  # no /proc (not Linux): the signal check above is all there is
    if state in ("Z", "X"):
        return f"pid {pid} is a zombie (the server died)"
    if start_ticks is not None and process_start_ticks(pid) != start_ticks:
        return f"pid {pid} now belongs to another process"
    return None
