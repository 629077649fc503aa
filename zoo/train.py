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


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, s: TrainSettings, desc: str = "",
          losses: list[float] | None = None) -> float:
    """Train in place; returns wall-clock seconds. Shuffling uses its own generator seeded by ``s.seed``.
    ``losses``, when given, receives each epoch's mean training loss (to tell a run that did not learn)."""
    gen = torch.Generator().manual_seed(s.seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=s.learning_rate, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, s.epochs))
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    model.train()
    for _ in tqdm(range(s.epochs), desc=desc, unit="epoch", leave=False, disable=None if desc else True):  # None: only on a terminal
        total, batches = 0.0, 0
        for idx in torch.randperm(len(yt), generator=gen).split(s.batch_size):
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total, batches = total + float(loss.detach()), batches + 1
        if losses is not None:
            losses.append(total / max(1, batches))
        sched.step()
    model.eval()
    return time.perf_counter() - start


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    model.eval()
    out = [torch.softmax(model(torch.from_numpy(x[i : i + batch])), dim=1) for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()
