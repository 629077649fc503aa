"""Where an extraction attacker's queries come from.

- ``attacker_pool``: the zoo data split reserved for the attacker (in distribution, never seen in training);
- ``ood_noise``: out-of-distribution signals: smoothed random walks, scaled to the attacker pool's mean and
  standard deviation per feature (what an attacker without any in-distribution data could send).
"""

from __future__ import annotations

import numpy as np

from common.errors import ConfigError

POOLS = ("attacker_pool", "ood_noise")


def ood_noise(like: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(size=(n, like.shape[1])), axis=1)
    walk = (walk - walk.mean(1, keepdims=True)) / (walk.std(1, keepdims=True) + 1e-6)
    return (walk * like.std(0) + like.mean(0)).astype(np.float32)


def query_pool(name: str, data, seed: int) -> np.ndarray:
    if name == "attacker_pool":
        return data.x["attacker_pool"]
    if name == "ood_noise":
        return ood_noise(data.x["attacker_pool"], len(data.x["attacker_pool"]), seed)
    raise ConfigError(f"unknown query pool {name!r}; choose from {', '.join(POOLS)}")
