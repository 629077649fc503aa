"""``psml report``: the whole PSML reproduction on one stack, in one command, as a report one can cite.

Steps, each cached (see below) and each on its own Triton and router on loopback:
1. zoo: the zoo table and its front, re-measured on this host (``psml zoo validate``): a verdict per model;
2. fingerprint: staircase vs grid scan for every rank on the front, queries and consistency (audit log);
3. extraction: Knockoff in the explicit / fingerprinted / naive settings x budgets x seeds, with probabilities
   and with top-1 labels only; mean, spread and 95% interval over seeds; failed surrogates named, not averaged;
4. defense: the metric-noise defense against the undefended router, each judged against the strongest attacker
   psml fields, with benign goodput, latency and false positives (``benchmarks.defense_tradeoff``).
On an encoder zoo steps 3 and 4 are direct extraction of encoders and the encoder defenses
(psml/report_encoder.py), with the encoder seed's claims.
Then every PSML claim becomes one line with the measured figure, the tolerance and a verdict (VALID, INVALID,
or UNDETERMINED when a figure is missing), in MLPerf LoadGen's style.

Caching: a step's result lives in ``<out>/.cache/<step>-<key>/`` where the key hashes the zoo's manifest, the
step's settings and the code (every .py file of the project). A rerun reuses finished steps; ``--fresh``
ignores them. Each step's folder and the report's files are written to a temporary name and renamed when
complete, so an interrupted run never leaves a report (or a cached step) that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from common.atomic import write_json_atomic, write_text_atomic
from common.errors import ConfigError
from common.stats import mean_ci95
from common.versions import hardware, software_versions

ROOT = Path(__file__).resolve().parents[1]
CODE_PACKAGES = ("common", "stack", "zoo", "router", "attacks", "loadtests", "benchmarks", "psml")
DEFENSE_CONFIG = "metric_noise 0.02/0.1ms"  # the PSML paper's defense, at benchmarks.defense_vs_none's scales
FINGERPRINT_TOLERANCE = 0.01  # PSML: fingerprinted within 1% of explicit
PAPER_DEFENSE = {"d_accuracy": -0.098, "d_fidelity": -0.048, "min_goodput": 0.80}


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
    # encoder zoos (psml/report_encoder.py)
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


# ---- checks before any work ----------------------------------------------------------------------------------
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
        from .report_encoder import check_budgets

        check_budgets(s, data)
        return manifest, data
    pool = len(data.x["attacker_pool"])
    for b in (*s.budgets, *s.labels_only_budgets, s.defense_budget):
        resolve_budget(b, pool)
    if s.defense_budget not in BUDGETS:  # the trade-off benchmark takes names only
        raise ConfigError(f"the defense step takes a named budget ({', '.join(BUDGETS)}), "
                          f"got {s.defense_budget!r}")
    return manifest, data


# ---- caching -------------------------------------------------------------------------------------------------
def code_version() -> str:
    """A hash of every Python file of the project: any code change reruns every step."""
    h = hashlib.sha256()
    for pkg in CODE_PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")) if (ROOT / pkg).is_dir() else []:
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def step_key(name: str, zoo_dir: Path, s: ReportSettings, code: str) -> str:
    blob = json.dumps({"step": name, "settings": s.step(name), "code": code,
                       "zoo": hashlib.sha256((zoo_dir / "zoo.json").read_bytes()).hexdigest()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_step(name: str, func, cache: Path, key: str, fresh: bool, log) -> StepRun:
    """``func(folder) -> dict`` writes its files into ``folder``; the folder becomes the cache entry when done."""
    folder = cache / f"{name}-{key}"
    if not fresh and (folder / "result.json").is_file():
        meta = json.loads((folder / "result.json").read_text())
        log(f"  {name}: cached ({folder.name}, {meta['seconds']:.0f} s when it ran)")
        return StepRun(name, meta["result"], folder, meta["seconds"], True, meta["files"])
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
    t0 = time.perf_counter()
    try:
        result = func(tmp)
        seconds = time.perf_counter() - t0
        files = sorted(p.name for p in tmp.iterdir() if p.suffix == ".png")
        write_json_atomic(tmp / "result.json", {"result": result, "seconds": seconds, "files": files})
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)  # only a finished step gets its cache name
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"  {name}: done in {seconds:.0f} s")
    return StepRun(name, result, folder, seconds, False, files)


# ---- the steps -----------------------------------------------------------------------------------------------
def zoo_step(zoo_dir: Path, s: ReportSettings, log):
    def run(folder: Path) -> dict:
        from zoo.manifest import load_manifest

        from zoo.table import zoo_rows
        from .zoo_validation import run_validation

        manifest = load_manifest(zoo_dir)
        try:
            valid = run_validation(zoo_dir, concurrency=tuple(s.validate_concurrency), duration_s=s.validate_duration_s,
                                   out_dir=folder, log=lambda *_: None)
            report = json.loads((folder / "validate.json").read_text())["report"]
            models = [{k: r[k] for k in ("model", "accuracy", "manifest_ms", "observed_ms", "drift")}
                      | {"verdict": "VALID" if r["valid"] else "INVALID"} for r in report["models"]]
            validation = {"valid": valid, "models": models, "front": report["front"], "tolerance": report["tolerance"]}
        except ConfigError as e:  # e.g. a zoo whose selection path needs a router URL: the report says so
            validation = {"valid": None, "error": str(e)}
        (folder / "validate.json").unlink(missing_ok=True)  # its figures are in this step's result
        (folder / "latency_vs_concurrency.png").unlink(missing_ok=True)
        return {"rows": zoo_rows(manifest), "front": [m.name for m in manifest.pareto_models()],
                "selection": manifest.profile.selection_describe(), "front_check": manifest.profile.front_check,
                "validation": validation, "dataset": manifest.zoo.dataset.name}
    return run


def fingerprint_step(zoo_dir: Path, manifest, data, s: ReportSettings, log):
    def run(folder: Path) -> dict:
        from attacks.experiment import front_by_accuracy

        from .cli_attack import fingerprint_and_score
        from stack.loopback import router_for, triton_for

        ranks = []
        with triton_for(zoo_dir, folder) as triton, router_for(zoo_dir, folder, triton) as router:
            for k in range(1, len(front_by_accuracy(manifest)) + 1):
                out = fingerprint_and_score(router, manifest, data, ["staircase", "grid_scan"], k,
                                            s.consistency_queries, s.grid_size, s.grid_repeats)
                ranks.append({"rank": k, "target": out["target"]} | {
                    m: {"queries": r["queries"], "spec": r["spec"], "consistency": r["consistency"]["consistency"]}
                    for m, r in out["results"].items()})
                log(f"    rank {k} ({out['target']}): staircase {ranks[-1]['staircase']['queries']} queries, "
                    f"consistency {ranks[-1]['staircase']['consistency']:.2f}")
        _clean(folder)
        fingerprint_plot(ranks, folder / "fingerprint_queries.png")
        return {"ranks": ranks}
    return run


def extraction_step(zoo_dir: Path, manifest, data, s: ReportSettings, log):
    def run(folder: Path) -> dict:
        from tqdm import tqdm

        from attacks.knockoff import KnockoffSettings

        from .cli_attack import extract_and_score
        from stack.loopback import router_for, triton_for

        total = (len(s.budgets) + len(s.labels_only_budgets)) * len(s.seeds) * 3
        base = KnockoffSettings(surrogate=s.surrogate, epochs=s.surrogate_epochs)
        with triton_for(zoo_dir, folder) as triton, router_for(zoo_dir, folder, triton) as router, \
                tqdm(total=total, desc="    extraction runs", unit="run", leave=False) as bar:
            out = extract_and_score(zoo_dir, manifest, data, triton, router, list(s.budgets), list(s.seeds),
                                    "attacker_pool", base, log=lambda m: bar.write(m) if "failed" in m else None,
                                    labels_only_budgets=list(s.labels_only_budgets), progress=bar.update)
        _clean(folder)
        extraction_plot(out["summary"], folder / "extraction.png")
        return out | {"knockoff": base.as_dict()}
    return run


def defense_step(zoo_dir: Path, s: ReportSettings, log):
    def run(folder: Path) -> dict:
        from benchmarks import defense_tradeoff

        out = folder / "defense_tradeoff.json"
        argv = ["--zoo", str(zoo_dir), "--configs", DEFENSE_CONFIG, "--seeds", *map(str, s.seeds),
                "--budget", s.defense_budget, "--epochs", str(s.defense_epochs),
                "--benign-clients", str(s.benign_clients), "--benign-per-client", str(s.benign_per_client),
                "--out", str(out)]
        if defense_tradeoff.main(argv) != 0:
            raise ConfigError("the defense trade-off run failed")
        result = json.loads(out.read_text())
        out.unlink()
        return {"rows": result["rows"], "victim": result["victim"], "budget": result["budget"],
                "by_attacker": {k: v["by_attacker"] for k, v in result["details"].items()},
                "paper": result["paper"]}
    return run


def _clean(folder: Path) -> None:
    """Logs, settings and audit logs of the step's servers are not part of the report."""
    for p in folder.iterdir():
        if p.is_file() and p.suffix != ".png":
            p.unlink()


