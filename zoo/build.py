"""``psml zoo build``: train every zoo model, export it to ONNX, check parity, render the Triton repository in
both variants, profile every model through a real Triton, and write the manifest.

Everything is written into a hidden ``.<zoo>.partial-*`` folder first and renamed into place only when the
whole build succeeded, so a failed build never leaves a zoo that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from psml.errors import ConfigError
from psml.versions import hardware, software_versions

from .architectures import build_model, n_parameters
from .data import load_dataset
from .export import INPUT_NAME, OUTPUT_NAME, check_parity, export_onnx
from .manifest import MANIFEST_NAME, Manifest, save_manifest
from .pareto import pareto_front
from .profile import ProfileSettings, profile_models
from .repository import RepositorySettings, render
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
    profiling: ProfileSettings = field(default_factory=ProfileSettings)
    repository: RepositorySettings = field(default_factory=RepositorySettings)
    torch_threads: int = 2


PROFILES = {
    # The demo's zoo: seven architectures on 12,000 MNIST-1D samples; about 2-3 minutes on 2 cores.
    "default": ZooProfile(
        name="default", dataset="mnist1d", n_samples=12000,
        epochs={"logreg": 30, "mlp_small": 40, "mlp_large": 30, "mlp_wide": 8, "cnn_small": 30,
                "cnn_large": 20, "gru": 30},
    ),
    # CI's zoo: the same architectures, fewer samples and epochs, a short profile (well under a minute).
    "test": ZooProfile(
        name="test", dataset="mnist1d", n_samples=4000,
        epochs={"logreg": 10, "mlp_small": 10, "mlp_large": 6, "mlp_wide": 1, "cnn_small": 8, "cnn_large": 3,
                "gru": 3},
        profiling=ProfileSettings(requests_per_batch_size=40, warmup_requests=5, chunk_requests=10),
    ),
}


def get_profile(name: str) -> ZooProfile:
    if name not in PROFILES:
        raise ConfigError(f"unknown zoo profile {name!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[name]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_zoo(p: ZooProfile, out_root: Path, data_root: Path | None = None, log=print) -> Path:
    """Build zoo ``p`` into ``out_root/<p.name>`` atomically; returns that folder."""
    from psml.triton_server import TritonServer
    import tritonclient.http as httpclient

    started = time.perf_counter()
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    final = out_root / p.name
    work = out_root / f".{p.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "onnx").mkdir(parents=True)
    torch.set_num_threads(p.torch_threads)
    try:
        data = load_dataset(p.dataset, p.seed, p.n_samples, data_root)
        data.save(work / DATA_FILE)
        log(f"data: {data.name}, splits {data.sizes()}, seed {p.seed}")
        entries, onnx_files = {}, {}
        for i, (arch, epochs) in enumerate(p.epochs.items()):
            model = build_model(arch, data.sample_shape, data.n_classes, seed=p.seed + i)
            seconds = train(model, data.x["victim_train"], data.y["victim_train"],
                            TrainSettings(epochs=epochs, seed=p.seed + i), desc=f"train {arch}")
            onnx_path = work / "onnx" / f"{arch}.onnx"
            export_onnx(model, data.input_dim, onnx_path)
            probs = predict_proba(model, data.x["test"])
            parity = check_parity(probs, onnx_path, data.x["test"])
            accuracy = float(np.mean(probs.argmax(1) == data.y["test"]))
            log(f"  {arch:<10} {n_parameters(model):>9,d} params  acc {accuracy:.3f}  {seconds:5.1f} s  "
                f"ONNX max|dp| {parity.max_abs_diff:.1e}")
            onnx_files[arch] = onnx_path
            entries[arch] = dict(
                name=arch, architecture=arch, parameters=n_parameters(model),
                onnx_file=f"onnx/{arch}.onnx", onnx_sha256=sha256(onnx_path),
                input=dict(name=INPUT_NAME, dtype="FP32", shape=[-1, data.input_dim]),
                output=dict(name=OUTPUT_NAME, dtype="FP32", shape=[-1, data.n_classes]),
                accuracy=accuracy, parity=parity.as_dict(), train_seconds=seconds,
            )
        render(onnx_files, data.input_dim, data.n_classes, work, p.repository)
        log("profiling every model through Triton ...")
        with TritonServer(work / "embedded") as server:
            client = httpclient.InferenceServerClient(server.endpoints.http_url)
            try:
                latencies = profile_models(client, list(entries), data.x["test"], p.profiling)
            finally:
                client.close()
        for name, latency in latencies.items():
            entries[name]["latency"] = latency
            entries[name]["selection_latency_ms"] = latency["client"][0]["p99_ms"]
        front = pareto_front({n: (e["accuracy"], e["selection_latency_ms"]) for n, e in entries.items()})
        for n, e in entries.items():
            e["pareto"] = n in front
        manifest = Manifest.model_validate(dict(
            schema_version=1,
            zoo=dict(name=p.name, seed=p.seed, created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     build_seconds=time.perf_counter() - started,
                     dataset=dict(name=data.name, sample_shape=list(data.sample_shape), n_classes=data.n_classes,
                                  split_sizes=data.sizes(), data_file=DATA_FILE, seed=data.seed)),
            models=list(entries.values()),
            profile=dict(hardware=hardware(), software=software_versions(),
                         settings=dict(profiling=p.profiling.as_dict(), repository=asdict(p.repository),
                                       epochs=p.epochs, n_samples=p.n_samples, torch_threads=p.torch_threads,
                                       selection_latency="client p99 at batch 1, through Triton")),
        ))
        save_manifest(manifest, work / MANIFEST_NAME)
        _replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


def _replace(new: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)
