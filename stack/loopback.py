"""A whole serving stack on loopback: a real Triton and a real router in front of it, on free ports.

Used by the demo, benchmarks, attacks and load tests so each of them is a few lines.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from .router_process import RouterProcess
from .triton_server import TritonServer

DEMO_KEYS = {"demo-benign-key": "benign", "demo-attacker-key": "attacker"}


def write_router_settings(run_dir: Path, zoo_dir: Path, triton, name: str = "router", **overrides) -> Path:
    """``triton``: the TritonEndpoints the router forwards to (HTTP by default, gRPC with triton_protocol).
    Experiments replay: the seed is 0 unless given (``seed=None``: OS entropy, as a deployment runs)."""
    settings = {"zoo": str(zoo_dir), "triton_http_url": triton.http_url, "triton_grpc_url": triton.grpc_url,
                "api_keys": DEMO_KEYS, "seed": 0,
                "audit_log": str(run_dir / f"{name}.audit.jsonl"), "port": 0} | overrides
    path = run_dir / f"{name}.settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))
    return path


@contextmanager
def triton_for(zoo_dir: Path, run_dir: Path):
    with TritonServer(Path(zoo_dir) / "embedded", log_path=Path(run_dir) / "triton.log") as server:
        yield server


@contextmanager
def router_for(zoo_dir: Path, run_dir: Path, triton: TritonServer, name: str = "router", **overrides):
    """A router process with its own settings file and audit log (``<run_dir>/<name>.audit.jsonl``)."""
    run_dir = Path(run_dir)
    path = write_router_settings(run_dir, Path(zoo_dir), triton.endpoints, name, **overrides)
    (run_dir / f"{name}.audit.jsonl").unlink(missing_ok=True)  # a rerun in the same folder starts a fresh log
    with RouterProcess(path, log_path=run_dir / f"{name}.log") as router:
        yield router