# ---- plots ---------------------------------------------------------------------------------------------------
def fingerprint_plot(ranks: list[dict], path: Path) -> None:
    from zoo.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = np.arange(len(ranks))
    for i, method in enumerate(("staircase", "grid_scan")):
        ax.bar(x + (i - 0.5) * 0.38, [r[method]["queries"] for r in ranks], 0.38, label=method)
    ax.set_xticks(x, [f"rank {r['rank']}\n{r['target']}" for r in ranks], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("queries to a specification that reaches the target")
    ax.set_title("fingerprinting every front rank")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


SETTING_ORDER = ("explicit", "fingerprinted", "naive")


def setting_bars(ax, x: np.ndarray, i: int, setting: str, metric: str, rows: list[dict | None]) -> None:
    """One setting's bars (the i-th of SETTING_ORDER) at positions ``x``, a summary row per position (None: no
    bar), each with its 95% interval over seeds as the error bar."""
    vals, errs = [], [[], []]
    for r in rows:
        v = r[metric] if r and r[metric] is not None else np.nan
        ci = r.get(f"{metric}_ci95") if r else None
        vals.append(v)
        errs[0].append(v - ci[0] if ci else 0)
        errs[1].append(ci[1] - v if ci else 0)
    ax.bar(x + (i - 1) * 0.27, vals, 0.27, yerr=errs, capsize=3, label=setting)


def extraction_plot(summary: list[dict], path: Path) -> None:
    from zoo.plots import _plt

    plt = _plt()
    groups = list(dict.fromkeys((r["budget"], r["labels_only"]) for r in summary))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("accuracy", "fidelity")):
        x = np.arange(len(groups))
        for i, setting in enumerate(SETTING_ORDER):
            setting_bars(ax, x, i, setting, metric, [next((r for r in summary if (r["budget"], r["labels_only"]) == g
                                                          and r["setting"] == setting), None) for g in groups])
        ax.set_xticks(x, [f"{b}{' labels' if lo else ''}" for b, lo in groups])
        lo = min((r[metric] for r in summary if r[metric] is not None), default=0)
        ax.set_ylim(max(0, lo - 0.1), 1)
        ax.set_ylabel(f"surrogate {metric} (95% CI over seeds)")
        ax.legend(fontsize=8)
    fig.suptitle("Knockoff extraction of the most accurate model")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- claims --------------------------------------------------------------------------------------------------
