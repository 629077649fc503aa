import numpy as np
import onnx
import pytest
import torch

from common.errors import ExportError
from zoo.architectures import ARCHITECTURES, build_model
from zoo.export import check_parity, export_onnx, open_session, run_onnx
from zoo.train import TrainSettings, predict_proba, train


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 40)).astype(np.float32)
    y = rng.integers(0, 10, 256)
    return x, y


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_exports_with_dynamic_batch_and_matches_torch(arch, small, tmp_path):
    x, y = small
    model = build_model(arch, (1, 40), 10, seed=0)
    path = tmp_path / f"{arch}.onnx"
    export_onnx(model, 40, path)
    parity = check_parity(predict_proba(model, x), path, x)
    assert parity.top1_mismatches == 0 and parity.max_abs_diff < 1e-4 and parity.n == 256
    session = open_session(path)
    for batch in (1, 7, 64):  # dynamic batch axis
        assert run_onnx(session, x[:batch]).shape == (batch, 10)


def test_image_shaped_architectures_export(tmp_path):
    x = np.random.default_rng(0).random((16, 64), dtype=np.float32)
    for arch in ("cnn_small", "gru"):
        model = build_model(arch, (1, 8, 8), 10, seed=0)
        export_onnx(model, 64, tmp_path / f"{arch}.onnx")
        check_parity(predict_proba(model, x), tmp_path / f"{arch}.onnx", x)


def test_parity_fails_loudly_when_onnx_disagrees(small, tmp_path):
    x, y = small
    model = build_model("mlp_small", (1, 40), 10, seed=0)
    export_onnx(model, 40, tmp_path / "m.onnx")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # PyTorch now differs from the exported file
    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        check_parity(predict_proba(model, x), tmp_path / "m.onnx", x)


def test_missing_and_corrupt_onnx_give_one_line_errors(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        open_session(tmp_path / "nope.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"this is not a protobuf")
    with pytest.raises(ExportError, match="corrupt or invalid") as e:
        open_session(tmp_path / "bad.onnx")
    assert "\n" not in str(e.value)


def test_training_is_seeded(small):
    x, y = small
    probs = []
    for _ in range(2):
        m = build_model("cnn_small", (1, 40), 10, seed=5)
        train(m, x, y, TrainSettings(epochs=2, seed=5))
        probs.append(predict_proba(m, x))
    np.testing.assert_array_equal(probs[0], probs[1])


def test_export_keeps_the_signature(tmp_path):
    export_onnx(build_model("logreg", (1, 40), 10, seed=0), 40, tmp_path / "m.onnx")
    g = onnx.load(str(tmp_path / "m.onnx")).graph
    assert [i.name for i in g.input] == ["INPUT"] and [o.name for o in g.output] == ["PROBS"]
    assert g.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
