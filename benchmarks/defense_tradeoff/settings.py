"""What a trade-off run measures: the defense configurations, the attacker set, the run's settings and the
checks they get against the zoo before any server starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from attacks.box_centre import BoxCentreSettings
from attacks.fingerprint import FingerprintSettings
from attacks.knockoff import BUDGETS, KnockoffSettings
from common.errors import ConfigError

NOISE = {"name": "metric_noise", "distribution": "laplace"}
CONFIGS = {
    "none": [],
    "metric_noise 0.02/0.1ms": [NOISE | {"accuracy_scale": 0.02, "latency_scale_ms": 0.1}],
    "metric_noise 0.05/0.5ms": [NOISE | {"accuracy_scale": 0.05, "latency_scale_ms": 0.5}],
    "exponential eps=4": [{"name": "exponential_mechanism", "epsilon": 4.0}],
    "round 2 decimals": [{"name": "round_probabilities", "decimals": 2}],
    "round 1 decimal": [{"name": "round_probabilities", "decimals": 1}],
    "top_k 2": [{"name": "top_k", "k": 2}],
    "labels_only": [{"name": "labels_only"}],
    "reverse_sigmoid 0.5/1": [{"name": "reverse_sigmoid", "beta": 0.5, "gamma": 1.0}],
    "output_noise 0.1": [{"name": "output_noise", "sigma": 0.1}],
    "prada block": [{"name": "prada", "action": "block"}],
    "query_budget 500": [{"name": "query_budget", "max_samples": 500}],
    "latency_padding slowest": [{"name": "latency_padding", "floor": "slowest_front", "margin_ms": 1.0}],
    "noise+round2+prada": [NOISE | {"accuracy_scale": 0.02, "latency_scale_ms": 0.1},
                           {"name": "round_probabilities", "decimals": 2}, {"name": "prada", "action": "block"}],
}
QUICK = ("none", "metric_noise 0.02/0.1ms", "labels_only", "prada block", "latency_padding slowest")
SPLIT_KEYS = 3
FINGERPRINTERS = ("plain", "adaptive", "box_centre")
ATTACKERS = ("staircase", "staircase_adaptive", "box_centre", "signature_filter", "top_accuracy", "key_split")
# box_centre's staircase against noise: votes and back-offs that found every front model through Laplace
# 0.02 / 0.1 ms noise on the test zoo (tests/attacks/test_box_centre.py)
BOX_CENTRE = BoxCentreSettings(fingerprint=FingerprintSettings(votes=9, accuracy_backoff=0.05, latency_backoff_ms=0.2,
                                                               margin=0.25))
LONG_BENIGN_CLIENTS = 5  # benign keys that each send as many samples as one extraction (equal-volume FP rate)


@dataclass(frozen=True)
class DefenseTradeoffSettings:
    """One trade-off run. Every row is compared with the undefended router of the same run, so "none" is always
    measured (put first when ``configs`` leaves it out)."""

    zoo_dir: Path = Path("model_repository/default")
    configs: tuple[str, ...] = tuple(CONFIGS)  # names in CONFIGS
    victims: tuple[str, ...] = ("all",)  # ("all",), or any of "top", "middle" and front model names
    attackers: tuple[str, ...] = ATTACKERS  # the same set for every row; top_accuracy, key_split: top victim only
    seeds: tuple[int, ...] = (0, 1, 2)  # attack seeds: pool draw and surrogate initialisation
    budget: str = "medium"  # a named budget (attacks/knockoff.py BUDGETS: samples sent, every one counted)
    sweep_budgets_samples: tuple[int, ...] = ()  # (): no sweep; else also scored at these (and ``budget``)
    benign_clients: int = 20  # benign API keys, interleaved
    benign_requests_per_client: int = 30
    surrogate_epochs: int = KnockoffSettings().epochs
    router_seed: int = 0  # the router's seed tree (its noise), and the benign clients' draws

    def __post_init__(self):
        unknown = sorted(set(self.attackers) - set(ATTACKERS))
        if unknown:
            raise ConfigError(f"--attackers: unknown {', '.join(unknown)}; choose from {', '.join(ATTACKERS)}")
        unknown = [c for c in self.configs if c not in CONFIGS]
        if unknown:
            raise ConfigError(f"--configs: unknown {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
        if self.budget not in BUDGETS:
            raise ConfigError(f"--budget: {self.budget!r} is not a named budget ({', '.join(BUDGETS)})")
        if not self.seeds:
            raise ConfigError("--seeds: give at least one seed")

    @property
    def budget_samples(self) -> int:
        return BUDGETS[self.budget]

    def configs_run(self) -> list[str]:
        """The configurations measured, "none" first when it was not asked for."""
        names = list(self.configs)
        return names if "none" in names else ["none", *names]

    def as_dict(self) -> dict:
        return asdict(self) | {"zoo_dir": str(self.zoo_dir)}


def keys_for(n_benign: int, seeds, ranks) -> dict[str, str]:
    """Every key is its own client. Each (victim, attacker, seed) extraction is an independent attack instance with
    fresh keys: a per-client defense's state (a PRADA flag, a spent budget) must not carry from one to the next."""
    names = [f"benign-{i:02d}" for i in range(n_benign)] + [f"long-benign-{i}" for i in range(LONG_BENIGN_CLIENTS)]
    names += ["timing", "timing-natural"]
    for k in ranks:
        names += [f"fp-{who}-r{k}" for who in FINGERPRINTERS]
        for seed in seeds:
            names += [f"{who}-r{k}-s{seed}" for who in ATTACKERS if who != "key_split"]
            names += [f"split-{j}-r{k}-s{seed}" for j in range(SPLIT_KEYS)]
    return {k: k for k in names}


def resolve_victims(front: list, asked) -> list:
    """``asked``: ["all"], or any of "top", "middle" (the front's middle model; of an even front the faster of
    the two middle ones) and model names, each on the front. Front most accurate first."""
    if list(asked) == ["all"]:
        return list(front)
    names = {m.name: m for m in front}
    out = []
    for a in asked:
        m = front[0] if a == "top" else front[len(front) // 2] if a == "middle" else names.get(a)
        if m is None:
            raise ConfigError(f"--victims: {a!r} is not on this zoo's front ({', '.join(names)}); use all, top, "
                              "middle or a front model's name")
        if m not in out:
            out.append(m)
    return out


def sweep_for(s: DefenseTradeoffSettings, pool_samples: int) -> list[int]:
    """The swept budgets with the reference budget among them ([] without a sweep); each must lie in [25, the
    attacker pool] (one request of 25 samples at least). Raises ConfigError before any work otherwise."""
    if s.budget_samples > pool_samples:
        raise ConfigError(f"budget {s.budget} ({s.budget_samples} samples) exceeds the attacker pool of "
                          f"{pool_samples} samples")
    asked = list(s.sweep_budgets_samples)
    sweep = sorted(set(asked) | ({s.budget_samples} if asked else set()))
    if sweep and (sweep[0] < 25 or sweep[-1] > pool_samples):
        raise ConfigError(f"--sweep-budgets: every budget must lie in [25, {pool_samples}] "
                          f"(one request, the attacker pool), got {asked}")
    return sweep
