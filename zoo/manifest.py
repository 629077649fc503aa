"""The zoo manifest (``zoo.json``): one file per zoo that the router selects from.

Schema (version 2), every latency in milliseconds, accuracy as a fraction in [0, 1]:

- ``schema_version``, ``zoo`` (name, profile, seed, dataset, created_utc, build_seconds);
- ``models[]``: ``name``, ``architecture``, ``parameters``, ``onnx_file`` (relative to the manifest),
  ``onnx_sha256``, ``input``/``output`` (name, dtype, shape with -1 for the batch axis), ``accuracy`` (test set),
  ``parity`` (ONNX vs PyTorch on the whole test set), ``latency.cells[]`` (one per path x batch size x
  concurrency: p50/p95/p99/mean with bootstrap 95% intervals, throughput), ``latency.selection`` (the selection
  figure, its interval, per-round values and run-to-run spread), ``latency.triton[]`` (Triton's queue/compute
  split), ``selection_latency_ms`` (the figure the router compares with a request's ``max_latency_ms``, chosen
  by ``profile.selection``), ``pareto`` (on the accuracy/latency front built on that figure and its 95%
  interval, zoo/pareto.py), ``front_margin`` (front models: ``margin``, or ``within_noise`` when a model at
  least as accurate has an overlapping interval; null off the front and in manifests written before it);
- ``models[].source`` (imported zoos only, ``psml zoo import``): the user's file and its sha256, whether a
  softmax was appended to logits, whether a fixed batch axis was made dynamic; ``parity`` there compares the
  served answers (through Triton) with onnxruntime on the user's file;
- ``zoo.origin``: ``built`` (trained by psml) or ``imported``; ``zoo.kind``: ``classifier`` (outputs are class
  probabilities, ``accuracy`` is top-1 on the test split) or ``encoder`` (outputs are embeddings [B, E],
  ``accuracy`` is the downstream linear-probe accuracy, zoo/ssl.py; ``parity.top1_mismatches`` counts probe labels);
- ``profile``: the hardware, software versions and settings the latencies were measured with, which figure
  selection uses, and the front's separation check.
Version 1 (one idle client p99 per batch size) is refused with a message that says to rebuild or re-profile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.atomic import write_json_atomic
from common.errors import ManifestError

SCHEMA_VERSION = 2
MANIFEST_NAME = "zoo.json"
# the router's path for each zoo kind: classifiers answer probabilities, encoders embeddings
ENDPOINTS = {"classifier": "/v1/infer", "encoder": "/v1/embed"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str
    dtype: Literal["FP32"]
    shape: list[int]


class LatencyCell(_Strict):
    """One measured cell: a closed loop of ``concurrency`` clients sending ``batch_size`` samples per request."""

    path: Literal["direct", "router"]
    batch_size: int = Field(ge=1)
    concurrency: int = Field(ge=1)
    requests: int = Field(ge=1)
    errors: int = Field(ge=0)
    duration_s: float = Field(ge=0)
    p50_ms: float = Field(ge=0)
    p95_ms: float = Field(ge=0)
    p99_ms: float = Field(ge=0)
    mean_ms: float = Field(ge=0)
    ci95: dict[str, list[float]]  # "p50_ms" -> [low, high], bootstrap over the cell's requests
    throughput_samples_per_s: float = Field(ge=0)


class SelectionLatency(_Strict):
    value_ms: float = Field(gt=0)
    ci95_ms: list[float]
    round_values_ms: list[float]
    round_spread_ms: float = Field(ge=0)  # standard deviation of the per-round figures
    spread_ms: float = Field(ge=0)  # run-to-run spread of the pooled figure: round_spread_ms / sqrt(rounds)


class SelectionSetting(_Strict):
    percentile: Literal[50, 95, 99]
    path: Literal["direct", "router"]
    batch_size: int = Field(ge=1)
    concurrency: int = Field(ge=1)


class TritonLatency(_Strict):
    """Per request, averaged from Triton's /v2/models/<m>/stats over the profiling run."""

    batch_size: int = Field(ge=1)
    queue_us: float = Field(ge=0)
    compute_input_us: float = Field(ge=0)
    compute_infer_us: float = Field(ge=0)
    compute_output_us: float = Field(ge=0)


class ModelLatency(_Strict):
    cells: list[LatencyCell] = Field(min_length=1)
    triton: list[TritonLatency]
    selection: SelectionLatency

    def cell(self, path: str, batch_size: int, concurrency: int) -> LatencyCell | None:
        return next((c for c in self.cells if (c.path, c.batch_size, c.concurrency) == (path, batch_size, concurrency)),
                    None)


class ImportSource(_Strict):
    """Where an imported model came from and what psml changed in it (nothing but these two)."""

    file: str
    sha256: str
    softmax_appended: bool
    batch_axis_made_dynamic: bool


class Parity(_Strict):
    max_abs_diff: float
    top1_mismatches: int
    n: int


class ModelEntry(_Strict):
    name: str
    architecture: str
    parameters: int = Field(ge=0)
    onnx_file: str
    onnx_sha256: str
    input: TensorSpec
    output: TensorSpec
    accuracy: float = Field(ge=0, le=1)
    # encoders: the same architecture's probe accuracy with its initial (random) weights; SSL training bought
    # accuracy - untrained_accuracy (random conv features alone probe well on MNIST-1D)
    untrained_accuracy: float | None = Field(default=None, ge=0, le=1)
    parity: Parity
    train_seconds: float = Field(ge=0)
    latency: ModelLatency
    selection_latency_ms: float = Field(gt=0)
    pareto: bool
    # front models: "margin" or "within_noise" (zoo.pareto.front_marks); None off the front and in older
    # manifests, which still load
    front_margin: Literal["margin", "within_noise"] | None = None
    source: ImportSource | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample's shape as the model takes it (its input without the batch axis)."""
        return tuple(self.input.shape[1:])


class DatasetInfo(_Strict):
    name: str
    sample_shape: list[int]
    n_classes: int
    split_sizes: dict[str, int]
    data_file: str
    seed: int


class ZooInfo(_Strict):
    name: str
    origin: Literal["built", "imported"] = "built"
    kind: Literal["classifier", "encoder"] = "classifier"  # encoder: outputs are embeddings, accuracy a probe's

    @property
    def endpoint(self) -> str:
        return ENDPOINTS[self.kind]
    seed: int
    dataset: DatasetInfo
    created_utc: str
    build_seconds: float


class ProfileInfo(_Strict):
    hardware: dict
    software: dict[str, str]
    settings: dict
    selection: SelectionSetting
    front_check: list[dict]  # zoo.pareto.front_check lines, as measured when the profile was taken
    measured_utc: str

    def selection_describe(self) -> str:
        s = self.selection
        return f"p{s.percentile} at batch {s.batch_size}, concurrency {s.concurrency}, {s.path}"


class Manifest(_Strict):
    schema_version: Literal[2]
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
        version = json.loads(raw).get("schema_version")
    except (ValueError, AttributeError):
        version = None
    if version is not None and version != SCHEMA_VERSION:
        raise ManifestError(f"zoo manifest {path} has schema version {version}; this psml reads version "
                            f"{SCHEMA_VERSION} (latency profiles with a load axis): rebuild the zoo (psml zoo build)")
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ManifestError(f"zoo manifest {path} is invalid at {where}: {first['msg']}") from e


def save_manifest(m: Manifest, path: Path) -> None:
    write_json_atomic(path, m.model_dump_json(indent=2))
