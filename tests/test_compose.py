"""docker-compose.yml cannot run here (no Docker engine, no GPU): check its structure against the repository."""

import re
from pathlib import Path

import pytest
import yaml

from loadtests.config import LoadSettings
from router.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _default(value: str) -> str:
    """Substitute ${VAR:-default} with its default, as compose does when VAR is unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_services_and_start_order(compose):
    s = compose["services"]
    assert set(s) == {"triton", "store", "router", "locust-master", "locust-worker"}
    assert s["router"]["depends_on"]["triton"]["condition"] == "service_healthy"
    assert s["router"]["depends_on"]["store"]["condition"] == "service_healthy"
    assert s["locust-master"]["depends_on"]["router"]["condition"] == "service_healthy"
    assert "locust-master" in s["locust-worker"]["depends_on"]
    for name in ("triton", "store", "router"):
        assert s[name]["healthcheck"]["test"][0] == "CMD"


def test_the_router_keeps_per_client_state_in_the_valkey_service(compose):
    """Catches a compose router whose state_store names no service (every request 503) or an unofficial image."""
    store = compose["services"]["store"]
    assert re.fullmatch(r"valkey/valkey:\d+\.\d+", _default(store["image"]))
    assert "--appendonly" in store["command"] and any(v.endswith(":/data") for v in store["volumes"])
    r = compose["services"]["router"]
    s = load_settings(ROOT / _default(r["command"][r["command"].index("--settings") + 1]).removeprefix("/app/"))
    assert s.state_store == "redis://store:6379/0"


def test_triton_uses_nvidia_image_on_gpu_with_the_gpu_repository(compose, zoo_dir):
    t = compose["services"]["triton"]
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", _default(t["image"]))
    devices = t["deploy"]["resources"]["reservations"]["devices"][0]
    assert devices["driver"] == "nvidia" and devices["capabilities"] == ["gpu"]
    assert t["shm_size"]
    host, target, _ = _default(t["volumes"][0]).split(":")
    assert target == "/models" and "--model-repository=/models" in t["command"]
    assert host == "./model_repository/default/gpu"
    # the same layout in a built zoo: model_repository/<zoo>/gpu/<model>/config.pbtxt + 1/model.onnx, native ORT on GPU
    for model in (zoo_dir / "gpu").iterdir():
        config = (model / "config.pbtxt").read_text()
        assert 'backend: "onnxruntime"' in config and "KIND_GPU" in config and (model / "1" / "model.onnx").is_file()
    assert [_default(p) for p in t["ports"]] == ["127.0.0.1:8000:8000", "127.0.0.1:8001:8001", "127.0.0.1:8002:8002"]


def test_router_settings_match_the_mounts(compose):
    r = compose["services"]["router"]
    settings_path = _default(r["command"][r["command"].index("--settings") + 1])
    assert settings_path.startswith("/app/")
    s = load_settings(ROOT / settings_path.removeprefix("/app/"))
    mounts = {_default(v).split(":")[1]: _default(v).split(":")[0] for v in r["volumes"]}
    assert s.zoo in mounts and mounts[s.zoo] == "./model_repository/default"
    assert str(Path(s.audit_log).parent) in mounts
    assert r["command"][r["command"].index("--triton-http-url") + 1] == "triton:8000"
    assert r["build"]["target"] == "router"  # the serving-only image
    assert [_default(p) for p in r["ports"]] == ["127.0.0.1:8080:8080"]


def test_locust_settings_are_valid_load_settings(compose):
    env = {k: _default(str(v)) for k, v in compose["services"]["locust-master"]["environment"].items()}
    s = LoadSettings.from_env(env)
    assert s.data_file == "/zoo/data.npz" and s.benign_users == 32
    assert compose["services"]["locust-worker"]["environment"] == compose["services"]["locust-master"]["environment"]
    assert "--master-host" in compose["services"]["locust-worker"]["command"]


def test_dockerfile_copies_every_package():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for pkg in ("common", "stack", "psml", "zoo", "router", "attacks", "loadtests", "benchmarks"):
        assert f"COPY {pkg} ./{pkg}" in dockerfile
