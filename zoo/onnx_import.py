"""Checks for bringing a user's own ONNX models and labelled data into a zoo (issue 13's first part).

Each check fails with one line that names the file and the reason (``ImportFailure``), before anything is
written: a file the ONNX checker refuses; not exactly one input and one output; an input whose first axis is
not a batch axis (dynamic, or fixed at a size that cannot batch); a non-float32 input; an output that is not
[batch, classes]; models of one zoo that disagree on sample shape or class count; an evaluation set whose
samples do not match the models' input, whose labels fall outside the class range, or that holds non-finite
values; a model that answers logits without ``softmax`` (rows not summing to 1).

What psml changes in a user's file before serving it (:func:`prepare_onnx`, recorded in the manifest): a
Softmax appended to a model that answers logits, where ``--softmax`` names it; a fixed batch axis made
dynamic, kept only when the result answers every sample as the fixed-batch original did. zoo/importer.py runs
the whole import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import PsmlError


class ImportFailure(PsmlError):
    """One line: the file and the reason. The CLI exits 2 on it (bad input, nothing written)."""

    exit_code = 2


# Triton model names are folder names and URL path segments
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str, what: str, source: Path | str) -> str:
    if not NAME_PATTERN.match(name):
        raise ImportFailure(f"{source}: {what} {name!r} must be 1-64 letters, digits, '_', '.' or '-' (not starting "
                            f"with '.' or '-'); rename it")
    return name


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
    return ForeignModel(check_name(name or path.stem, "model name", path), path, inp.name, out.name, tuple(int(d) for d in dims[1:]), int(odims[1]),
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


def _npz_arrays(path: Path, need_y: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path) as f:
            if "x" not in f or (need_y and "y" not in f):
                raise ImportFailure(f"{path}: needs arrays 'x'{' and y' if need_y else ''}, has {sorted(f.files)}")
            return f["x"], (f["y"] if "y" in f else None)
    except ImportFailure:
        raise
    except Exception as e:
        raise ImportFailure(f"{path}: cannot be read as .npz ({str(e).splitlines()[0][:200]})") from None


def check_samples(x: np.ndarray, source: Path | str, sample_shape: tuple[int, ...]) -> np.ndarray:
    """Samples of the models' shape as finite float32 (flattened samples of the right size are reshaped)."""
    if x.ndim < 1 or len(x) == 0:
        raise ImportFailure(f"{source}: holds no samples")
    if tuple(x.shape[1:]) != tuple(sample_shape):
        if x.ndim == 2 and x.shape[1] == int(np.prod(sample_shape)):
            x = x.reshape(len(x), *sample_shape)
        else:
            raise ImportFailure(f"{source}: samples have shape {list(x.shape[1:])}, the models take {list(sample_shape)}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ImportFailure(f"{source}: samples are {x.dtype}, not numbers")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ImportFailure(f"{source}: samples hold non-finite values")
    return x


def check_labels(x: np.ndarray, y: np.ndarray, source: Path | str, n_classes: int) -> np.ndarray:
    if len(x) != len(y) or y.ndim != 1:
        raise ImportFailure(f"{source}: {len(x)} samples but labels of shape {list(y.shape)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ImportFailure(f"{source}: labels are {y.dtype}, not integers")
    if y.min() < 0 or y.max() >= n_classes:
        raise ImportFailure(f"{source}: labels span [{y.min()}, {y.max()}], outside the models' {n_classes} classes")
    return y.astype(np.int64)


def load_eval_data(path: Path, sample_shape: tuple[int, ...], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``x`` [N, *sample_shape] float32 and ``y`` [N] integer labels in [0, n_classes) from an .npz file."""
    path = Path(path)
    x, y = _npz_arrays(path)
    x = check_samples(x, path, sample_shape)
    return x, check_labels(x, y, path, n_classes)


def load_pool(path: Path, sample_shape: tuple[int, ...]) -> np.ndarray:
    """An attacker's query pool: ``x`` from an .npz file (labels, if any, are not used: the victim labels)."""
    path = Path(path)
    return check_samples(_npz_arrays(path, need_y=False)[0], path, sample_shape)


def load_folder(root: Path, sample_shape: tuple[int, ...], n_classes: int):
    """A torchvision-layout folder (MNIST or CIFAR-10): its name, the official test split as the evaluation set
    and the official training split as the attacker's pool."""
    from common.errors import DataError

    from .data import torchvision_folder

    try:
        name, splits = torchvision_folder(root)
    except DataError as e:
        raise ImportFailure(str(e)) from None
    x, y = check_samples(splits["test"][0], root, sample_shape), splits["test"][1]
    return name, x, check_labels(x, y, root, n_classes), check_samples(splits["train"][0], root, sample_shape)


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
        try:
            outs.append(sess.run([model.output_name], {model.input_name: chunk})[0][: len(x[i : i + step])])
        except Exception as e:  # onnxruntime's own error types
            raise ImportFailure(f"{model.path}: onnxruntime fails to run it on the evaluation samples "
                                f"({str(e).splitlines()[0][:200]})") from None
    out = np.concatenate(outs).astype(np.float64)
    if softmax:
        out = np.exp(out - out.max(1, keepdims=True))
        out /= out.sum(1, keepdims=True)
    elif not (np.all(out >= -1e-6) and np.allclose(out.sum(1), 1.0, atol=1e-3)):
        raise ImportFailure(f"{model.path}: answers are not probabilities (rows sum to "
                            f"{out.sum(1).min():.3g}..{out.sum(1).max():.3g}); if it returns logits, import it with "
                            f"--softmax")
    return out.astype(np.float32)


def answers_probabilities(model: ForeignModel, x: np.ndarray) -> bool:
    """Whether the model's own output rows are already probabilities (then a softmax would flatten them)."""
    try:
        predict(model, x, softmax=False)
    except ImportFailure as e:
        if "not probabilities" in str(e):
            return False
        raise
    return True


def accuracy(model: ForeignModel, x: np.ndarray, y: np.ndarray, softmax: bool) -> float:
    return float(np.mean(predict(model, x, softmax).argmax(1) == y))


def prepare_onnx(m: ForeignModel, softmax: bool, out: Path) -> tuple[bool, bool]:
    """Write the file Triton will serve: the user's graph, with a Softmax appended to its output where ``softmax``
    says, and a fixed batch axis made dynamic. Returns (softmax appended, batch axis made dynamic)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(m.path))
    g = model.graph
    made_dynamic = not m.dynamic_batch
    if made_dynamic:
        inp = next(i for i in g.input if i.name == m.input_name)
        for vi in (inp, g.output[0]):
            d = vi.type.tensor_type.shape.dim[0]
            d.ClearField("dim_value")
            d.dim_param = "batch"
        del g.value_info[:]  # inferred intermediate shapes still carry the fixed batch; onnxruntime re-infers them
    if softmax:
        logits = f"{m.output_name}__logits"
        for node in g.node:
            node.output[:] = [logits if o == m.output_name else o for o in node.output]
            node.input[:] = [logits if i == m.output_name else i for i in node.input]
        g.node.append(helper.make_node("Softmax", [logits], [m.output_name], axis=1, name="psml_softmax"))
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ImportFailure(f"{m.path}: the prepared graph fails the ONNX checker ({str(e).splitlines()[0][:200]})") from None
    onnx.save(model, str(out))
    return softmax, made_dynamic


def check_prepared(original: ForeignModel, prepared: ForeignModel, x: np.ndarray, softmax: bool) -> np.ndarray:
    """The prepared file's probabilities on ``x`` (batch 1, then in batches); for a batch axis made dynamic, they
    must equal the fixed-batch original's, or the model cannot be served batched."""
    try:
        probs = predict(prepared, x, softmax=False)
        single = predict(prepared, x[:3], softmax=False, batch=1)
    except ImportFailure as e:
        if original.dynamic_batch:  # name the user's file, not the prepared copy
            raise ImportFailure(str(e).replace(str(prepared.path), str(original.path))) from None
        raise ImportFailure(f"{original.path}: its fixed batch axis of {original.max_batch} cannot be made dynamic "
                            f"({str(e).split(': ', 1)[-1]}); export it with a dynamic batch axis") from None
    if not np.allclose(single, probs[:3], atol=1e-5):
        raise ImportFailure(f"{original.path}: answers depend on the batch a sample is sent in; a served model must "
                            f"answer each sample alone")
    if not original.dynamic_batch:
        reference = predict(original, x[: 4 * original.max_batch], softmax)
        if not np.allclose(reference, probs[: len(reference)], atol=1e-5):
            raise ImportFailure(f"{original.path}: with its fixed batch axis of {original.max_batch} made dynamic it "
                                f"answers differently; export it with a dynamic batch axis")
    return probs
