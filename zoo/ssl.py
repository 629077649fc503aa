"""Self-supervised encoders for encoder zoos: SimCLR-style contrastive training and linear-probe scoring.

Paper: Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations" (SimCLR), ICML 2020:
two random augmentations of each sample, an MLP projection head, the NT-Xent loss over the batch; the head is
thrown away and the backbone's output is the representation. Augmentations suit the data: (C, L) signals
(MNIST-1D) get the transformations MNIST-1D's own generator applies to its templates (Greydanus & Kobak 2020): a
time stretch about the centre, a circular shift, amplitude scaling, a linear shear, correlated and white noise;
(C, H, W) images get a shift of up to one pixel and noise. Views that differ only by a small shift, scale and
white noise (an earlier set) taught nothing: SimCLR's cnn_small probed 0.576 against 0.595 for the same network
untrained; with MNIST-1D's transformations it probes 0.886 (60 epochs). An encoder's "accuracy" is its
downstream linear-probe accuracy: a multinomial logistic regression trained on the representations of the
labelled victim_train split, scored on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from common.errors import ConfigError


@dataclass(frozen=True)
class SSLSettings:
    epochs: int
    batch_size: int = 256
    learning_rate: float = 3e-3
    temperature: float = 0.5  # NT-Xent's tau
    projection_dim: int = 64
    # signals (units: share of the length, or of the data's standard deviation)
    max_shift_fraction: float = 0.25  # circular shift up to this share of the length
    stretch_range: tuple[float, float] = (0.75, 1.25)  # time stretch factor about the centre
    scale_range: tuple[float, float] = (0.8, 1.2)  # amplitude scaling
    shear_std: float = 0.5  # a linear ramp from -a to +a, a uniform in [-shear_std, shear_std] x data std
    correlated_noise_std: float = 0.25  # white noise smoothed over 5 steps, x data std
    noise_std: float = 0.05  # white noise, x data std (images too)
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError("SSL training needs epochs >= 1 and batch_size >= 2 (pairs contrast within a batch)")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")


def augment(x: torch.Tensor, sample_shape: tuple[int, ...], s: SSLSettings, gen: torch.Generator,
            data_std: float) -> torch.Tensor:
    """One random view of each flat sample in ``x`` [B, D]; returned flat."""
    b = len(x)
    v = x.reshape(b, *sample_shape)
    if len(sample_shape) == 2:  # (C, L) signal
        v = _signal_view(v, s, gen, data_std)
    elif len(sample_shape) == 3:  # (C, H, W) image: shift by up to one pixel, zero fill
        out = torch.zeros_like(v)
        dy, dx = (torch.randint(-1, 2, (b,), generator=gen) for _ in range(2))
        for i in range(b):
            y0, x0 = int(dy[i]), int(dx[i])
            src = v[i, :, max(0, -y0): sample_shape[1] - max(0, y0), max(0, -x0): sample_shape[2] - max(0, x0)]
            out[i, :, max(0, y0): max(0, y0) + src.shape[1], max(0, x0): max(0, x0) + src.shape[2]] = src
        v = out
    v = v + s.noise_std * data_std * torch.randn(v.shape, generator=gen)
    return v.reshape(b, -1)


def _gather_time(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.gather(v, 2, idx[:, None, :].expand(-1, v.shape[1], -1))


def _signal_view(v: torch.Tensor, s: SSLSettings, gen: torch.Generator, data_std: float) -> torch.Tensor:
    """MNIST-1D's generative transformations, vectorised over the batch (v: [B, C, L])."""
    b, _, length = v.shape
    steps = torch.arange(length, dtype=torch.float32)
    centre = (length - 1) / 2
    lo, hi = s.stretch_range  # stretch: read position t / f about the centre, linear interpolation, edges held
    t = ((steps[None, :] - centre) / (lo + (hi - lo) * torch.rand(b, 1, generator=gen)) + centre).clamp(0, length - 1)
    i0 = t.floor().long().clamp(0, length - 2)
    w = (t - i0)[:, None, :]
    v = _gather_time(v, i0) * (1 - w) + _gather_time(v, i0 + 1) * w
    max_shift = max(1, int(s.max_shift_fraction * length))
    shifts = torch.randint(-max_shift, max_shift + 1, (b,), generator=gen)
    v = _gather_time(v, (steps.long()[None, :] - shifts[:, None]) % length)
    lo, hi = s.scale_range
    v = v * (lo + (hi - lo) * torch.rand(b, 1, 1, generator=gen))
    slope = s.shear_std * data_std * (2 * torch.rand(b, 1, 1, generator=gen) - 1)
    v = v + slope * torch.linspace(-1, 1, length)[None, None, :]
    white = torch.randn(v.shape, generator=gen).reshape(-1, 1, length)
    smooth = nn.functional.conv1d(white, torch.full((1, 1, 5), 5 ** -0.5), padding=2).reshape(v.shape)
    return v + s.correlated_noise_std * data_std * smooth


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view's positive is the other view of its sample, the 2B - 2 other views negatives."""
    z = nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    b = len(z1)
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)])
    return nn.functional.cross_entropy(sim, target)


def projection_head(embedding_dim: int, projection_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(embedding_dim, embedding_dim), nn.ReLU(), nn.Linear(embedding_dim, projection_dim))


def train_simclr(encoder: nn.Module, x: np.ndarray, sample_shape: tuple[int, ...], embedding_dim: int,
                 s: SSLSettings, losses: list[float] | None = None) -> float:
    """Train ``encoder`` (flat [B, D] -> [B, embedding_dim]) in place without labels; returns seconds."""
    from .train import run_epochs

    torch.manual_seed(s.seed)
    head = projection_head(embedding_dim, s.projection_dim)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    data_std = float(xt.std())

    def step_loss(idx, gen):
        v1, v2 = (augment(xt[idx], sample_shape, s, gen, data_std) for _ in range(2))
        return nt_xent(head(encoder(v1)), head(encoder(v2)), s.temperature)

    encoder.train()
    seconds = run_epochs(list(encoder.parameters()) + list(head.parameters()), len(xt), step_loss, s.epochs,
                         s.batch_size, s.learning_rate, s.seed, losses=losses, min_batch=2)
    encoder.eval()
    return seconds


@torch.no_grad()
def embed(encoder: nn.Module, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    encoder.eval()
    return torch.cat([encoder(torch.from_numpy(x[i: i + batch])) for i in range(0, len(x), batch)]).numpy()


@dataclass(frozen=True)
class LinearProbe:
    """A multinomial logistic regression on standardised representations (scikit-learn, lbfgs)."""

    model: object
    mean: np.ndarray
    std: np.ndarray

    def predict(self, emb: np.ndarray) -> np.ndarray:
        return self.model.predict((emb - self.mean) / self.std)

    def accuracy(self, emb: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(emb) == y))


def fit_probe(emb: np.ndarray, y: np.ndarray, seed: int = 0) -> LinearProbe:
    from sklearn.linear_model import LogisticRegression

    emb = np.asarray(emb, dtype=np.float64)
    mean, std = emb.mean(0), emb.std(0) + 1e-8
    clf = LogisticRegression(max_iter=2000, random_state=seed)
    clf.fit((emb - mean) / std, y)
    return LinearProbe(clf, mean, std)
