"""Seeded supervised training of one zoo model (Adam, cross-entropy, mini-batches)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    seed: int = 0


def run_epochs(params, n: int, step_loss, epochs: int, batch_size: int, learning_rate: float, seed: int,
               weight_decay: float = 0.0, losses: list[float] | None = None, min_batch: int = 1,
               desc: str = "") -> float:
    """The training loop every psml model shares (zoo classifiers, SimCLR encoders, stolen encoders): Adam with a
    cosine schedule over ``epochs``, batches of a seeded permutation of ``n`` samples, ``step_loss(idx, gen)``
    the loss of one batch (``gen``: the loop's generator, for augmentations). Returns wall-clock seconds;
    ``losses`` receives each epoch's mean loss (to tell a run that did not learn)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=learning_rate, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    start = time.perf_counter()
    for _ in tqdm(range(epochs), desc=desc, unit="epoch", leave=False, disable=None if desc else True):  # None: only on a terminal
        total, batches = 0.0, 0
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            if len(idx) < min_batch:
                continue
            opt.zero_grad()
            loss = step_loss(idx, gen)
            loss.backward()
            opt.step()
            total, batches = total + float(loss.detach()), batches + 1
        if losses is not None:
            losses.append(total / max(1, batches))
        sched.step()
    return time.perf_counter() - start


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, s: TrainSettings, desc: str = "",
          losses: list[float] | None = None) -> float:
    """Train in place; returns wall-clock seconds. Shuffling uses its own generator seeded by ``s.seed``.
    ``losses``, when given, receives each epoch's mean training loss (to tell a run that did not learn)."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    seconds = run_epochs(model.parameters(), len(yt), lambda idx, _: loss_fn(model(xt[idx]), yt[idx]), s.epochs,
                         s.batch_size, s.learning_rate, s.seed, s.weight_decay, losses, desc=desc)
    model.eval()
    return seconds


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    model.eval()
    out = [torch.softmax(model(torch.from_numpy(x[i : i + batch])), dim=1) for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()
