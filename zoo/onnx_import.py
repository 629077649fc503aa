"""Checks for bringing a user's own ONNX models and labelled data into a zoo (issue 13's first part).

Each check fails with one line that names the file and the reason (``ImportFailure``), before anything is
written: a file the ONNX checker refuses; not exactly one input and one output; an input whose first axis is
not a batch axis (dynamic, or fixed at a size that cannot batch); a non-float32 input; an output that is not
[batch, classes]; models of one zoo that disagree on sample shape or class count; an evaluation set whose
samples do not match the models' input, whose labels fall outside the class range, or that holds non-finite
values; a model that answers logits without ``softmax`` (rows not summing to 1).

Not yet wired: rendering both repository variants for shaped inputs, profiling through Triton, the manifest,
``psml zoo import`` and shaped inputs in the router (see the issue-13 note).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import PsmlError


class ImportFailure(PsmlError):
    """One line: the file and the reason."""


@dataclass(frozen=True)
class ForeignModel:
    name: str
    path: Path
    input_name: str
    output_name: str
    sample_shape: tuple[int, ...]  # the input's shape without its batch axis
    n_classes: int
    dynamic_batch: bool  # False: the batch axis is fixed (at max_batch)
    max_batch: int | None
    parameters: int


def _dims(value_info) -> list[int | str | None]:
    """Each axis as its fixed size, its symbolic name, or None when neither is given."""
    out = []
    for d in value_info.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return out


def inspect_onnx(path: Path, name: str | None = None) -> ForeignModel:
    import onnx
    from onnx import TensorProto, numpy_helper

    path = Path(path)
    if not path.is_file():
        raise ImportFailure(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # onnx raises several unrelated types for a bad file
        raise ImportFailure(f"{path}: fails the ONNX checker ({str(e).splitlines()[0][:200]})") from None
    g = model.graph
    initialisers = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in initialisers]
    if len(inputs) != 1 or len(g.output) != 1:
        raise ImportFailure(f"{path}: has {len(inputs)} inputs and {len(g.output)} outputs; a zoo model has exactly "
                            f"one of each")
    inp, out = inputs[0], g.output[0]
    if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ImportFailure(f"{path}: input {inp.name!r} is {TensorProto.DataType.Name(inp.type.tensor_type.elem_type)},"
                            f" not FLOAT (float32)")
    dims, odims = _dims(inp), _dims(out)
    if len(dims) < 2 or any(not isinstance(d, int) or d < 1 for d in dims[1:]):
        raise ImportFailure(f"{path}: input {inp.name!r} has shape {dims}; expected [batch, fixed sample axes...]")
    dynamic = not isinstance(dims[0], int)
    if not dynamic and dims[0] < 2:
        raise ImportFailure(f"{path}: input {inp.name!r} has a fixed batch axis of {dims[0]}; export it with a dynamic "
                            f"batch axis (dynamic_axes) so requests can be batched")
    if len(odims) != 2 or not isinstance(odims[1], int) or odims[1] < 2:
        raise ImportFailure(f"{path}: output {out.name!r} has shape {odims}; expected [batch, classes]")
    params = int(sum(np.prod(numpy_helper.to_array(i).shape) for i in g.initializer))
    return ForeignModel(name or path.stem, path, inp.name, out.name, tuple(int(d) for d in dims[1:]), int(odims[1]),
                        dynamic, None if dynamic else int(dims[0]), params)


def check_zoo(models: list[ForeignModel]) -> tuple[tuple[int, ...], int]:
    """The zoo's sample shape and class count, which every model must share; names must be distinct."""
    if len(models) < 2:
        raise ImportFailure("a zoo needs at least two models (one would leave nothing to select between)")
    first = models[0]
    names = [m.name for m in models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ImportFailure(f"model names must be distinct: {', '.join(dupes)} (rename the files)")
    for m in models[1:]:
        if m.sample_shape != first.sample_shape:
            raise ImportFailure(f"{m.path}: input sample shape {list(m.sample_shape)} differs from {first.path}'s "
                                f"{list(first.sample_shape)}")
        if m.n_classes != first.n_classes:
            raise ImportFailure(f"{m.path}: {m.n_classes} classes differ from {first.path}'s {first.n_classes}")
    return first.sample_shape, first.n_classes


def load_eval_data(path: Path, sample_shape: tuple[int, ...], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``x`` [N, *sample_shape] float32 and ``y`` [N] integer labels in [0, n_classes) from an .npz file."""
    path = Path(path)
    try:
        with np.load(path) as f:
            if "x" not in f or "y" not in f:
                raise ImportFailure(f"{path}: needs arrays 'x' and 'y', has {sorted(f.files)}")
            x, y = f["x"], f["y"]
    except ImportFailure:
        raise
    except Exception as e:
        raise ImportFailure(f"{path}: cannot be read as .npz ({e})") from None
    if tuple(x.shape[1:]) != tuple(sample_shape):
        raise ImportFailure(f"{path}: samples have shape {list(x.shape[1:])}, the models take {list(sample_shape)}")
    if len(x) != len(y) or y.ndim != 1:
        raise ImportFailure(f"{path}: {len(x)} samples but labels of shape {list(y.shape)}")
    if len(y) == 0:
        raise ImportFailure(f"{path}: holds no samples")
    if not np.issubdtype(y.dtype, np.integer):
        raise ImportFailure(f"{path}: labels are {y.dtype}, not integers")
    if y.min() < 0 or y.max() >= n_classes:
        raise ImportFailure(f"{path}: labels span [{y.min()}, {y.max()}], outside the models' {n_classes} classes")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ImportFailure(f"{path}: samples hold non-finite values")
    return x, y.astype(np.int64)


def predict(model: ForeignModel, x: np.ndarray, softmax: bool, batch: int = 256) -> np.ndarray:
    """Class probabilities from onnxruntime; logits are turned into probabilities only where ``softmax`` says."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(model.path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ImportFailure(f"{model.path}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})") from None
    step = batch if model.dynamic_batch else model.max_batch
    outs = []
    for i in range(0, len(x), step):
        chunk = x[i : i + step]
        if not model.dynamic_batch and len(chunk) < step:  # a fixed batch axis: pad the last chunk
            chunk = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), np.float32)])
        outs.append(sess.run([model.output_name], {model.input_name: chunk})[0][: len(x[i : i + step])])
    out = np.concatenate(outs).astype(np.float64)
    if softmax:
        out = np.exp(out - out.max(1, keepdims=True))
        out /= out.sum(1, keepdims=True)
    elif not (np.all(out >= -1e-6) and np.allclose(out.sum(1), 1.0, atol=1e-3)):
        raise ImportFailure(f"{model.path}: answers are not probabilities (rows sum to "
                            f"{out.sum(1).min():.3g}..{out.sum(1).max():.3g}); if it returns logits, import it with "
                            f"--softmax")
    return out.astype(np.float32)


def accuracy(model: ForeignModel, x: np.ndarray, y: np.ndarray, softmax: bool) -> float:
    return float(np.mean(predict(model, x, softmax).argmax(1) == y))
