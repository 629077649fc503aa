import numpy as np
import pytest

from common.errors import ConfigError, DataError
from zoo.data import SPLITS, Dataset, digits, load_dataset, mnist1d


def test_mnist1d_splits_are_disjoint_seeded_and_reproducible():
    a, b, c = mnist1d(1000, seed=3), mnist1d(1000, seed=3), mnist1d(1000, seed=4)
    assert sum(a.sizes().values()) == 1000 and a.sample_shape == (1, 40)
    rows = {s: {r.tobytes() for r in a.x[s]} for s in SPLITS}
    assert not (rows["victim_train"] & rows["test"]) and not (rows["test"] & rows["attacker_pool"])
    assert np.array_equal(a.x["test"], b.x["test"]) and not np.array_equal(a.x["test"], c.x["test"])


def test_digits_is_built_in():
    d = digits(seed=0)
    assert d.input_dim == 64 and d.n_classes == 10 and sum(d.sizes().values()) == 1797
    assert 0.0 <= d.x["test"].min() and d.x["test"].max() <= 1.0


def test_dataset_save_load_roundtrip(tmp_path):
    d = mnist1d(500, seed=1)
    d.save(tmp_path / "d.npz")
    e = Dataset.load(tmp_path / "d.npz")
    assert e.sample_shape == d.sample_shape and e.seed == 1
    assert all(np.array_equal(d.x[s], e.x[s]) and np.array_equal(d.y[s], e.y[s]) for s in SPLITS)


def test_disk_datasets_need_a_root_and_say_what_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="--data-root"):
        load_dataset("mnist", seed=0)
    with pytest.raises(DataError, match="MNIST/raw"):
        load_dataset("mnist", seed=0, data_root=tmp_path)
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset("cifar10", seed=0, data_root=tmp_path)
    with pytest.raises(ConfigError, match="unknown data set"):
        load_dataset("imagenet", seed=0)


def test_mnist_reader_parses_torchvision_idx_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"".join(
            v.to_bytes(4, "big") for v in (n, 28, 28)) + imgs.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + n.to_bytes(4, "big") + labels.tobytes())
    d = load_dataset("mnist", seed=0, data_root=tmp_path)
    assert d.sample_shape == (1, 28, 28) and sum(d.sizes().values()) == 40 and d.x["test"].max() <= 1.0


def test_bad_split_fractions_raise():
    from zoo.data import split

    with pytest.raises(ConfigError, match="sum to 1"):
        split("x", (1, 2), 2, np.zeros((4, 2)), np.zeros(4), (0.5, 0.5, 0.5), 0)


def test_cifar10_reader_parses_torchvision_pickle_layout(tmp_path):
    import pickle

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, 4))}
        with open(base / name, "wb") as f:
            pickle.dump(batch, f)
    d = load_dataset("cifar10", seed=0, data_root=tmp_path)
    assert d.sample_shape == (3, 32, 32) and d.input_dim == 3072 and sum(d.sizes().values()) == 24
    assert 0.0 <= d.x["test"].min() and d.x["test"].max() <= 1.0
