"""A "foreign" zoo to try ``psml zoo import`` on: image classifiers that psml did not build, as a user would bring.

    python -m zoo.foreign_example --out runs/foreign

trains four small PyTorch image classifiers on scikit-learn's 8x8 handwritten digits as [1, 8, 8] images (the
"user's" training split, 40%, which psml never sees) and exports them the way their owners might have: each with
its own tensor names, one answering logits (import it with ``--softmax tanh_mlp``), one with a fixed batch axis
of 16 (psml makes it dynamic and checks the answers). None of the architectures is in zoo/architectures.py. It
also writes ``eval.npz`` (30%, labelled) and ``pool.npz`` (30%, the attackers' unlabelled pool).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

SHAPE = (1, 8, 8)


class TanhMLP(nn.Module):
    """A 4x4 thumbnail of the digit into a narrow tanh layer: cheap and the least accurate."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 10))

    def forward(self, x):
        return self.net(x)


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(6, 12, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(12 * 16, 10))

    def forward(self, x):
        return self.net(x)


class SeparableNet(nn.Module):
    """Depthwise-separable convolutions, 64 channels."""

    def __init__(self, channels=128, blocks=4):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1), nn.ReLU()]
        for _ in range(blocks):
            layers += [nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.Conv2d(channels, channels, 1),
                       nn.BatchNorm2d(channels), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))

    def forward(self, x):
        return self.net(x)


class ResidualNet(nn.Module):
    """Wide residual blocks at full 8x8 resolution: the slow, accurate end of the zoo."""

    def __init__(self, channels=128, blocks=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU())
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                                  nn.Conv2d(channels, channels, 3, padding=1)) for _ in range(blocks))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = torch.relu(x + 0.5 * b(x))  # a damped branch (no normalisation layers)
        return self.head(x)


class Probabilities(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x), 1)


# name -> (model, input name, output name, answers logits, fixed batch size or None, epochs, learning rate)
MODELS = {
    "tanh_mlp": (TanhMLP, "x", "logits", True, None, 40, 3e-3),
    "lenet": (LeNet, "image", "probabilities", False, None, 20, 3e-3),
    "separable": (SeparableNet, "input.1", "output_0", False, 16, 25, 3e-3),
    "residual": (ResidualNet, "pixels", "class_probs", False, None, 20, 2e-3),
}


def digits_split(seed: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, *SHAPE)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = [int(0.4 * len(x)), int(0.7 * len(x))]
    train, ev, pool = np.split(order, cut)
    return (x[train], d.target[train]), (x[ev], d.target[ev]), x[pool]


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int) -> None:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()


def export(model: nn.Module, path: Path, input_name: str, output_name: str, logits: bool, fixed_batch: int | None):
    wrapped = model if logits else Probabilities(model)
    batch = fixed_batch or 2
    torch.onnx.export(wrapped.eval(), (torch.zeros(batch, *SHAPE),), str(path), input_names=[input_name],
                      output_names=[output_name], opset_version=17, dynamo=False,
                      dynamic_axes=None if fixed_batch else {input_name: {0: "n"}, output_name: {0: "n"}})


def write_example(out: Path, seed: int = 0, epoch_scale: float = 1.0, log=print) -> dict:
    out = Path(out)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    (xtr, ytr), (xev, yev), pool = digits_split(seed)
    np.savez(out / "eval.npz", x=xev, y=yev)
    np.savez(out / "pool.npz", x=pool)
    files = {}
    for i, (name, (cls, inp, outp, logits, fixed, epochs, lr)) in enumerate(MODELS.items()):
        torch.manual_seed(seed + i)
        model = cls()
        t0 = time.perf_counter()
        train(model, xtr, ytr, max(1, int(round(epochs * epoch_scale))), lr, seed + i)
        with torch.no_grad():
            acc = float((model(torch.from_numpy(xev)).argmax(1).numpy() == yev).mean())
        files[name] = out / "onnx" / f"{name}.onnx"
        export(model, files[name], inp, outp, logits, fixed)
        log(f"  {name:<10} accuracy {acc:.3f} on eval.npz  ({time.perf_counter() - t0:.1f} s)"
            + ("  answers logits" if logits else "") + (f"  fixed batch {fixed}" if fixed else ""))
    return files


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/foreign", help="folder for onnx/*.onnx, eval.npz and pool.npz")
    ap.add_argument("--seed", type=int, default=0, help="data split and training seed")
    ap.add_argument("--epoch-scale", type=float, default=1.0, help="scale every model's training epochs (tests: 0.2)")
    a = ap.parse_args(argv)
    files = write_example(Path(a.out), a.seed, a.epoch_scale)
    print(f"wrote {len(files)} ONNX files, eval.npz and pool.npz under {a.out}; import them with\n"
          f"  psml zoo import --name foreign --onnx {' '.join(str(f) for f in files.values())} "
          f"--data {Path(a.out) / 'eval.npz'} --attacker-pool {Path(a.out) / 'pool.npz'} --softmax tanh_mlp")


if __name__ == "__main__":
    main()
