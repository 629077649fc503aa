"""Data sets for the zoo, all read without any download.

Every data set is split once, by a seeded permutation, into three disjoint parts:
- ``victim_train``: what the zoo models are trained on;
- ``test``: held out, for zoo accuracy and for scoring extracted surrogates;
- ``attacker_pool``: the in-distribution queries an attacker may send (PSML's extraction pool).
"""

from __future__ import annotations

import gzip
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import ConfigError, DataError

SPLITS = ("victim_train", "test", "attacker_pool")


@dataclass(frozen=True)
class Dataset:
    name: str
    sample_shape: tuple[int, ...]  # layout of one flattened sample, e.g. (1, 40) or (3, 32, 32)
    n_classes: int
    x: dict[str, np.ndarray]  # split -> float32 [n, prod(sample_shape)]
    y: dict[str, np.ndarray]  # split -> int64 [n]
    seed: int

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.sample_shape))

    def sizes(self) -> dict[str, int]:
        return {s: int(len(self.y[s])) for s in SPLITS}

    def save(self, path: Path) -> None:
        arrays = {f"x_{s}": self.x[s] for s in SPLITS} | {f"y_{s}": self.y[s] for s in SPLITS}
        meta = dict(name=self.name, sample_shape=list(self.sample_shape), n_classes=self.n_classes, seed=self.seed)
        np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: Path) -> "Dataset":
        if not Path(path).is_file():
            raise DataError(f"data file {path} does not exist; build the zoo first (psml zoo build)")
        with np.load(path) as f:
            meta = json.loads(str(f["meta"]))
            x = {s: f[f"x_{s}"] for s in SPLITS}
            y = {s: f[f"y_{s}"] for s in SPLITS}
        return cls(meta["name"], tuple(meta["sample_shape"]), meta["n_classes"], x, y, meta["seed"])


def split(name, sample_shape, n_classes, x, y, fractions, seed) -> Dataset:
    """Split (x, y) by a seeded permutation into victim_train / test / attacker_pool."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) <= 0:
        raise ConfigError(f"split fractions must be three positive numbers that sum to 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(len(y))
    cuts = np.cumsum([int(round(f * len(y))) for f in fractions[:2]])
    parts = np.split(order, cuts)
    x = x.reshape(len(y), -1).astype(np.float32)
    return Dataset(
        name=name,
        sample_shape=tuple(sample_shape),
        n_classes=n_classes,
        x={s: x[p] for s, p in zip(SPLITS, parts)},
        y={s: y[p].astype(np.int64) for s, p in zip(SPLITS, parts)},
        seed=seed,
    )


def mnist1d(n_samples: int, seed: int, fractions=(0.5, 0.2, 0.3)) -> Dataset:
    """MNIST-1D (Greydanus & Kobak 2020), generated offline from the package's own templates."""
    from mnist1d.data import get_dataset_args, make_dataset  # never get_dataset(): it downloads

    args = get_dataset_args()
    args.num_samples, args.seed = n_samples, seed
    d = make_dataset(args)
    x = np.concatenate([d["x"], d["x_test"]])
    y = np.concatenate([d["y"], d["y_test"]])
    return split("mnist1d", (1, x.shape[1]), 10, x, y, fractions, seed)


def digits(seed: int, fractions=(0.5, 0.2, 0.3)) -> Dataset:
    """scikit-learn's 1,797 real 8x8 handwritten digits (shipped inside scikit-learn)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return split("digits", (1, 8, 8), 10, d.data / 16.0, d.target, fractions, seed)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"MNIST file {stem}[.gz] not found under {root} (expected torchvision's MNIST/raw layout)")


def mnist_arrays(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST's official splits from torchvision's layout, <root>/MNIST/raw/*-ubyte[.gz]: "train" and "test" as
    ([N, 1, 28, 28] float32 in [0, 1], [N] labels). Never downloads."""
    raw = Path(root) / "MNIST" / "raw"
    out = {}
    for split_name, prefix in (("train", "train"), ("test", "t10k")):
        x = _read_idx(_find(raw, f"{prefix}-images-idx3-ubyte")).astype(np.float32) / 255.0
        out[split_name] = (x.reshape(len(x), 1, 28, 28), _read_idx(_find(raw, f"{prefix}-labels-idx1-ubyte")).astype(np.int64))
    return out


def cifar10_arrays(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10's official splits from torchvision's layout, <root>/cifar-10-batches-py/: "train" and "test" as
    ([N, 3, 32, 32] float32 in [0, 1], [N] labels). Never downloads."""
    base = Path(root) / "cifar-10-batches-py"
    out = {}
    for split_name, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        xs, ys = [], []
        for n in names:
            if not (base / n).is_file():
                raise DataError(f"CIFAR-10 file {base / n} not found (expected torchvision's cifar-10-batches-py layout)")
            with open(base / n, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            xs.append(np.asarray(batch["data"], dtype=np.float32) / 255.0)
            ys.append(np.asarray(batch["labels"]))
        x = np.concatenate(xs)
        out[split_name] = (x.reshape(len(x), 3, 32, 32), np.concatenate(ys).astype(np.int64))
    return out


def torchvision_folder(root: Path) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Which torchvision data set a folder holds (MNIST or CIFAR-10 layout), and its splits."""
    root = Path(root)
    if (root / "MNIST" / "raw").is_dir():
        return "mnist", mnist_arrays(root)
    if (root / "cifar-10-batches-py").is_dir():
        return "cifar10", cifar10_arrays(root)
    raise DataError(f"{root}: neither MNIST/raw nor cifar-10-batches-py inside (torchvision's layouts)")


def _pooled(arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([arrays["train"][0], arrays["test"][0]]),
            np.concatenate([arrays["train"][1], arrays["test"][1]]))


def mnist_from_disk(root: Path, seed: int, fractions=(0.5, 0.2, 0.3)) -> Dataset:
    """MNIST already on disk in torchvision's layout, both official splits pooled and split anew."""
    x, y = _pooled(mnist_arrays(root))
    return split("mnist", (1, 28, 28), 10, x, y, fractions, seed)


def cifar10_from_disk(root: Path, seed: int, fractions=(0.5, 0.2, 0.3)) -> Dataset:
    """CIFAR-10 already on disk in torchvision's layout, both official splits pooled and split anew."""
    x, y = _pooled(cifar10_arrays(root))
    return split("cifar10", (3, 32, 32), 10, x, y, fractions, seed)


def load_dataset(name: str, seed: int, n_samples: int = 12000, data_root: Path | None = None) -> Dataset:
    """The data set a zoo profile names. Disk-backed sets need ``data_root``."""
    if name == "mnist1d":
        return mnist1d(n_samples, seed)
    if name == "digits":
        return digits(seed)
    if name in ("mnist", "cifar10"):
        if data_root is None:
            raise ConfigError(f"data set {name!r} is read from disk: pass --data-root (psml never downloads)")
        return (mnist_from_disk if name == "mnist" else cifar10_from_disk)(data_root, seed)
    raise ConfigError(f"unknown data set {name!r}; choose mnist1d, digits, mnist or cifar10")
