"""Encoder defenses measured against benign clients and against the extraction they are meant to stop.

Per configuration (a router of its own in front of one Triton; the same code for every configuration, ``none``
included) and per seed, three fresh API keys, one after the other:
- ``narrow`` benign client: a downstream task of ``narrow_classes`` classes (seeded), the client's own labelled
  samples sent through /v1/embed asking for the most accurate encoder's published accuracy
  (``benign_train_samples`` from victim_train, ``benign_test_samples`` from the test split), a
  linear probe fit on the answers it got and scored on the answers it got: its downstream accuracy. B4B's premise
  (Dubinski et al. 2023): a real task occupies a small part of the representation space;
- ``broad`` benign client: the same with all classes (a client whose task is as wide as the data);
- attacker: direct extraction (attacks/encoder_extraction.py) of the most accurate encoder through the
  specification the staircase finds on the undefended router (the defenses here do not change selection), scored
  by the stolen encoder's downstream probe accuracy, agreement with the victim's probe and cosine similarity.
Each figure's cost or protection is the paired per-seed difference from ``none``, with a 95% interval over seeds.
Benign end-to-end times are exact per-request client times. B4B's coverage and noise at each key's last request
come from the router's audit log. Writes JSON and a PNG (stolen accuracy against benign accuracy).

    from benchmarks.encoder_defenses import QUICK, run
    result = run(replace(QUICK, zoo_dir=Path("model_repository/encoder")))

    python -m benchmarks.encoder_defenses --zoo Z [--seeds 0 1 2] [--budget 1000] [--loss mse] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from common.errors import ConfigError
from common.results import write_result
from common.stats import latency_summary, mean_ci95, seed_summary
from common.tables import format_table
from stack.closed_loop import run_interleaved

CONFIGS = {
    "none": [],
    "embedding_noise 0.1": [{"name": "embedding_noise", "sigma": 0.1}],
    "embedding_noise 0.5": [{"name": "embedding_noise", "sigma": 0.5}],
    "embedding_noise 1.0": [{"name": "embedding_noise", "sigma": 1.0}],
    # B4B's defaults (4,096 buckets): a 1,000-query attacker covers under a tenth of them, so almost no noise
    "b4b default": [{"name": "b4b"}],
    # sized for this zoo's query counts: 256 buckets, a gentler curve, up to 4x a coordinate's size at full cover
    "b4b 8 bits": [{"name": "b4b", "hash_bits": 8, "beta": 4.0, "max_sigma": 4.0}],
}
QUICK_CONFIGS = ("none", "embedding_noise 0.5", "b4b 8 bits")
ROLES = ("narrow", "broad", "attacker")  # one fresh API key each per seed, served in this order


@dataclass(frozen=True)
class EncoderDefenseSettings:
    """One run. Every row is compared with the undefended router of the same run, so "none" is always measured
    (put first when ``configs`` leaves it out)."""

    zoo_dir: Path | None = None  # an encoder zoo (psml zoo build --kind encoder); None: not given, run refuses
    configs: tuple[str, ...] = tuple(CONFIGS)  # names in CONFIGS
    budget_samples: int = 1000  # the attacker's samples
    loss: str = "mse"  # the attacker's loss: mse, infonce or softnn
    surrogate: str = "cnn_large"
    epochs: int = 60  # the stolen encoder's training epochs
    narrow_classes: int = 3
    benign_train_samples: int = 300  # per benign client for its probe's training ...
    benign_test_samples: int = 300  # ... and for scoring it
    batch_size: int = 25  # samples per request, benign and attacker alike
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self):
        unknown = [c for c in self.configs if c not in CONFIGS]
        if unknown:
            raise ConfigError(f"unknown configuration(s) {unknown}; choose from {', '.join(CONFIGS)}")
        if not self.seeds:
            raise ConfigError("--seeds: give at least one seed")
        if min(self.budget_samples, self.benign_train_samples, self.benign_test_samples, self.batch_size) < 1:
            raise ConfigError("the budget, the benign clients' samples and the batch size must each be at least 1")

    def configs_run(self) -> list[str]:
        """The configurations measured, "none" first when it was not asked for."""
        return list(self.configs) if "none" in self.configs else ["none", *self.configs]

    def as_dict(self) -> dict:
        """The settings under the names the result file has always used."""
        return {"budget": self.budget_samples, "loss": self.loss, "surrogate": self.surrogate, "epochs": self.epochs,
                "narrow_classes": self.narrow_classes, "benign_train": self.benign_train_samples,
                "benign_test": self.benign_test_samples, "batch_size": self.batch_size, "seeds": self.seeds,
                "configs": self.configs_run()}


QUICK = EncoderDefenseSettings(configs=QUICK_CONFIGS, budget_samples=200, surrogate="cnn_small", epochs=10,
                               benign_train_samples=100, benign_test_samples=100, seeds=(0,))


def benign_samples(data, classes: np.ndarray, n_train: int, n_test: int, seed: int):
    """A benign client's own labelled samples of ``classes``: training from victim_train, test from test."""
    rng = np.random.default_rng(seed)
    out = []
    for split, n in (("victim_train", n_train), ("test", n_test)):
        idx = np.flatnonzero(np.isin(data.y[split], classes))
        if len(idx) < n:
            raise ConfigError(f"{split} holds {len(idx)} samples of classes {classes.tolist()}, fewer than {n}")
        pick = rng.choice(idx, n, replace=False)
        out += [data.x[split][pick], data.y[split][pick]]
    return out


