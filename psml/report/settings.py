"""The report's settings (what each step depends on, its cache key), the quick preset, and the checks every
input gets before the first step."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from common.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CODE_PACKAGES = ("common", "stack", "zoo", "router", "attacks", "loadtests", "benchmarks", "psml")
DEFENSE_CONFIG = "metric_noise 0.02/0.1ms"  # the PSML paper's defense, at benchmarks.defense_vs_none's scales
REPORT_ATTACKERS = ("staircase", "box_centre")  # the defense step's attacker set (benchmarks.defense_tradeoff)


@dataclass(frozen=True)
class ReportSettings:
    budgets: tuple[str, ...] = ("small", "medium", "large")
    labels_only_budgets: tuple[str, ...] = ("medium",)
    seeds: tuple[int, ...] = (0, 1, 2)
    surrogate: str = "cnn_large"
    surrogate_epochs: int = 40  # Knockoff's default: 20 left the small budget's surrogates undertrained (0.51)
    consistency_queries: int = 100
    grid_size: int = 25
    grid_repeats: int = 3
    validate_concurrency: tuple[int, ...] = (1,)  # the selection figure's cell; () re-measures every cell
    validate_duration_s: float | None = None  # None: the profile's own cell duration
    defense_budget: str = "medium"
    defense_epochs: int = 40
    benign_clients: int = 10
    benign_per_client: int = 20
    # encoder zoos (psml/report/encoder.py)
    encoder_budgets: tuple[str, ...] = ("small", "medium")  # 250 and 1,000 samples: 1/24 and 1/6 of 6,000
    encoder_losses: tuple[str, ...] = ("mse", "infonce", "softnn")
    encoder_surrogate: str = "cnn_large"
    encoder_epochs: int = 60
    encoder_defense_configs: tuple[str, ...] = ("none", "embedding_noise 0.1", "embedding_noise 0.5",
                                                "embedding_noise 1.0", "b4b default", "b4b 8 bits")
    encoder_defense_budget: int = 1000  # samples
    encoder_defense_quick: bool = False  # benchmarks.encoder_defenses' QUICK benign/attacker sizes

    def step(self, name: str) -> dict:
        """The settings a step depends on (its cache key), so changing one step's setting reruns only it."""
        keys = {"zoo": ("validate_concurrency", "validate_duration_s"),
                "fingerprint": ("consistency_queries", "grid_size", "grid_repeats"),
                "extraction": ("budgets", "labels_only_budgets", "seeds", "surrogate", "surrogate_epochs"),
                "defense": ("seeds", "defense_budget", "defense_epochs", "benign_clients", "benign_per_client"),
                "encoder_extraction": ("encoder_budgets", "seeds", "encoder_losses", "encoder_surrogate",
                                       "encoder_epochs"),
                "encoder_defense": ("seeds", "encoder_defense_configs", "encoder_defense_budget",
                                    "encoder_defense_quick")}[name]
        return {k: getattr(self, k) for k in keys}


QUICK = ReportSettings(budgets=("small",), labels_only_budgets=("small",), surrogate="cnn_small",
                       surrogate_epochs=8, consistency_queries=30, grid_size=8, grid_repeats=1,
                       validate_duration_s=0.5, defense_budget="small", defense_epochs=3, benign_clients=4,
                       benign_per_client=8, encoder_budgets=("small",), encoder_losses=("mse", "infonce"),
                       encoder_surrogate="cnn_small", encoder_epochs=10,
                       encoder_defense_configs=("none", "embedding_noise 0.5", "b4b 8 bits"),
                       encoder_defense_budget=200, encoder_defense_quick=True)


@dataclass
class StepRun:
    name: str
    result: dict
    folder: Path
    seconds: float
    cached: bool
    files: list[str] = field(default_factory=list)


def check_inputs(zoo_dir: Path, out_dir: Path, s: ReportSettings):
    """Everything a run needs, checked before the first step: one ConfigError naming what is wrong."""
    from attacks.knockoff import BUDGETS, resolve_budget
    from zoo.data import Dataset
    from zoo.manifest import load_manifest

    from common.errors import ManifestError

    if not (zoo_dir / "zoo.json").is_file():
        raise ConfigError(f"no zoo at {zoo_dir} (no zoo.json); build one with psml zoo build")
    try:
        manifest = load_manifest(zoo_dir)
    except ManifestError as e:
        raise ConfigError(str(e)) from None
    data_path = zoo_dir / manifest.zoo.dataset.data_file
    if not data_path.is_file():
        raise ConfigError(f"zoo {zoo_dir} has no data ({data_path} is missing); rebuild it with psml zoo build")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder")
    if not s.seeds or len(set(s.seeds)) != len(s.seeds):
        raise ConfigError(f"--seeds must be distinct integers, got {list(s.seeds)}")
    data = Dataset.load(data_path)
    if manifest.zoo.kind == "encoder":
        from .encoder import check_budgets

        check_budgets(s, data)
        return manifest, data
    pool = len(data.x["attacker_pool"])
    for b in (*s.budgets, *s.labels_only_budgets, s.defense_budget):
        resolve_budget(b, pool)
    if s.defense_budget not in BUDGETS:  # the trade-off benchmark takes names only
        raise ConfigError(f"the defense step takes a named budget ({', '.join(BUDGETS)}), "
                          f"got {s.defense_budget!r}")
    return manifest, data




def settings_from_args(a) -> ReportSettings:
    s = QUICK if a.quick else ReportSettings()
    over = {k: tuple(v) if isinstance(v, list) else v for k, v in
            (("seeds", a.seeds), ("budgets", a.budgets), ("labels_only_budgets", a.labels_only_budgets),
             ("surrogate_epochs", a.epochs), ("defense_budget", a.defense_budget),
             ("encoder_budgets", a.budgets), ("encoder_epochs", a.epochs)) if v is not None}
    return replace(s, **over)
