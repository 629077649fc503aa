"""Shared fixtures: a small real zoo built once per session, a real Triton serving it, real router processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests

from stack.router_process import RouterProcess
from stack.loopback import write_router_settings
from stack.triton_server import TritonServer
from zoo.build import build_zoo, get_profile
from zoo.data import Dataset
from zoo.manifest import load_manifest

API_KEYS = {"k-benign": "benign", "k-attacker": "attacker"}


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> Path:
    """The 'test' zoo recipe: three architectures, small data, a short profile on both paths (~40 s)."""
    return build_zoo(get_profile("test"), tmp_path_factory.mktemp("zoo"), log=lambda *_: None)


@pytest.fixture(scope="session")
def encoder_zoo(tmp_path_factory) -> Path:
    """The 'encoder-test' recipe: two SimCLR encoders on the test zoo's data, profiled the same way."""
    return build_zoo(get_profile("encoder-test"), tmp_path_factory.mktemp("encoders"), log=lambda *_: None)


@pytest.fixture(scope="session")
def manifest(zoo_dir):
    return load_manifest(zoo_dir)


@pytest.fixture(scope="session")
def data(zoo_dir) -> Dataset:
    return Dataset.load(zoo_dir / "data.npz")


@pytest.fixture(scope="session")
def triton(zoo_dir):
    with TritonServer(zoo_dir / "embedded", log_path=zoo_dir.parent / "triton.log") as server:
        yield server


@pytest.fixture
def start_router(tmp_path, zoo_dir, triton):
    """start_router(**settings) -> RouterProcess running on a free loopback port; all stopped at teardown."""
    started: list[RouterProcess] = []

    def start(name: str = "router", endpoints=None, **overrides) -> RouterProcess:
        """``endpoints``: another Triton's TritonEndpoints (default: the session's Triton)."""
        d = tmp_path / name
        settings = write_router_settings(d, zoo_dir, endpoints or triton.endpoints, "router",
                                         **({"api_keys": API_KEYS} | overrides))
        r = RouterProcess(settings, log_path=d / "router.log").start()
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def infer(router: RouterProcess, x: np.ndarray, key: str = "k-benign", **requirements) -> requests.Response:
    body = {"inputs": np.asarray(x).tolist()} | {k: v for k, v in requirements.items() if v is not None}
    return requests.post(f"{router.url}/v1/infer", json=body, headers={"x-api-key": key}, timeout=30)


def cli_in_process(argv: list[str], capsys) -> tuple[int, str]:
    """``psml argv`` run by the same ``main`` in this process: (exit status, stderr). An interpreter start costs
    ~3 s, so bad-input tables send one case through a real process and the rest through this."""
    from psml.cli import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # a command's own exit, as the process would end
        code = e.code
    return code, capsys.readouterr().err
