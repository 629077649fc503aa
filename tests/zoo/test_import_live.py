"""``psml zoo import`` end to end: four foreign image models ([1, 8, 8] digits, own tensor names, one answering
logits, one with a fixed batch axis) imported, served through a real Triton and router, fingerprinted and
extracted; every bad input one line naming the file, exit 2, nothing written."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import requests
import torch
from torch import nn

from attacks.experiment import consistency, front_by_accuracy, run_fingerprint
from stack.loopback import DEMO_KEYS, router_for, triton_for
from tests.conftest import cli_in_process
from zoo.data import Dataset
from zoo.foreign_example import write_example
from zoo.manifest import load_manifest

PSML = [sys.executable, "-m", "psml.cli"]


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("foreign")
    write_example(out, seed=0, epoch_scale=0.3, log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def imported(foreign, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imported")
    onnx = sorted(str(p) for p in (foreign / "onnx").glob("*.onnx"))
    r = subprocess.run(PSML + ["zoo", "import", "--name", "foreign", "--onnx", *onnx, "--data", str(foreign / "eval.npz"),
                               "--attacker-pool", str(foreign / "pool.npz"), "--softmax", "tanh_mlp", "--quick",
                               "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return out / "foreign"


def _ort(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def test_import_writes_a_complete_zoo_whose_figures_are_the_users_files(imported, foreign):
    """Accuracy recomputed here from the user's original files (softmax by hand for the logits model, batch by
    batch of 16 for the fixed-batch one): catches an import that scores the wrong split, reshapes samples in the
    wrong order, or appends the softmax to the wrong model."""
    m = load_manifest(imported)
    data = Dataset.load(imported / "data.npz")
    assert m.zoo.origin == "imported" and m.zoo.dataset.sample_shape == [1, 8, 8]
    assert {e.name for e in m.models} == {"tanh_mlp", "lenet", "separable", "residual"}
    with np.load(foreign / "eval.npz") as f, np.load(foreign / "pool.npz") as p:
        assert data.sizes() == {"victim_train": 0, "test": len(f["y"]), "attacker_pool": len(p["x"])}
        np.testing.assert_array_equal(data.x["attacker_pool"], p["x"].reshape(len(p["x"]), 64))
        x, y = f["x"], f["y"]
    for e in m.models:
        assert e.sample_shape == (1, 8, 8) and e.input.shape == [-1, 1, 8, 8]
        assert e.source.softmax_appended == (e.name == "tanh_mlp")
        assert e.source.batch_axis_made_dynamic == (e.name == "separable")
        assert e.parity.n == len(y) and e.parity.max_abs_diff <= 1e-4 and e.parity.top1_mismatches == 0
        original = foreign / "onnx" / f"{e.name}.onnx"
        step = 16 if e.name == "separable" else len(x)
        pad = (-len(x)) % step
        xp = np.concatenate([x, np.zeros((pad, 1, 8, 8), np.float32)])
        out = np.concatenate([_ort(original, xp[i : i + step]) for i in range(0, len(xp), step)])[: len(x)]
        assert e.accuracy == pytest.approx(float(np.mean(out.argmax(1) == y)), abs=1e-9)
        for variant in ("embedded", "gpu"):
            cfg = (imported / variant / e.name / "config.pbtxt").read_text()
            assert "dims: [ 1, 8, 8 ]" in cfg and f'name: "{e.input.name}"' in cfg
    assert len([e for e in m.models if e.pareto]) >= 2
    assert not list(imported.parent.glob(".foreign.partial-*"))


@pytest.fixture(scope="module")
def stack(imported, tmp_path_factory):
    run = tmp_path_factory.mktemp("stack")
    with triton_for(imported, run) as triton, router_for(imported, run, triton, api_keys=DEMO_KEYS) as router:
        yield triton, router


def test_router_serves_nested_flat_and_binary_samples_and_refuses_other_shapes(imported, stack):
    """Catches a router that only takes flat rows, reshapes in the wrong order (answers would differ from the
    model's own), or turns a wrong shape into a 500 or a crash."""
    _, router = stack
    m = load_manifest(imported)
    best = max(m.models, key=lambda e: e.accuracy)  # the only model meeting its own accuracy
    data = Dataset.load(imported / "data.npz")
    x = data.x["test"][:5].reshape(5, 1, 8, 8)
    expected = _ort(imported / best.onnx_file, x)
    url, key = f"{router.url}/v1/infer", {"x-api-key": "demo-benign-key"}
    info = requests.get(f"{router.url}/v1/zoo", timeout=10).json()
    assert info["sample_shape"] == [1, 8, 8] and info["input_dim"] == 64
    answers = [
        requests.post(url, json={"inputs": x.tolist(), "min_accuracy": best.accuracy}, headers=key, timeout=30),
        requests.post(url, json={"inputs": x.reshape(5, 64).tolist(), "min_accuracy": best.accuracy}, headers=key,
                      timeout=30)]
    for shape in ("5,1,8,8", "5,64"):
        answers.append(requests.post(url, data=x.astype("<f4").tobytes(), timeout=30, headers=key | {
            "content-type": "application/octet-stream", "x-psml-shape": shape,
            "x-psml-min-accuracy": repr(best.accuracy)}))
    for a in answers:
        assert a.status_code == 200, a.text
        np.testing.assert_allclose(np.array(a.json()["probabilities"]), expected, atol=1e-5)
    bad = [{"inputs": x[:, :, :7].tolist()}, {"inputs": [x[0].tolist(), x[1].reshape(64).tolist()]},
           {"inputs": x.reshape(5, 8, 8).tolist()}, {"inputs": [[[[0.0] * 8] * 7 + [[0.0] * 9]]]}]
    for body in bad:
        r = requests.post(url, json=body, headers=key, timeout=30)
        assert r.status_code == 422 and "[1, 8, 8]" in r.json()["detail"], r.text
    r = requests.post(url, data=x.tobytes(), timeout=30, headers=key | {"content-type": "application/octet-stream",
                                                                       "x-psml-shape": "5,8,8"})
    assert r.status_code == 422 and "[1, 8, 8]" in r.json()["detail"]
    assert requests.post(url, json={"inputs": x[:1].tolist()}, headers=key, timeout=30).status_code == 200
    schema = requests.get(f"{router.url}/openapi.json", timeout=10).json()
    body = schema["paths"]["/v1/infer"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    nested = body["properties"]["inputs"]["items"]["anyOf"][0]
    assert (nested["minItems"], nested["items"]["minItems"], nested["items"]["items"]["maxItems"]) == (1, 8, 8)


@pytest.mark.timeout(900)
def test_fingerprint_and_extract_through_the_imported_zoo(imported, stack, tmp_path):
    """The staircase reaches the most accurate imported model; Knockoff through the router steals it well above
    chance (a surrogate of psml's own architectures on [1, 8, 8] samples it never saw the models of)."""
    _, router = stack
    m = load_manifest(imported)
    data = Dataset.load(imported / "data.npz")
    target = front_by_accuracy(m)[0]
    r = run_fingerprint("staircase", router.url, "demo-attacker-key", data.x["attacker_pool"][:1], 1)
    assert r.spec is not None
    c = consistency(router.url, "demo-attacker-key", router.audit_path, r.spec, data.x["attacker_pool"][1:51],
                    target.name)
    assert c["consistency"] >= 0.95, c
    ex = tmp_path / "ex.json"
    cmd = PSML + ["attack", "extract", "--zoo", str(imported), "--budgets", "400", "--seeds", "0",
                  "--surrogate", "cnn_small", "--epochs", "30", "--out", str(ex)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    summary = {row["setting"]: row for row in json.loads(ex.read_text())["summary"]}
    assert summary["fingerprinted"]["accuracy"] > 0.5 and summary["fingerprinted"]["fidelity"] > 0.5, summary


def _export(model: nn.Module, path: Path, shape=(1, 8, 8), softmax=True):
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return torch.softmax(self.m(x), 1) if softmax else self.m(x)

    torch.onnx.export(Wrapped().eval(), (torch.zeros(2, *shape),), str(path), input_names=["in"], output_names=["out"],
                      opset_version=17, dynamo=False, dynamic_axes={"in": {0: "b"}, "out": {0: "b"}})
    return str(path)


def test_every_bad_import_is_one_line_exit_2_and_writes_nothing(foreign, tmp_path, capsys):
    """Each refusal names the file and the reason; the output folder holds no zoo and no partial folder."""
    good = sorted(str(p) for p in (foreign / "onnx").glob("*.onnx") if p.stem != "tanh_mlp")  # all answer probabilities
    ev, pool = str(foreign / "eval.npz"), str(foreign / "pool.npz")
    flat = _export(nn.Sequential(nn.Linear(40, 10)), tmp_path / "flat.onnx", shape=(40,))
    five = _export(nn.Sequential(nn.Flatten(), nn.Linear(64, 5)), tmp_path / "five.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07 not a model")
    with np.load(ev) as f:
        x, y = f["x"], f["y"]
    np.savez(tmp_path / "labels.npz", x=x, y=y + 3)
    np.savez(tmp_path / "shape.npz", x=x[:, :, :6, :6], y=y)
    cases = [
        ([*good, str(tmp_path / "broken.onnx")], ev, [], "broken.onnx: fails the ONNX checker"),
        ([*good, flat], ev, [], "flat.onnx: input sample shape [40] differs"),
        ([*good, five], ev, [], "five.onnx: 5 classes differ"),
        (good, str(tmp_path / "labels.npz"), [], "labels.npz: labels span"),
        (good, str(tmp_path / "shape.npz"), [], "shape.npz: samples have shape [1, 6, 6]"),
        (good, ev, ["--softmax", "lenet"], "lenet.onnx: already answers probabilities"),
        ([*good, str(foreign / "onnx" / "tanh_mlp.onnx")], ev, [], "tanh_mlp.onnx: answers are not probabilities"),
        (good, ev, ["--softmax", "nope"], "--softmax names nope"),
    ]
    out = tmp_path / "out"
    for i, (onnx, data, extra, message) in enumerate(cases):
        argv = ["zoo", "import", "--name", "z", "--onnx", *onnx, "--data", data, "--attacker-pool", pool, "--quick",
                "--out", str(out), *extra]
        if i == 0:  # one through a real process: its exit status and its whole stderr
            r = subprocess.run(PSML + argv, capture_output=True, text=True, timeout=300)
            code, err = r.returncode, r.stderr
        else:
            code, err = cli_in_process(argv, capsys)
        assert code == 2, (message, err)
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