def embed_through(client, x: np.ndarray, batch_size: int, times_ms: list[float], requirements: dict) -> np.ndarray:
    """Every sample's answer, one request per batch, in order (stack/closed_loop.py's run_interleaved, one
    client); exact client times appended to ``times_ms``; a failed request ends the measurement."""
    batches = [x[start: start + batch_size] for start in range(0, len(x), batch_size)]
    answers = []

    def on_request(i, k, request, ms, answer, error) -> None:
        if error is not None:
            raise error
        answers.append(answer)
        times_ms.append(ms)

    run_interleaved([client], len(batches), lambda _, k: (batches[k], requirements), on_request)
    return np.concatenate(answers)


def benign_accuracy(client, data, classes, s: EncoderDefenseSettings, seed: int, times_ms: list[float],
                    requirements: dict) -> float:
    from zoo.ssl import fit_probe

    x_tr, y_tr, x_te, y_te = benign_samples(data, classes, s.benign_train_samples, s.benign_test_samples, seed)
    probe = fit_probe(embed_through(client, x_tr, s.batch_size, times_ms, requirements), y_tr, seed)
    return probe.accuracy(embed_through(client, x_te, s.batch_size, times_ms, requirements), y_te)


def run_config(name: str, defenses: list[dict], zoo_dir: Path, data, triton, run_dir: Path, spec: dict, reference,
               baselines: dict, s: EncoderDefenseSettings, benign_requirements: dict, log=print) -> dict:
    from attacks.encoder_extraction import EncoderExtractionSettings, extract_encoder
    from attacks.query_pools import query_pool
    from router.audit_log import read_audit_log
    from stack.clients import RouterClient
    from stack.loopback import router_for

    keys = {f"{role}-{seed}-key": f"{role}-{seed}" for seed in s.seeds for role in ROLES}
    tag = name.replace(" ", "_").replace(".", "")
    per_seed, times = [], {"narrow": [], "broad": []}
    with router_for(zoo_dir, run_dir, triton, tag, defenses=defenses, api_keys=keys) as router:
        for seed in s.seeds:
            def client(role):
                return RouterClient(router.url, f"{role}-{seed}-key", endpoint="/v1/embed")

            row = {"seed": seed}
            narrow = np.random.default_rng(seed).choice(data.n_classes, s.narrow_classes, replace=False)
            for role, classes in (("narrow", narrow), ("broad", np.arange(data.n_classes))):
                c = client(role)
                try:
                    row[role] = benign_accuracy(c, data, classes, s, seed, times[role], benign_requirements)
                finally:
                    c.close()
            ext = EncoderExtractionSettings(budget=s.budget_samples, loss=s.loss, surrogate=s.surrogate,
                                            epochs=s.epochs, batch_size=s.batch_size, seed=seed)
            c = client("attacker")
            try:
                r = extract_encoder(c, query_pool("attacker_pool", data, seed), data, reference, ext, spec,
                                    baselines[seed])
            finally:
                c.close()
            row |= {"attacker_accuracy": r["accuracy"], "attacker_agreement": r["agreement"],
                    "attacker_cosine": r["cosine"], "untrained_accuracy": r["untrained_accuracy"]}
            per_seed.append(row)
            log(f"  {name:<20} seed {seed}: benign narrow {row['narrow']:.3f} broad {row['broad']:.3f}  "
                f"stolen {r['accuracy']:.3f} (untrained {r['untrained_accuracy']:.3f}) cosine {r['cosine']:.3f}")
        last, served = {}, {}  # each key's B4B state at its last request; which encoder served each role
        for rec in read_audit_log(run_dir / f"{tag}.audit.jsonl"):
            if "b4b_coverage" in rec:
                last[rec["client"]] = (rec["b4b_coverage"], rec["b4b_sigma"])
            if rec.get("outcome") == "served" and rec.get("batch_size") == s.batch_size:  # not the staircase's probes
                role = rec["client"].split("-")[0]
                served.setdefault(role, {}).setdefault(rec["model"], 0)
                served[role][rec["model"]] += 1
    def final(i: int) -> dict:  # mean over seeds of each role's last coverage (i=0) or sigma (i=1); {}: no B4B
        return {r: seed_summary([last[f"{r}-{seed}"][i] for seed in s.seeds if f"{r}-{seed}" in last])[0]
                for r in ROLES} if last else {}

    return {"config": name, "defenses": defenses, "per_seed": per_seed,
            "benign_latency_ms": latency_summary(times["narrow"] + times["broad"]),
            "b4b_final_coverage": final(0), "b4b_final_sigma": final(1), "served_by": served}