def _verdict(ok: bool | None) -> str:
    return "UNDETERMINED" if ok is None else ("VALID" if ok else "INVALID")


def claims(steps: dict[str, StepRun]) -> list[dict]:
    """Each PSML claim: what was measured, the tolerance, the verdict."""
    lines = []
    zoo = steps["zoo"].result
    v = zoo["validation"]
    lines.append({"claim": "the zoo's profile holds on this host (psml zoo validate: every model's selection "
                           "figure within tolerance, front unchanged)",
                  "measured": v.get("error") or (", ".join(f"{m['model']} {m['drift'] * 100:+.1f}% {m['verdict']}"
                                                           for m in v["models"])
                                                 + f"; front {'unchanged' if v['front']['valid'] else 'moved'}"),
                  "tolerance": "drift within 25% beyond the 95% interval", "verdict": _verdict(v["valid"])})
    ranks = steps["fingerprint"].result["ranks"]
    ok = all(r["staircase"]["consistency"] >= 0.95 and r["staircase"]["queries"] < r["grid_scan"]["queries"]
             for r in ranks)
    lines.append({"claim": "the staircase finds a specification that always reaches each front model, in fewer "
                           "queries than a grid scan",
                  "measured": "; ".join(f"rank {r['rank']}: {r['staircase']['queries']} vs {r['grid_scan']['queries']} "
                                        f"queries, consistency {r['staircase']['consistency']:.2f}" for r in ranks),
                  "tolerance": "consistency >= 0.95 at every rank", "verdict": _verdict(ok)})
    if "encoder_extraction" in steps:
        from .report_encoder import claims as encoder_claims

        return lines + encoder_claims(steps)
    runs = steps["extraction"].result["runs"]
    for budget, labels_only in dict.fromkeys((r["budget"], r["labels_only"]) for r in runs):
        tag = f"{budget} budget{', labels only' if labels_only else ''}"
        by = {}
        for r in runs:
            if r["budget"] == budget and r["labels_only"] == labels_only:
                by.setdefault(r["setting"], {})[r["seed"]] = r
        lines.append(_within(by, tag))
        lines.append(_gain(by, tag))
    if "defense" in steps:
        lines.append(_defense(steps["defense"].result))
    return lines


