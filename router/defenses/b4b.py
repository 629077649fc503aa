"""B4B-style per-client defense for encoder zoos: the more of the embedding space one API key's queries cover,
the noisier that key's answers.

Paper: Dubinski et al., "Bucks for Buckets (B4B): Active Defenses Against Stealing Encoders", NeurIPS 2023. A
benign client embeds data for its own task, which occupies a small part of the representation space; an
extraction attacker must cover much of it. Coverage is estimated with locality-sensitive hashing: each returned
(clean) embedding, centred on the running mean of every embedding served so far (an encoder's outputs sit in a
cone that hyperplanes through the origin barely split), falls in one of 2^``hash_bits`` buckets given by the
signs of ``hash_bits`` seeded random projections, and a key's coverage is the share of buckets it has hit. Its answers then get Gaussian noise of std
sigma(c) x ||e|| / sqrt(E), with sigma(c) = ``max_sigma`` (exp(``beta`` c) - 1) / (exp(``beta``) - 1): nothing
at zero coverage, ``max_sigma`` at full coverage, steeply convex in between. Left out here: B4B's per-key
transformations of the representation (against sybil keys combining their answers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.errors import ConfigError


@dataclass
class B4B:
    hash_bits: int = 12  # 4,096 buckets
    beta: float = 8.0  # convexity of sigma(coverage)
    max_sigma: float = 1.0  # noise at full coverage, relative to a row's root-mean-square coordinate
    # the projections: the same in every worker and router that share coverage through a store, so they come
    # from this setting (keep it private in a deployment); the answers' noise comes from the router's seed
    # tree (``use_noise_stream``), so workers never share a stream and a recorded seed replays it
    seed: int = 0
    name = "b4b"
    for_embeddings = True
    _planes: np.ndarray | None = field(default=None, repr=False)
    _buckets: dict = field(default_factory=dict, repr=False)  # client -> set of bucket ids
    _rng: np.random.Generator | None = field(default=None, repr=False)
    _sum: np.ndarray | None = field(default=None, repr=False)  # running sum and count of served embeddings
    _count: int = field(default=0, repr=False)

    def __post_init__(self):
        if not 1 <= self.hash_bits <= 24:
            raise ConfigError(f"b4b hash_bits must be in [1, 24], got {self.hash_bits}")
        if self.beta <= 0 or self.max_sigma < 0:
            raise ConfigError("b4b beta must be > 0 and max_sigma >= 0")
        self._rng = np.random.default_rng(self.seed)

    def use_noise_stream(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def sigma(self, coverage: float) -> float:
        return self.max_sigma * float(np.expm1(self.beta * coverage) / np.expm1(self.beta))

    def coverage(self, client: str) -> float:
        return len(self._buckets.get(client, ())) / 2 ** self.hash_bits

    # client defense hooks: nothing to refuse before the work, nothing to add after it
    def admit(self, client: str, n_samples: int, now: float) -> None:
        return None

    def observe(self, client: str, x: np.ndarray, labels) -> dict | None:
        return None

    def perturb_client_output(self, client: str, emb: np.ndarray) -> tuple[np.ndarray, dict]:
        if self._planes is None:
            self._planes = np.random.default_rng(self.seed + 1).standard_normal((emb.shape[1], self.hash_bits))
            self._sum = np.zeros(emb.shape[1])
        self._sum += emb.sum(0)
        self._count += len(emb)
        bits = ((emb - self._sum / self._count) @ self._planes > 0).astype(np.int64)
        ids = bits @ (1 << np.arange(self.hash_bits))
        self._buckets.setdefault(client, set()).update(ids.tolist())
        c = self.coverage(client)
        s = self.sigma(c)
        rms = np.linalg.norm(emb, axis=1, keepdims=True) / np.sqrt(emb.shape[1])
        noisy = emb + s * rms * self._rng.standard_normal(emb.shape)
        return noisy.astype(emb.dtype), {"b4b_coverage": round(c, 6), "b4b_sigma": round(s, 6)}
