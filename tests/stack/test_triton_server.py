"""A real Triton (from the nvidia-pytriton wheel) serving the zoo; errors for bad repositories and ports."""

import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from common.errors import ModelLoadError, PortInUseError, TritonError
from stack.triton_server import TritonServer, model_states, process_alive
from zoo.export import open_session, run_onnx


def test_every_zoo_model_served_by_triton_matches_onnxruntime(triton, manifest, zoo_dir, data):
    x = data.x["test"][:64]
    client = httpclient.InferenceServerClient(triton.endpoints.http_url)
    try:
        for m in manifest.models:
            inp = httpclient.InferInput("INPUT", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            served = client.infer(m.name, [inp]).as_numpy("PROBS")
            direct = run_onnx(open_session(zoo_dir / m.onnx_file), x)
            np.testing.assert_allclose(served, direct, atol=1e-6)
            assert np.array_equal(served.argmax(1), direct.argmax(1))
    finally:
        client.close()


def test_grpc_batch_one_and_repository_index(triton, manifest, data):
    client = grpcclient.InferenceServerClient(triton.endpoints.grpc_url)
    inp = grpcclient.InferInput("INPUT", [1, data.input_dim], "FP32")
    inp.set_data_from_numpy(data.x["test"][:1])
    assert client.infer(manifest.models[0].name, [inp]).as_numpy("PROBS").shape == (1, 10)
    client.close()
    states = model_states(triton.endpoints)
    assert {m.name for m in manifest.models} == set(states) and all(s["state"] == "READY" for s in states.values())


def _copy_repo(zoo_dir, tmp_path, models):
    repo = tmp_path / "repo"
    for name in models:
        shutil.copytree(zoo_dir / "embedded" / name, repo / name)
    return repo


def test_corrupt_onnx_names_the_model_and_leaves_no_process(zoo_dir, tmp_path):
    repo = _copy_repo(zoo_dir, tmp_path, ["cnn_wide", "mlp_small"])
    (repo / "mlp_small" / "1" / "model.onnx").write_bytes(b"garbage")
    server = TritonServer(repo, startup_timeout_s=60)
    with pytest.raises(ModelLoadError, match="'mlp_small'.*cannot load ONNX"):
        server.start()
    assert server.process is None


def test_missing_onnx_names_the_model(zoo_dir, tmp_path):
    repo = _copy_repo(zoo_dir, tmp_path, ["mlp_small"])
    (repo / "mlp_small" / "1" / "model.onnx").unlink()
    with pytest.raises(ModelLoadError, match="'mlp_small'.*does not exist"):
        TritonServer(repo, startup_timeout_s=60).start()


def test_port_in_use_is_refused_before_starting(zoo_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"HTTP port {port} on 127.0.0.1 is already in use"):
            TritonServer(zoo_dir / "embedded", http_port=port).start()


def test_a_picked_port_taken_before_the_start_is_picked_again(zoo_dir):
    """Ports asked as 0 are picked at construction; another process can bind one before Triton does (a CI run
    saw "failed to start GRPC service: ... already in use"). Catches a start that gives up instead of picking
    again, and one that re-picks ports the caller chose (the test above: those are refused)."""
    server = TritonServer(zoo_dir / "embedded")
    taken = server.endpoints.grpc_port
    with socket.socket() as s:
        s.bind(("127.0.0.1", taken))
        s.listen()
        with server:
            assert server.endpoints.grpc_port != taken and model_states(server.endpoints)


def test_missing_repository_is_a_clear_error(tmp_path):
    with pytest.raises(TritonError, match="does not exist"):
        TritonServer(tmp_path / "nowhere").start()


def test_stop_leaves_no_orphan_stub(zoo_dir, tmp_path):
    repo = _copy_repo(zoo_dir, tmp_path, ["mlp_small"])
    server = TritonServer(repo).start()
    pid = server.process.pid
    stubs = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True).stdout.split()
    assert len(stubs) >= 2  # tritonserver and the model's Python stub share the process group
    server.stop()
    assert not any(process_alive(int(p)) for p in stubs)


def test_cli_start_on_busy_port_prints_one_line_and_exits_nonzero(zoo_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "psml.cli", "triton", "start", "--zoo", str(zoo_dir),
                            "--http-port", str(port), "--state-dir", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "already in use" in r.stderr
    assert not (tmp_path / "triton.state.json").exists()


def test_cli_start_status_stop(zoo_dir, tmp_path):
    from common.ports import free_port

    ports = [str(free_port()) for _ in range(3)]
    base = [sys.executable, "-m", "psml.cli", "triton"]
    state = ["--state-dir", str(tmp_path)]
    r = subprocess.run(base + ["start", "--zoo", str(zoo_dir), "--http-port", ports[0], "--grpc-port", ports[1],
                               "--metrics-port", ports[2]] + state, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    try:
        st = subprocess.run(base + ["status"] + state, capture_output=True, text=True)
        assert st.returncode == 0 and "READY" in st.stdout and "vgg_large" in st.stdout
    finally:
        assert subprocess.run(base + ["stop"] + state, capture_output=True, text=True).returncode == 0
    st = subprocess.run(base + ["status"] + state, capture_output=True, text=True)
    assert st.returncode == 1 and "not running" in st.stderr


def test_missing_triton_binary_is_a_clear_error(monkeypatch, tmp_path):
    import stack.triton_server as ts

    monkeypatch.setattr(ts, "_pytriton_dir", lambda: tmp_path)
    with pytest.raises(TritonError, match="the Triton binary is missing"):
        ts.triton_binary()