def _paired(by: dict, a: str, b: str, metric: str) -> list[float]:
    """Per-seed differences a - b where both settings trained a surrogate on that seed."""
    seeds = sorted(set(by.get(a, {})) & set(by.get(b, {})))
    return [by[a][s][metric] - by[b][s][metric] for s in seeds
            if not by[a][s].get("failed") and not by[b][s].get("failed")]


def _failed_note(by: dict) -> str:
    failed = [f"{setting} seed {s}" for setting, rs in by.items() for s, r in sorted(rs.items()) if r.get("failed")]
    return f" (failed, left out: {', '.join(failed)})" if failed else ""


def _within(by: dict, tag: str) -> dict:
    acc, fid = _paired(by, "fingerprinted", "explicit", "accuracy"), _paired(by, "fingerprinted", "explicit", "fidelity")
    claim = f"fingerprinted extraction within 1% of explicit ({tag})"
    if not acc:
        return {"claim": claim, "measured": "no seed with both surrogates" + _failed_note(by),
                "tolerance": "abs(difference) <= 0.01", "verdict": "UNDETERMINED"}
    da, df = float(np.mean(acc)), float(np.mean(fid))
    return {"claim": claim, "measured": f"{da:+.4f} accuracy, {df:+.4f} fidelity over {len(acc)} seeds" + _failed_note(by),
            "tolerance": "abs(mean difference) <= 0.01 in both",
            "verdict": _verdict(abs(da) <= FINGERPRINT_TOLERANCE and abs(df) <= FINGERPRINT_TOLERANCE)}


def _gain(by: dict, tag: str) -> dict:
    acc = _paired(by, "fingerprinted", "naive", "accuracy")
    claim = f"fingerprinting gains over naive extraction ({tag}; PSML: up to +14.6 accuracy points)"
    if len(acc) < 2:
        return {"claim": claim, "measured": f"{len(acc)} paired seed(s): no interval" + _failed_note(by),
                "tolerance": "mean gain > 0 with a 95% interval excluding 0", "verdict": "UNDETERMINED"}
    m, lo, hi = mean_ci95(acc)
    return {"claim": claim, "measured": f"{m:+.4f} accuracy, 95% CI [{lo:+.4f}, {hi:+.4f}] over {len(acc)} seeds"
                                        + _failed_note(by),
            "tolerance": "mean gain > 0 with a 95% interval excluding 0", "verdict": _verdict(m > 0 and lo > 0)}


