"""The router's read-only view of a zoo manifest: the models it may select and what it publishes."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from zoo.manifest import ENDPOINTS

from .requirements import ZooModel


@dataclass(frozen=True)
class ZooView:
    models: tuple[ZooModel, ...]
    input_dim: int
    n_classes: int
    tensor_names: dict[str, tuple[str, str]] = field(default_factory=dict)  # model -> (input, output) tensor
    sample_shape: tuple[int, ...] = ()  # one sample as the models take it: (input_dim,) for built zoos
    kind: str = "classifier"  # "encoder": n_classes is then the embedding's width
    selection_batch_size: int = 1  # the batch size of the profile cell each model's latency_ms comes from

    @property
    def endpoint(self) -> str:
        return ENDPOINTS[self.kind]

    def __post_init__(self):
        if not self.sample_shape:
            object.__setattr__(self, "sample_shape", (self.input_dim,))

    @classmethod
    def from_manifest(cls, manifest) -> "ZooView":
        sel = manifest.profile.selection
        models = tuple(ZooModel(m.name, m.accuracy, m.selection_latency_ms, m.pareto, _per_sample_ms(m, sel))
                       for m in manifest.models)
        names = {m.name: (m.input.name, m.output.name) for m in manifest.models}
        shape = manifest.models[0].sample_shape  # one shape for the whole zoo (zoo import checks it)
        return cls(models, int(np.prod(shape)), manifest.models[0].output.shape[1], names, shape, manifest.zoo.kind,
                   sel.batch_size)

    def to_model(self, x: np.ndarray) -> np.ndarray:
        """A flat [B, D] batch as the models take it: a view, no copy."""
        return x if len(self.sample_shape) == 1 else x.reshape(len(x), *self.sample_shape)

    @cached_property
    def pareto(self) -> tuple[ZooModel, ...]:
        return tuple(m for m in self.models if m.pareto)

    @property
    def accuracy_span(self) -> float:
        accs = [m.accuracy for m in self.models]
        return max(accs) - min(accs)

    @property
    def latency_span_ms(self) -> float:
        lats = [m.latency_ms for m in self.models]
        return max(lats) - min(lats)

    def public_info(self, max_batch_size: int) -> dict:
        """What a real service publishes: the ranges one can ask for, never the models themselves."""
        accs = [m.accuracy for m in self.models]
        lats = [m.latency_ms for m in self.models]
        return {
            "accuracy_range": [round(min(accs), 4), round(max(accs), 4)],
            "latency_range_ms": [round(min(lats), 3), round(max(lats), 3)],
            "input_dim": self.input_dim,
            "sample_shape": list(self.sample_shape),
            "kind": self.kind,
            "endpoint": self.endpoint,
            ("embedding_dim" if self.kind == "encoder" else "n_classes"): self.n_classes,
            "max_batch_size": max_batch_size,
            "requirements": {
                "min_accuracy": "fraction in [0, 1]; omit for no accuracy requirement",
                "max_latency_ms": "milliseconds > 0; omit for no latency requirement",
            },
        }


def _per_sample_ms(entry, sel) -> float:
    """The steepest growth of the selection percentile per added sample between consecutive profiled batch sizes,
    on the selection's path and concurrency (0 with a single batch size)."""
    key = f"p{sel.percentile}_ms"
    cells = sorted((c.batch_size, getattr(c, key)) for c in entry.latency.cells
                   if (c.path, c.concurrency) == (sel.path, sel.concurrency))
    slopes = [(v2 - v1) / (b2 - b1) for (b1, v1), (b2, v2) in zip(cells, cells[1:]) if b2 > b1]
    return max([0.0, *slopes])
