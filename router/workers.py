"""Which worker of a router this process is, and the random stream it draws from.

With one worker (the default) the router's streams come from ``seed`` itself, as they always have. With N
workers, worker k draws from child k of the router's seed (``SeedSequence(seed).spawn(N)[k]``), so every
worker's noise is reproducible and no two workers share a stream; a worker restarted after a crash (its r-th
restart) draws from child k of ``SeedSequence([seed, r])`` instead, so it never replays noise it already used.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np


def fresh_seed() -> int:
    """A 63-bit seed from the OS's entropy pool: unpredictable, an int that replays the run when given back, and
    small enough for every JSON writer (orjson refuses integers over 64 bits)."""
    return secrets.randbits(63)


@dataclass(frozen=True)
class WorkerIdentity:
    index: int = 0  # k in 0..count-1
    count: int = 1
    restart: int = 0  # how many times the supervisor restarted worker k before this process

    @classmethod
    def single(cls) -> "WorkerIdentity":
        return cls()

    def seed_sequence(self, seed: int) -> np.random.SeedSequence:
        if self.count == 1 and self.restart == 0:
            return np.random.SeedSequence(seed)
        entropy = seed if self.restart == 0 else [seed, self.restart]
        return np.random.SeedSequence(entropy, spawn_key=(self.index,))
