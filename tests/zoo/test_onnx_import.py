"""Checks for a user's own ONNX models and data (zoo/onnx_import.py): foreign image-shaped models exported here
by torch with architectures psml does not build, and each kind of bad input named in one line."""

import numpy as np
import pytest
import torch
from torch import nn

from zoo.onnx_import import ImportFailure, accuracy, check_zoo, inspect_onnx, load_eval_data


def export(model: nn.Module, path, shape=(1, 8, 8), dynamic=True, softmax=True, batch=4):
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            z = self.m(x)
            return torch.softmax(z, 1) if softmax else z

    torch.manual_seed(0)
    torch.onnx.export(Wrapped().eval(), (torch.zeros(batch, *shape),), str(path), input_names=["image"],
                      output_names=["scores"], opset_version=17, dynamo=False,
                      dynamic_axes={"image": {0: "n"}, "scores": {0: "n"}} if dynamic else None)
    return path


def small_cnn(classes=10):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, classes))


def mlp(classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, classes))


@pytest.fixture
def digits_like(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 60)
    np.savez(tmp_path / "eval.npz", x=x, y=y)
    return tmp_path / "eval.npz", x, y


def test_three_foreign_image_models_pass_and_are_scored(tmp_path, digits_like):
    """Catches a checker that only accepts flat inputs, or one that compares the batch axis across models."""
    paths = [export(small_cnn(), tmp_path / "cnn.onnx"), export(mlp(), tmp_path / "mlp.onnx"),
             export(mlp(), tmp_path / "fixed.onnx", dynamic=False, batch=8)]
    models = [inspect_onnx(p) for p in paths]
    assert [m.sample_shape for m in models] == [(1, 8, 8)] * 3 and models[2].max_batch == 8
    assert check_zoo(models) == ((1, 8, 8), 10) and all(m.parameters > 0 for m in models)
    path, x, y = digits_like
    xs, ys = load_eval_data(path, (1, 8, 8), 10)
    for m in models:
        a = accuracy(m, xs, ys, softmax=False)
        assert 0.0 <= a <= 1.0
    # the fixed-batch model, padded to its batch of 8 on the last chunk, answers each sample as alone
    from zoo.onnx_import import predict

    np.testing.assert_allclose(predict(models[2], xs[:3], False), predict(models[2], xs[:8], False)[:3], atol=1e-6)


def test_each_bad_input_is_one_line_naming_the_file(tmp_path, digits_like):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ImportFailure, match="bad.onnx: fails the ONNX checker"):
        inspect_onnx(bad)
    flat = export(nn.Sequential(nn.Linear(40, 10)), tmp_path / "flat.onnx", shape=(40,))
    img = export(small_cnn(), tmp_path / "img.onnx")
    with pytest.raises(ImportFailure, match="flat.onnx: input sample shape \\[40\\] differs"):
        check_zoo([inspect_onnx(img), inspect_onnx(flat)])
    five = export(small_cnn(5), tmp_path / "five.onnx")
    with pytest.raises(ImportFailure, match="five.onnx: 5 classes differ"):
        check_zoo([inspect_onnx(img), inspect_onnx(five)])
    one = export(small_cnn(), tmp_path / "one.onnx", dynamic=False, batch=1)
    with pytest.raises(ImportFailure, match="one.onnx: .*fixed batch axis of 1"):
        inspect_onnx(one)
    path, x, y = digits_like
    np.savez(tmp_path / "labels.npz", x=x, y=y + 5)
    with pytest.raises(ImportFailure, match="labels.npz: labels span .* outside the models' 10 classes"):
        load_eval_data(tmp_path / "labels.npz", (1, 8, 8), 10)
    with pytest.raises(ImportFailure, match="eval.npz: samples have shape \\[1, 8, 8\\], the models take \\[40\\]"):
        load_eval_data(path, (40,), 10)
    logits = inspect_onnx(export(small_cnn(), tmp_path / "logits.onnx", softmax=False))
    xs, ys = load_eval_data(path, (1, 8, 8), 10)
    with pytest.raises(ImportFailure, match="logits.onnx: answers are not probabilities.*--softmax"):
        accuracy(logits, xs, ys, softmax=False)
    assert 0 <= accuracy(logits, xs, ys, softmax=True) <= 1


