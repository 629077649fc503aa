"""The zoo manifest (``zoo.json``): one file per zoo that the router selects from.

Schema (version 1), every latency in milliseconds, accuracy as a fraction in [0, 1]:

- ``schema_version``, ``zoo`` (name, profile, seed, dataset, created_utc, build_seconds);
- ``models[]``: ``name``, ``architecture``, ``parameters``, ``onnx_file`` (relative to the manifest),
  ``onnx_sha256``, ``input``/``output`` (name, dtype, shape with -1 for the batch axis), ``accuracy`` (test set),
  ``parity`` (ONNX vs PyTorch on the whole test set), ``latency`` (client p50/p95/p99/mean per batch size, and
  Triton's own queue/compute split), ``selection_latency_ms`` (the figure the router compares with a request's
  ``max_latency_ms``: client p99 at batch 1), ``pareto`` (on the accuracy/latency front);
- ``profile``: the hardware, software versions and settings the latencies were measured with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from psml.atomic import write_json_atomic
from psml.errors import ManifestError

SCHEMA_VERSION = 1
MANIFEST_NAME = "zoo.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str
    dtype: Literal["FP32"]
    shape: list[int]


class ClientLatency(_Strict):
    batch_size: int = Field(ge=1)
    requests: int = Field(ge=1)
    p50_ms: float = Field(ge=0)
    p95_ms: float = Field(ge=0)
    p99_ms: float = Field(ge=0)
    mean_ms: float = Field(ge=0)
    throughput_samples_per_s: float = Field(ge=0)


class TritonLatency(_Strict):
    """Per request, averaged from Triton's /v2/models/<m>/stats over the profiling run."""

    batch_size: int = Field(ge=1)
    queue_us: float = Field(ge=0)
    compute_input_us: float = Field(ge=0)
    compute_infer_us: float = Field(ge=0)
    compute_output_us: float = Field(ge=0)


class ModelLatency(_Strict):
    client: list[ClientLatency]
    triton: list[TritonLatency]


class Parity(_Strict):
    max_abs_diff: float
    top1_mismatches: int
    n: int


class ModelEntry(_Strict):
    name: str
    architecture: str
    parameters: int = Field(ge=1)
    onnx_file: str
    onnx_sha256: str
    input: TensorSpec
    output: TensorSpec
    accuracy: float = Field(ge=0, le=1)
    parity: Parity
    train_seconds: float = Field(ge=0)
    latency: ModelLatency
    selection_latency_ms: float = Field(gt=0)
    pareto: bool


class DatasetInfo(_Strict):
    name: str
    sample_shape: list[int]
    n_classes: int
    split_sizes: dict[str, int]
    data_file: str
    seed: int


class ZooInfo(_Strict):
    name: str
    seed: int
    dataset: DatasetInfo
    created_utc: str
    build_seconds: float


class ProfileInfo(_Strict):
    hardware: dict
    software: dict[str, str]
    settings: dict


class Manifest(_Strict):
    schema_version: Literal[1]
    zoo: ZooInfo
    models: list[ModelEntry] = Field(min_length=1)
    profile: ProfileInfo

    def model(self, name: str) -> ModelEntry:
        for m in self.models:
            if m.name == name:
                return m
        raise ManifestError(f"model {name!r} is not in zoo {self.zoo.name!r}")

    def pareto_models(self) -> list[ModelEntry]:
        return [m for m in self.models if m.pareto]


def load_manifest(path: Path) -> Manifest:
    """Read and validate a manifest; a directory means its zoo.json."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        raw = path.read_text()
    except OSError as e:
        raise ManifestError(f"zoo manifest {path} cannot be read ({e.strerror}); build the zoo first (psml zoo build)") from e
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ManifestError(f"zoo manifest {path} is invalid at {where}: {first['msg']}") from e


def save_manifest(m: Manifest, path: Path) -> None:
    write_json_atomic(path, m.model_dump_json(indent=2))
