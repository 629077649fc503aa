"""Render the Triton model repository for a zoo, in both host variants, from one source of truth.

The source of truth is the zoo's ONNX files plus :class:`RepositorySettings`; both variants are written by
:func:`render` in one pass, so they cannot drift apart:

- ``embedded/``: Triton from the nvidia-pytriton wheel. Each model is a Python-backend model whose
  ``1/model.py`` (zoo/onnx_python_backend.py) runs ``1/model.onnx`` with onnxruntime.
- ``gpu/``: NVIDIA's Triton image. Each model uses the native ``onnxruntime`` backend on ``KIND_GPU``.

Inputs, outputs, batching and instance counts are identical in both. Each model's tensors keep their own
names and sample shape (:class:`ModelIO`): built zoos take flat [B, D] samples named INPUT/PROBS, imported
zoos whatever their ONNX files declare (e.g. [B, 1, 8, 8] images).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigError

from .export import INPUT_NAME, OUTPUT_NAME

VARIANTS = ("embedded", "gpu")
PYTHON_MODEL_SOURCE = Path(__file__).with_name("onnx_python_backend.py")


@dataclass(frozen=True)
class ModelIO:
    """One model's tensors as Triton serves them: names, the sample shape without the batch axis, classes."""

    sample_shape: tuple[int, ...]
    n_classes: int
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME

    @classmethod
    def of_entry(cls, entry) -> "ModelIO":
        """From a manifest's model entry."""
        return cls(entry.sample_shape, entry.output.shape[1], entry.input.name, entry.output.name)

    def direct_client(self, http_url: str, model: str):
        """A stack.clients.DirectTriton for ``model`` with these tensor names and sample shape."""
        from stack.clients import DirectTriton

        return DirectTriton(http_url, model, input_name=self.input_name, output_name=self.output_name,
                            sample_shape=self.sample_shape)


@dataclass(frozen=True)
class RepositorySettings:
    max_batch_size: int = 256
    instance_count: int = 1  # model instances per model (per GPU on the gpu variant)
    # dynamic batcher: how long to hold a request to grow a batch; 0 = no wait. 0 by default: a wait is a fixed
    # cost on every batch-1 request (~0.2-0.3 ms measured here), and requests that queue up under load are
    # still batched together without it.
    max_queue_delay_us: int = 0
    intra_op_threads: int = 1  # onnxruntime threads per embedded instance; 1 avoids oversubscribing small CPUs

    def __post_init__(self):
        for name in ("max_batch_size", "instance_count", "intra_op_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_queue_delay_us < 0:
            raise ConfigError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")


def config_pbtxt(name: str, io: ModelIO, variant: str, s: RepositorySettings) -> str:
    if variant not in VARIANTS:
        raise ConfigError(f"unknown repository variant {variant!r}; choose from {', '.join(VARIANTS)}")
    backend, kind = ("python", "KIND_CPU") if variant == "embedded" else ("onnxruntime", "KIND_GPU")
    lines = [
        f'name: "{name}"',
        f'backend: "{backend}"',
        f"max_batch_size: {s.max_batch_size}",
        f'input [ {{ name: "{io.input_name}" data_type: TYPE_FP32 dims: [ {", ".join(map(str, io.sample_shape))} ] }} ]',
        f'output [ {{ name: "{io.output_name}" data_type: TYPE_FP32 dims: [ {io.n_classes} ] }} ]',
        f"dynamic_batching {{ max_queue_delay_microseconds: {s.max_queue_delay_us} }}",
        f"instance_group [ {{ count: {s.instance_count} kind: {kind} }} ]",
    ]
    if variant == "embedded":
        lines += [
            'parameters { key: "onnx_file" value: { string_value: "model.onnx" } }',
            f'parameters {{ key: "intra_op_threads" value: {{ string_value: "{s.intra_op_threads}" }} }}',
        ]
    else:
        lines.append('default_model_filename: "model.onnx"')
    return "\n".join(lines) + "\n"


def render(models: dict[str, tuple[Path, ModelIO]], root: Path, s: RepositorySettings) -> None:
    """Write ``root/embedded`` and ``root/gpu``, one folder per model, from the given ONNX files."""
    for variant in VARIANTS:
        for name, (onnx_path, io) in models.items():
            version_dir = root / variant / name / "1"
            version_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(onnx_path, version_dir / "model.onnx")
            if variant == "embedded":
                shutil.copyfile(PYTHON_MODEL_SOURCE, version_dir / "model.py")
            (root / variant / name / "config.pbtxt").write_text(config_pbtxt(name, io, variant, s))