def test_prepared_copy_appends_softmax_and_keeps_the_users_tensor_names(tmp_path, digits_like):
    """Catches a softmax over the wrong axis or on the wrong tensor, or renamed tensors (Triton's config names
    them): the served copy must answer exactly softmax(the original's logits) under the original's names."""
    from zoo.onnx_import import check_prepared, prepare_onnx, predict

    original = inspect_onnx(export(small_cnn(), tmp_path / "logits.onnx", softmax=False))
    assert prepare_onnx(original, True, tmp_path / "served.onnx") == (True, False)
    served = inspect_onnx(tmp_path / "served.onnx", "logits")
    assert (served.input_name, served.output_name) == ("image", "scores")
    _, x, _ = digits_like
    probs = check_prepared(original, served, x, softmax=True)
    np.testing.assert_allclose(probs, predict(original, x, softmax=True), atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_a_fixed_batch_axis_is_made_dynamic_only_when_answers_stay_the_same(tmp_path, digits_like):
    """A graph that hard-codes its batch (a Reshape to 8 rows) cannot be batched freely: refused with the advice
    to re-export. Catches an import that only rewrites the declared input shape and serves a broken model."""
    from zoo.onnx_import import check_prepared, prepare_onnx

    class HardCoded(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.reshape(8, 64))

    _, x, _ = digits_like
    ok = inspect_onnx(export(mlp(), tmp_path / "ok.onnx", dynamic=False, batch=8))
    assert prepare_onnx(ok, False, tmp_path / "ok_served.onnx") == (False, True)
    served = inspect_onnx(tmp_path / "ok_served.onnx", "ok")
    assert served.dynamic_batch
    check_prepared(ok, served, x, softmax=False)
    bad = inspect_onnx(export(HardCoded(), tmp_path / "hard.onnx", dynamic=False, batch=8))
    prepare_onnx(bad, False, tmp_path / "hard_served.onnx")
    with pytest.raises(ImportFailure, match="hard.onnx: .*fixed batch axis of 8.*dynamic batch axis"):
        check_prepared(bad, inspect_onnx(tmp_path / "hard_served.onnx", "hard"), x, softmax=False)


def test_a_torchvision_cifar_folder_gives_the_official_test_split_and_the_training_split_as_pool(tmp_path):
    """Catches reading CIFAR's row-major channel planes in the wrong layout (pixel [c, h, w] must be byte
    c*1024 + h*32 + w), scoring on the training split, or a folder of the wrong layout passing silently."""
    import pickle

    from zoo.onnx_import import load_folder

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 6)]:
        batches[name] = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, n))}
        (base / name).write_bytes(pickle.dumps(batches[name]))
    name, x, y, pool = load_folder(tmp_path, (3, 32, 32), 10)
    assert name == "cifar10" and x.shape == (6, 3, 32, 32) and pool.shape == (20, 3, 32, 32)
    raw = batches["test_batch"]["data"]
    assert x[2, 1, 5, 7] == pytest.approx(raw[2, 1 * 1024 + 5 * 32 + 7] / 255.0)
    np.testing.assert_array_equal(y, batches["test_batch"]["labels"])
    with pytest.raises(ImportFailure, match="samples have shape \\[3, 32, 32\\], the models take \\[1, 8, 8\\]"):
        load_folder(tmp_path, (1, 8, 8), 10)
    with pytest.raises(ImportFailure, match="neither MNIST/raw nor cifar-10-batches-py"):
        load_folder(tmp_path / "cifar-10-batches-py", (3, 32, 32), 10)
