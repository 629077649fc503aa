"""Load-test settings, read from PSML_* environment variables so that Locust's master and every worker
process (on any host) see the same values; ``psml loadtest`` sets them from its command line."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

from common.errors import ConfigError


# Requests Locust cut off at stop, one JSON line each, in LoadSettings.out_dir (written by users.py).
INTERRUPTED_FILE = "interrupted.jsonl"
# Exact per-request times (ms, float) from Locust's request event, one file per Locust process (users.py).
LATENCY_FILE_GLOB = "latencies-*.jsonl"
USEFUL_FILE_GLOB = "useful-*.jsonl"  # benign answers: samples, right labels, answered, within the SLO


@dataclass(frozen=True)
class LoadSettings:
    data_file: str = "model_repository/default/data.npz"  # real test inputs and the attacker pool
    out_dir: str = "runs/loadtest"  # where attacker transcripts are written
    benign_key: str = "demo-benign-key"
    attacker_key: str = "demo-attacker-key"
    benign_users: int = 8
    attackers: int = 1
    spawn_rate_per_s: float = 8.0
    warmup_s: float = 10.0  # benign only
    attack_s: float = 30.0  # benign plus attackers
    cooldown_s: float = 10.0  # benign only
    think_min_s: float = 0.05  # benign think time between requests, uniform in [min, max]
    think_max_s: float = 0.2
    benign_max_batch: int = 8  # benign batch size, uniform in [1, max]
    benign_unconstrained_share: float = 0.2  # share of benign requests that omit each requirement
    benign_latency_slack: float = 4.0  # benign max_latency_ms uniform in [published min, slack * published max]
    attack_batch: int = 25  # samples per extraction request
    attack_budget: int = 1000  # samples per attacker
    seed: int = 0

    def __post_init__(self):
        for name in ("benign_users", "attackers", "attack_batch", "attack_budget", "benign_max_batch"):
            if getattr(self, name) < (0 if name in ("benign_users", "attackers") else 1):
                raise ConfigError(f"load setting {name} is out of range: {getattr(self, name)}")
        if not (0 <= self.think_min_s <= self.think_max_s):
            raise ConfigError("think times must satisfy 0 <= think_min_s <= think_max_s")
        if min(self.warmup_s, self.attack_s, self.cooldown_s) < 0:
            raise ConfigError("phase durations must be >= 0 seconds")

    @property
    def total_s(self) -> float:
        return self.warmup_s + self.attack_s + self.cooldown_s

    def to_env(self) -> dict[str, str]:
        return {f"PSML_{k.upper()}": str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_env(cls, env=os.environ) -> "LoadSettings":
        values = {}
        for f in fields(cls):
            raw = env.get(f"PSML_{f.name.upper()}")
            if raw is None:
                continue
            try:
                values[f.name] = type(f.default)(raw)
            except ValueError as e:
                raise ConfigError(f"PSML_{f.name.upper()}={raw!r} is not a valid {type(f.default).__name__}") from e
        return cls(**values)