METRICS = ("narrow", "broad", "attacker_accuracy", "attacker_agreement", "attacker_cosine")


def rows_from(results: list[dict]) -> list[dict]:
    """Per configuration: each metric's mean and 95% interval over seeds, and its paired difference from none."""
    none = next((r for r in results if r["config"] == "none"), None)
    rows = []
    for res in results:
        row = {"config": res["config"], "benign_p50_ms": res["benign_latency_ms"]["p50_ms"],
               "benign_p99_ms": res["benign_latency_ms"]["p99_ms"],
               "attacker_b4b_sigma": res["b4b_final_sigma"].get("attacker"),
               "narrow_b4b_sigma": res["b4b_final_sigma"].get("narrow")}
        for m in METRICS:
            mean, _, ci = seed_summary([p[m] for p in res["per_seed"]])
            row |= {m: mean, f"{m}_ci95": list(ci) if ci else None}
            if none is not None:
                base = {p["seed"]: p[m] for p in none["per_seed"]}
                diffs = [p[m] - base[p["seed"]] for p in res["per_seed"] if p["seed"] in base]
                d, lo, hi = mean_ci95(diffs) if diffs else (None, None, None)
                row |= {f"d_{m}": d, f"d_{m}_ci95": [lo, hi] if len(diffs) > 1 else None}
        row["untrained_accuracy"] = seed_summary([p["untrained_accuracy"] for p in res["per_seed"]])[0]
        rows.append(row)
    return rows


COLUMNS = [("config", "defense"), ("narrow", "benign narrow acc"), ("d_narrow", "d narrow"),
           ("broad", "benign broad acc"), ("d_broad", "d broad"), ("attacker_accuracy", "stolen acc"),
           ("d_attacker_accuracy", "d stolen"), ("attacker_cosine", "stolen cosine"),
           ("untrained_accuracy", "untrained acc"), ("narrow_b4b_sigma", "b4b sigma narrow"),
           ("attacker_b4b_sigma", "b4b sigma attacker"), ("benign_p50_ms", "benign p50 ms"),
           ("benign_p99_ms", "benign p99 ms")]