def _defense(d: dict) -> dict:
    rows = {r["config"]: r for r in d["rows"]}
    r = rows.get(DEFENSE_CONFIG)
    claim = ("the metric-noise defense cuts extraction by up to 9.8 accuracy / 4.8 fidelity points with benign "
             "goodput above 80% (PSML), against the strongest attacker psml fields")
    if r is None or r["accuracy"] is None:
        return {"claim": claim, "measured": "no figure", "tolerance": "", "verdict": "UNDETERMINED"}
    ok = (r["goodput"] >= PAPER_DEFENSE["min_goodput"] and r["d_accuracy"] <= PAPER_DEFENSE["d_accuracy"]
          and r["d_fidelity"] <= PAPER_DEFENSE["d_fidelity"])
    return {"claim": claim,
            "measured": f"{r['d_accuracy'] * 100:+.1f} accuracy / {r['d_fidelity'] * 100:+.1f} fidelity points at "
                        f"goodput {r['goodput']:.3f} (strongest attacker: {r['strongest_attacker']})",
            "tolerance": "reduction at least the paper's in both, goodput >= 0.80", "verdict": _verdict(ok)}


# ---- the report ----------------------------------------------------------------------------------------------
def _md_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, (list, tuple)):
            return ", ".join(cell(x) for x in v) or "-"
        return str(v).replace("|", "/")

    out = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(out)


def render(steps: dict[str, StepRun], lines: list[dict], meta: dict) -> str:
    zoo, fp = steps["zoo"].result, steps["fingerprint"].result
    md = [f"# psml report: zoo `{meta['zoo']}`", "",
          f"Created {meta['created_utc']} UTC by `{meta['command']}` in {meta['wall_s']:.0f} s "
          f"({', '.join(n + (' cached' if r.cached else f' {r.seconds:.0f} s') for n, r in steps.items())}). "
          f"Seeds {list(meta['settings']['seeds'])}. Every figure below is in `report.json`.", "",
          "## Claims", "", _md_table(lines, [("claim", "claim"), ("measured", "measured"), ("tolerance", "tolerance"),
                                              ("verdict", "verdict")]), "",
          "## The zoo", "", f"Data set {zoo['dataset']}; selection figure: {zoo['selection']}; front: "
          f"{', '.join(zoo['front'])}.", "",
          _md_table(zoo["rows"], [("name", "model"), ("params", "params"), ("accuracy", "accuracy")]
                    + ([("untrained", "untrained probe")] if "encoder_extraction" in steps else []) + [
                                  ("sel", "selection ms"), ("ci", "95% CI"), ("spread", "run spread ms"),
                                  ("pareto", "front")]), ""]
    v = zoo["validation"]
    if v.get("models"):
        md += ["Re-measured on this host (`psml zoo validate`):", "",
               _md_table(v["models"], [("model", "model"), ("manifest_ms", "manifest ms"), ("observed_ms", "observed ms"),
                                       ("drift", "drift"), ("verdict", "verdict")]), ""]
    if "accuracy_latency.png" in steps["zoo"].files:
        md += ["![accuracy vs latency](accuracy_latency.png)", ""]
    md += ["## Fingerprinting", "",
           _md_table([{"rank": r["rank"], "target": r["target"], "sq": r["staircase"]["queries"],
                       "sc": r["staircase"]["consistency"], "gq": r["grid_scan"]["queries"],
                       "gc": r["grid_scan"]["consistency"]} for r in fp["ranks"]],
                     [("rank", "rank"), ("target", "target (harness view)"), ("sq", "staircase queries"),
                      ("sc", "staircase consistency"), ("gq", "grid queries"), ("gc", "grid consistency")]),
           "", "![fingerprinting queries](fingerprint_queries.png)", ""]
    if "encoder_extraction" in steps:
        from .report_encoder import sections

        md += sections(steps, _md_table)
    else:
        md += _classifier_sections(steps)
    md += ["## Environment", "", f"- hardware: {json.dumps(meta['hardware'])}",
           f"- software: {json.dumps(meta['software'])}", f"- code version: {meta['code_version']}",
           f"- settings: {json.dumps(meta['settings'])}", ""]
    return "\n".join(md)


