"""Settings of the shared-state Locust run (loadtests/shared_state_locustfile.py): routers that share one store,
benign keys, one budgeted attacker key and one synthetic-stream key, each key's requests alternating between the
routers. Read from PSML_SS_* environment variables so that the Locust process sees what the benchmark chose;
no locust import here (the benchmark process must not be monkey-patched by gevent)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

from common.errors import ConfigError

ENV_PREFIX = "PSML_SS_"


def api_keys(benign_keys: int) -> dict[str, str]:
    """API key -> client name, as every router of the run is given them."""
    return {f"ss-benign-{i}": f"benign-{i}" for i in range(benign_keys)} | {
        "ss-attacker": "attacker", "ss-synthetic": "synthetic"}


@dataclass(frozen=True)
class SharedStateLoad:
    router_urls: str = ""  # comma-separated: every key alternates its requests over these
    data_file: str = "model_repository/default/data.npz"
    duration_s: float = 30.0  # the whole Locust run; the attacker and the synthetic stream stop when refused
    benign_keys: int = 4  # one Locust user per key
    benign_max_batch: int = 4  # benign batch size uniform in [1, max], natural test samples, none repeated
    think_min_s: float = 0.1  # benign think time, uniform in [min, max]
    think_max_s: float = 0.4
    attacker_users: int = 2  # Locust users sharing the attacker key, user j starting at router j
    attack_batch: int = 30  # the attacker's first batch; halved on each budget refusal, down to 1
    synthetic_batch: int = 10  # JBDA-like stream: this many seeds, each request one signed step of every seed
    synthetic_step: float = 0.1  # the step's size per feature, in units of the data's (unit) scale
    seed: int = 0

    def __post_init__(self):
        for name in ("benign_keys", "attacker_users", "attack_batch", "benign_max_batch", "synthetic_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"shared-state load setting {name} must be >= 1, got {getattr(self, name)}")
        if not self.duration_s > 0:
            raise ConfigError(f"shared-state load setting duration_s must be > 0 seconds, got {self.duration_s:g}")
        if not 0 <= self.think_min_s <= self.think_max_s:
            raise ConfigError("think times must satisfy 0 <= think_min_s <= think_max_s")
        if not self.synthetic_step > 0:
            raise ConfigError(f"synthetic_step must be > 0, got {self.synthetic_step:g}")

    @property
    def urls(self) -> list[str]:
        return [u for u in self.router_urls.split(",") if u]

    @property
    def total_s(self) -> float:
        return self.duration_s

    def to_env(self) -> dict[str, str]:
        return {f"{ENV_PREFIX}{k.upper()}": str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_env(cls, env=os.environ) -> "SharedStateLoad":
        values = {}
        for f in fields(cls):
            raw = env.get(f"{ENV_PREFIX}{f.name.upper()}")
            if raw is not None:
                try:
                    values[f.name] = type(f.default)(raw)
                except ValueError as e:
                    raise ConfigError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a valid "
                                      f"{type(f.default).__name__}") from e
        return cls(**values)