def plot(rows: list[dict], path: Path, victim_accuracy: float) -> None:
    from zoo.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for i, r in enumerate(rows):
        color = f"C{i}"
        for key, marker, label in (("narrow", "o", r["config"]), ("broad", "s", None)):
            ci, yci = r.get(f"{key}_ci95"), r.get("attacker_accuracy_ci95")
            xerr = [[r[key] - ci[0]], [ci[1] - r[key]]] if ci else None
            yerr = [[r["attacker_accuracy"] - yci[0]], [yci[1] - r["attacker_accuracy"]]] if yci else None
            ax.errorbar(r[key], r["attacker_accuracy"], xerr=xerr, yerr=yerr, fmt=marker, color=color, capsize=3,
                        label=label, mfc=color if key == "narrow" else "none")
    untrained = rows[0].get("untrained_accuracy")
    if untrained is not None:
        ax.axhline(untrained, ls=":", color="grey", label="untrained surrogate")
    ax.axhline(victim_accuracy, ls="--", color="black", label="victim (clean probe)")
    ax.set_xlabel("benign client's downstream accuracy (filled: narrow task, hollow: all classes)")
    ax.set_ylabel("stolen encoder's downstream accuracy")
    ax.set_title("encoder defenses: benign utility against protection (95% CI over seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(s: EncoderDefenseSettings, log=print) -> dict:
    """Every configuration of ``s`` against the same staircase specification; the result file's fields, with
    ``created_unix`` (when the run started) among them."""
    from attacks.encoder_extraction import EncoderExtractionSettings, VictimReference, untrained_baseline
    from attacks.experiment import front_by_accuracy, run_fingerprint
    from stack.loopback import router_for, triton_for
    from zoo.data import Dataset
    from zoo.manifest import load_manifest

    if s.zoo_dir is None:
        raise ConfigError("give an encoder zoo (zoo_dir, or --zoo)")
    zoo_dir, configs = Path(s.zoo_dir), s.configs_run()
    manifest = load_manifest(zoo_dir)
    if manifest.zoo.kind != "encoder":
        raise ConfigError(f"zoo {zoo_dir} holds {manifest.zoo.kind}s; this benchmark needs an encoder zoo")
    EncoderExtractionSettings(loss=s.loss, surrogate=s.surrogate)  # checked before anything starts
    data = Dataset.load(zoo_dir / manifest.zoo.dataset.data_file)
    if s.budget_samples > len(data.x["attacker_pool"]):
        raise ConfigError(f"budget {s.budget_samples} exceeds the attacker pool of {len(data.x['attacker_pool'])}")
    victim = front_by_accuracy(manifest)[0]
    reference = VictimReference.of_model(zoo_dir, victim, data)
    baselines = {seed: untrained_baseline(s.surrogate, seed, data, reference) for seed in s.seeds}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="psml-encdef-") as tmp, triton_for(zoo_dir, tmp) as triton:
        with router_for(zoo_dir, Path(tmp), triton, "fingerprint", api_keys={"fp-key": "fp"}) as router:
            fp = run_fingerprint("staircase", router.url, "fp-key", data.x["test"][:1], 1, endpoint="/v1/embed")
        spec = fp.spec
        if spec is None:
            raise ConfigError("the staircase found no specification for the most accurate encoder")
        log(f"victim {victim.name} (clean probe {reference.accuracy:.3f}); staircase specification {spec} "
            f"in {fp.queries} queries")
        # benign clients want the best encoder too: they ask for its published accuracy (with no requirement the
        # router would serve them the fastest encoder, and the comparison would be between two models)
        benign_requirements = {"min_accuracy": victim.accuracy}
        results = [run_config(c, CONFIGS[c], zoo_dir, data, triton, Path(tmp), dict(spec), reference, baselines, s,
                              benign_requirements, log) for c in configs]
    rows = rows_from(results)
    return {"created_unix": started, "victim": victim.name, "victim_probe_accuracy": reference.accuracy,
            "spec": dict(spec), "benign_requirements": benign_requirements, "settings": s.as_dict(),
            "seeds": list(s.seeds), "rows": rows, "details": results,
            "victim_training_set": int(len(data.y["victim_train"]))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", type=Path, required=True, help="an encoder zoo (psml zoo build --kind encoder)")
    p.add_argument("--configs", nargs="+", default=None, help=f"from: {', '.join(CONFIGS)}")
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--budget", type=int, default=None, help="attacker's samples")
    p.add_argument("--loss", default=None, help="the attacker's loss: mse, infonce or softnn")
    p.add_argument("--epochs", type=int, default=None, help="stolen encoder's training epochs")
    p.add_argument("--quick", action="store_true", help="3 configurations, 1 seed, small budget (a smoke run)")
    p.add_argument("--out", type=Path, default=Path("results/encoder_defenses.json"))
    p.add_argument("--png", type=Path, default=None, help="plot (default: next to --out)")
    a = p.parse_args(argv)
    asked = (("configs", a.configs), ("seeds", a.seeds), ("budget_samples", a.budget), ("loss", a.loss),
             ("epochs", a.epochs))
    try:
        s = replace(QUICK if a.quick else EncoderDefenseSettings(), zoo_dir=a.zoo,
                    **{k: (tuple(v) if isinstance(v, list) else v) for k, v in asked if v is not None})
        out = run(s)
    except ConfigError as e:
        print(f"error: {e}")
        return 2
    write_result(a.out, "encoder_defenses", out, created_unix=out["created_unix"])
    plot(out["rows"], a.png or a.out.with_suffix(".png"), out["victim_probe_accuracy"])
    print(f"\nencoder defenses: victim {out['victim']} (clean probe {out['victim_probe_accuracy']:.3f}), "
          f"attacker {s.loss}, budget {s.budget_samples} ({s.budget_samples / out['victim_training_set']:.2f} of "
          f"the victim's training set), seeds {list(s.seeds)}\n")
    print(format_table(out["rows"], COLUMNS))
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
