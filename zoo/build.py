"""``psml zoo build``: train every zoo model, export it to ONNX, check parity, render the Triton repository in
both variants, profile every model through a real Triton, and write the manifest.

Everything is written into a hidden ``.<zoo>.partial-*`` folder first and renamed into place only when the
whole build succeeded, so a failed build never leaves a zoo that looks complete.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from common.atomic import staged_folder
from common.errors import ConfigError
from common.versions import hardware, software_versions

from .architectures import build_model, n_parameters
from .data import load_dataset
from .export import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME, check_embedding_parity, check_parity, export_onnx
from .manifest import ENDPOINTS, MANIFEST_NAME, SCHEMA_VERSION, Manifest, save_manifest
from .pareto import FrontPoint, front_check, front_marks
from .profile import ProfileSettings, figure_from_cell
from .profiling import profile_zoo
from .repository import ModelIO, RepositorySettings, render
from .train import TrainSettings, predict_proba, train

DATA_FILE = "data.npz"


@dataclass(frozen=True)
class ZooProfile:
    """A named recipe for a zoo. ``epochs`` maps architecture -> training epochs (its order is the zoo's)."""

    name: str
    dataset: str
    n_samples: int
    epochs: dict[str, int]
    seed: int = 0
    learning_rates: dict[str, float] = field(default_factory=dict)  # per architecture; others TrainSettings' 3e-3
    profiling: ProfileSettings = field(default_factory=ProfileSettings)
    repository: RepositorySettings = field(default_factory=RepositorySettings)
    torch_threads: int = 2
    kind: str = "classifier"  # "encoder": SimCLR-trained encoders answering embeddings (zoo/ssl.py)
    embedding_dim: int = 64  # encoders only
    ssl_temperature: float = 0.2  # encoders only: NT-Xent's tau (0.5 gave probes barely above random init here)


PROFILES = {
    # The demo's zoo on 12,000 MNIST-1D samples, chosen by measurement on 2 cores (README, "The zoo"): four
    # front models from a tiny MLP to a VGG-style CNN, each well over 25% slower and several accuracy points
    # better than the one before.
    "default": ZooProfile(
        name="default", dataset="mnist1d", n_samples=12000,
        epochs={"mlp_small": 40, "mlp_medium": 8, "vgg_medium": 8, "vgg_xlarge": 6},
        # the 22M-parameter head does not converge in 6 epochs at 3e-3 (0.73 accuracy measured); 1e-3 does (0.94)
        learning_rates={"vgg_xlarge": 1e-3},
    ),
    # CI's zoo on fewer samples and epochs, a short profile: mlp_small and vgg_large on the front and cnn_wide,
    # slower and less accurate than mlp_small, off it (within noise of it on a loaded host) (about 40 s).
    "test": ZooProfile(
        name="test", dataset="mnist1d", n_samples=4000,
        epochs={"mlp_small": 30, "cnn_wide": 2, "vgg_large": 5},
        profiling=ProfileSettings(batch_sizes=(1, 8), concurrency=(1, 4), selection_rounds=3,
                                  selection_requests_per_round=100, cell_duration_s=0.1, cell_min_requests=10,
                                  warmup_requests=4, bootstrap_resamples=300),
    ),
}


# Encoder zoos (issue 12): the same data and profiling, self-supervised encoders of three sizes.
PROFILES["encoder"] = ZooProfile(name="encoder", dataset="mnist1d", n_samples=12000, kind="encoder",
                                 epochs={"mlp_large": 60, "cnn_small": 60, "cnn_large": 40})
PROFILES["encoder-test"] = replace(PROFILES["test"], name="encoder-test", kind="encoder",
                                   epochs={"mlp_small": 10, "cnn_small": 40})


def get_profile(name: str) -> ZooProfile:
    if name not in PROFILES:
        raise ConfigError(f"unknown zoo profile {name!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[name]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_zoo(p: ZooProfile, out_root: Path, data_root: Path | None = None, log=print) -> Path:
    """Build zoo ``p`` into ``out_root/<p.name>`` atomically; returns that folder."""
    started = time.perf_counter()
    final = Path(out_root) / p.name
    torch.set_num_threads(p.torch_threads)
    with staged_folder(final) as work:
        (work / "onnx").mkdir()
        data = load_dataset(p.dataset, p.seed, p.n_samples, data_root)
        data.save(work / DATA_FILE)
        log(f"data: {data.name}, splits {data.sizes()}, seed {p.seed}")
        entries, onnx_files = {}, {}
        encoder = p.kind == "encoder"
        out_name, n_out = (EMBEDDING_NAME, p.embedding_dim) if encoder else (OUTPUT_NAME, data.n_classes)
        for i, (arch, epochs) in enumerate(p.epochs.items()):
            onnx_path = work / "onnx" / f"{arch}.onnx"
            if encoder:
                model, seconds, accuracy, parity, untrained = _train_encoder(p, arch, epochs, p.seed + i, data,
                                                                             onnx_path)
                extra = {"untrained_accuracy": untrained}
                if accuracy <= untrained:
                    log(f"  FLAG {arch}: SimCLR's probe {accuracy:.3f} <= the untrained network's {untrained:.3f}: "
                        f"training taught nothing a random network lacks (more epochs? other augmentations?)")
            else:
                extra = {}
                model = build_model(arch, data.sample_shape, data.n_classes, seed=p.seed + i)
                seconds = train(model, data.x["victim_train"], data.y["victim_train"],
                                TrainSettings(epochs=epochs, seed=p.seed + i,
                                              learning_rate=p.learning_rates.get(arch, TrainSettings.learning_rate)),
                                desc=f"train {arch}")
                export_onnx(model, data.input_dim, onnx_path)
                probs = predict_proba(model, data.x["test"])
                parity = check_parity(probs, onnx_path, data.x["test"])
                accuracy = float(np.mean(probs.argmax(1) == data.y["test"]))
            baseline = f" (untrained {extra['untrained_accuracy']:.3f})" if encoder else ""
            log(f"  {arch:<10} {n_parameters(model):>9,d} params  {'probe acc' if encoder else 'acc'} {accuracy:.3f}"
                f"{baseline}  {seconds:5.1f} s  ONNX max|d| {parity.max_abs_diff:.1e}")
            onnx_files[arch] = onnx_path
            entries[arch] = dict(
                name=arch, architecture=arch, parameters=n_parameters(model),
                onnx_file=f"onnx/{arch}.onnx", onnx_sha256=sha256(onnx_path),
                input=dict(name=INPUT_NAME, dtype="FP32", shape=[-1, data.input_dim]),
                output=dict(name=out_name, dtype="FP32", shape=[-1, n_out]),
                accuracy=accuracy, parity=parity.as_dict(), train_seconds=seconds, **extra,
            )
        io = ModelIO((data.input_dim,), n_out, output_name=out_name)
        render({arch: (path, io) for arch, path in onnx_files.items()}, work, p.repository)
        header = dict(
            zoo=dict(name=p.name, kind=p.kind, seed=p.seed, created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     build_seconds=0.0,
                     dataset=dict(name=data.name, sample_shape=list(data.sample_shape), n_classes=data.n_classes,
                                  split_sizes=data.sizes(), data_file=DATA_FILE, seed=data.seed)),
            settings=dict(repository=asdict(p.repository), epochs=p.epochs, n_samples=p.n_samples,
                          torch_threads=p.torch_threads)
            | ({"embedding_dim": p.embedding_dim,
                 "ssl": {k: v for k, v in asdict(_ssl_settings(p, 1, 0)).items() if k not in ("epochs", "seed")}}
               if encoder else {}))

        def provisional(direct_results):  # the profiling router reads a manifest: write one from the direct path
            save_manifest(compose_manifest(header, entries, direct_results, _direct_only(p.profiling)),
                          work / MANIFEST_NAME)

        results = profile_zoo(work, list(entries), data.x["test"], p.profiling, log=log,
                              before_router=provisional if "router" in p.profiling.paths else None,
                              tensors={a: io for a in entries} if encoder else None,
                              endpoint=ENDPOINTS[p.kind])
        header["zoo"]["build_seconds"] = time.perf_counter() - started
        manifest = compose_manifest(header, entries, results, p.profiling)
        save_manifest(manifest, work / MANIFEST_NAME)
    return final


def _ssl_settings(p: ZooProfile, epochs: int, seed: int):
    from .ssl import SSLSettings

    return SSLSettings(epochs=max(1, epochs), temperature=p.ssl_temperature, seed=seed)


def _train_encoder(p: ZooProfile, arch: str, epochs: int, seed: int, data, onnx_path: Path):
    """SimCLR on victim_train without labels; accuracy = the linear probe's on the test split, and the same
    probe's on the untrained network (same seed, so the same initial weights)."""
    from .ssl import embed, fit_probe, train_simclr

    model = build_model(arch, data.sample_shape, p.embedding_dim, seed=seed)
    untrained = fit_probe(embed(model, data.x["victim_train"]), data.y["victim_train"], seed)
    untrained_accuracy = untrained.accuracy(embed(model, data.x["test"]), data.y["test"])
    seconds = train_simclr(model, data.x["victim_train"], data.sample_shape, p.embedding_dim,
                           _ssl_settings(p, epochs, seed))
    export_onnx(model, data.input_dim, onnx_path, encoder=True)
    probe = fit_probe(embed(model, data.x["victim_train"]), data.y["victim_train"], seed)
    test_emb = embed(model, data.x["test"])
    parity = check_embedding_parity(test_emb, onnx_path, data.x["test"], probe)
    return model, seconds, probe.accuracy(test_emb, data.y["test"]), parity, untrained_accuracy


def _direct_only(s: ProfileSettings) -> ProfileSettings:
    return replace(s, paths=("direct",), selection=replace(s.selection, path="direct"))


def compose_manifest(header: dict, entries: dict[str, dict], results: dict[str, dict], s: ProfileSettings) -> Manifest:
    """The manifest from model entries (accuracy, files, parity) and a profile: selection figures, the front
    built on them and their intervals, each front model's mark, and the front's separation check. ``psml zoo validate --update`` calls it with a new profile."""
    models = []
    for name, e in entries.items():
        lat = results[name]
        if "selection" not in lat:  # a provisional manifest: the figure's own path is not measured yet
            lat = lat | {"selection": figure_from_cell(lat, s.selection)}
        models.append(e | {"latency": lat, "selection_latency_ms": lat["selection"]["value_ms"]})
    marks = front_marks({m["name"]: FrontPoint(m["accuracy"], m["selection_latency_ms"],
                                               tuple(m["latency"]["selection"]["ci95_ms"])) for m in models})
    for m in models:  # the front is decided with the selection figures' intervals (zoo/pareto.py says why)
        m["pareto"], m["front_margin"] = m["name"] in marks, marks.get(m["name"])
    check = front_check({m["name"]: (m["accuracy"], m["selection_latency_ms"], m["latency"]["selection"]["spread_ms"])
                         for m in models if m["pareto"]})
    return Manifest.model_validate(dict(
        schema_version=SCHEMA_VERSION, zoo=header["zoo"], models=models,
        profile=dict(hardware=hardware(), software=software_versions(),
                     settings=header["settings"] | {"profiling": s.as_dict()},
                     selection=asdict(s.selection), front_check=check,
                     measured_utc=datetime.now(timezone.utc).isoformat(timespec="seconds")),
    ))