def _classifier_sections(steps: dict[str, StepRun]) -> list[str]:
    ex = steps["extraction"].result
    md = ["## Extraction", "", f"Victim {ex['victim']}; surrogate {ex['knockoff']['surrogate']}, "
           f"{ex['knockoff']['epochs']} epochs; budgets in samples: "
           f"{', '.join(f'{k} {v}' for k, v in ex['budget_samples'].items())}.", "",
           _md_table([r | {"outputs": "labels" if r["labels_only"] else "probabilities"} for r in ex["summary"]],
                     [("budget", "budget"), ("outputs", "outputs"), ("setting", "setting"), ("seeds", "seeds"),
                      ("accuracy", "accuracy"), ("accuracy_std", "sd"), ("accuracy_ci95", "95% CI"),
                      ("fidelity", "fidelity"), ("fidelity_std", "sd"), ("fidelity_ci95", "95% CI"),
                      ("failed_seeds", "failed seeds"), ("retried_seeds", "retried seeds")]),
           "", "![extraction](extraction.png)", ""]
    if "defense" in steps:
        d = steps["defense"].result
        md += ["## Defense", "", f"Budget {d['budget']}; victim {d['victim']}; each row's attacker is the strongest "
               "of those psml fields against it (benchmarks/defense_tradeoff.py).", "",
               _md_table(d["rows"], [("config", "defense"), ("goodput", "benign goodput"), ("benign_p50_ms", "p50 ms"),
                                     ("benign_p99_ms", "p99 ms"), ("benign_fp_rate", "benign keys flagged"),
                                     ("strongest_attacker", "strongest attacker"), ("accuracy", "accuracy"),
                                     ("accuracy_ci95", "95% CI"), ("fidelity", "fidelity"), ("d_accuracy", "d acc"),
                                     ("d_fidelity", "d fid"), ("timing_1", "timing id. m=1")]),
               "", "![defense trade-off](defense_tradeoff.png)", ""]
    return md


def run_report(zoo_dir: Path, out_dir: Path, s: ReportSettings, fresh: bool = False, command: str = "psml report",
               defense: bool = True, log=print) -> Path:
    started = time.time()
    manifest, data = check_inputs(zoo_dir, out_dir, s)
    code = code_version()
    cache = out_dir / ".cache"
    plan = [("zoo", zoo_step(zoo_dir, s, log)), ("fingerprint", fingerprint_step(zoo_dir, manifest, data, s, log))]
    if manifest.zoo.kind == "encoder":
        from . import report_encoder

        plan.append(("encoder_extraction", report_encoder.extraction_step(zoo_dir, manifest, data, s, log)))
        if defense:
            plan.append(("encoder_defense", report_encoder.defense_step(zoo_dir, s, log)))
    else:
        plan.append(("extraction", extraction_step(zoo_dir, manifest, data, s, log)))
        if defense:
            plan.append(("defense", defense_step(zoo_dir, s, log)))
    steps = {}
    for i, (name, func) in enumerate(plan, 1):
        log(f"[{i}/{len(plan)}] {name}")
        steps[name] = run_step(name, func, cache, step_key(name, zoo_dir, s, code), fresh, log)
    lines = claims(steps)
    meta = {"zoo": str(zoo_dir), "command": command, "created_unix": started,
            "created_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)), "wall_s": time.time() - started,
            "settings": asdict(s), "code_version": code, "hardware": hardware(), "software": software_versions(),
            "step_seconds": {n: r.seconds for n, r in steps.items()}, "cached": [n for n, r in steps.items() if r.cached]}
    # Stage the whole report, then move it in: report.md last, so a report.md on disk is always a finished one.
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    try:
        for r in steps.values():
            for f in r.files:
                shutil.copy2(r.folder / f, stage / f)
        write_json_atomic(stage / "report.json", meta | {"claims": lines, "complete": True,
                                                         "steps": {n: r.result for n, r in steps.items()}})
        write_text_atomic(stage / "report.md", render(steps, lines, meta))
        for p in sorted(stage.iterdir(), key=lambda p: p.name == "report.md"):
            os.replace(p, out_dir / p.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for line in lines:
        log(f"{line['verdict']:<12} {line['claim']}: {line['measured']}")
    log(f"report: {out_dir / 'report.md'} ({time.time() - started:.0f} s)")
    return out_dir / "report.md"


def settings_from_args(a) -> ReportSettings:
    s = QUICK if a.quick else ReportSettings()
    over = {k: tuple(v) if isinstance(v, list) else v for k, v in
            (("seeds", a.seeds), ("budgets", a.budgets), ("labels_only_budgets", a.labels_only_budgets),
             ("surrogate_epochs", a.epochs), ("defense_budget", a.defense_budget),
             ("encoder_budgets", a.budgets), ("encoder_epochs", a.epochs)) if v is not None}
    return replace(s, **over)
