"""Export a trained model to ONNX (dynamic batch) and prove the ONNX file agrees with PyTorch."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.errors import ExportError

INPUT_NAME = "INPUT"
OUTPUT_NAME = "PROBS"
EMBEDDING_NAME = "EMBEDDING"  # an encoder zoo's output: the representation, no softmax
OPSET = 17


class WithSoftmax(nn.Module):
    """The served model answers class probabilities, not logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x), dim=1)


def export_onnx(model: nn.Module, input_dim: int, path: Path, encoder: bool = False) -> None:
    """A classifier answers probabilities (PROBS); an encoder (``encoder``) its representation (EMBEDDING)."""
    model.eval()
    out_name = EMBEDDING_NAME if encoder else OUTPUT_NAME
    # torch warns that a GRU exported with batch 2 may fail at other batch sizes; check_parity() runs the
    # whole test set at batch 1024 (and Triton serves batch 1), so a real failure would surface there.
    warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
    dummy = torch.zeros(2, input_dim, dtype=torch.float32)
    torch.onnx.export(
        model if encoder else WithSoftmax(model),
        (dummy,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[out_name],
        dynamic_axes={INPUT_NAME: {0: "batch"}, out_name: {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,  # the legacy exporter needs no extra packages
    )


def open_session(path: Path):
    """An onnxruntime CPU session, with a one-line error when the file is missing or corrupt."""
    import onnx
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file {path} does not exist")
    try:
        onnx.checker.check_model(str(path))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnx and onnxruntime raise several unrelated types for a bad file
        raise ExportError(f"ONNX file {path} is corrupt or invalid: {str(e).splitlines()[0]}") from e


def run_onnx(session, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    """The model's answers for ``x``, flat [N, D] or already shaped: any zoo model (built or imported, whatever
    its tensor names), since both come from the session."""
    inp, out = session.get_inputs()[0], session.get_outputs()[0].name
    if x.ndim != len(inp.shape):  # flat samples for a model with shaped ones (an imported image model)
        x = x.reshape(len(x), *inp.shape[1:])
    return np.concatenate([session.run([out], {inp.name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    top1_mismatches: int
    n: int

    def as_dict(self):
        return {"max_abs_diff": self.max_abs_diff, "top1_mismatches": self.top1_mismatches, "n": self.n}


def check_parity(torch_probs: np.ndarray, path: Path, x: np.ndarray, tolerance: float = 1e-4) -> Parity:
    """Compare ONNX with PyTorch on every sample of ``x``; raise ExportError when they disagree."""
    onnx_probs = run_onnx(open_session(path), x)
    p = Parity(
        max_abs_diff=float(np.max(np.abs(onnx_probs - torch_probs))),
        top1_mismatches=int(np.sum(onnx_probs.argmax(1) != torch_probs.argmax(1))),
        n=len(x),
    )
    if p.max_abs_diff > tolerance or p.top1_mismatches:
        raise ExportError(
            f"ONNX export {path.name} disagrees with PyTorch: max |dp| = {p.max_abs_diff:.2e} "
            f"(tolerance {tolerance:.0e}), {p.top1_mismatches}/{p.n} top-1 labels differ"
        )
    return p


def check_embedding_parity(torch_emb: np.ndarray, path: Path, x: np.ndarray, probe, tolerance: float = 1e-3) -> Parity:
    """An encoder's ONNX file against PyTorch on every sample of ``x``: max |de| relative to the embeddings'
    scale, and how many samples the linear probe labels differently from the two (``top1_mismatches``)."""
    onnx_emb = run_onnx(open_session(path), x)
    scale = float(np.max(np.abs(torch_emb))) or 1.0
    p = Parity(max_abs_diff=float(np.max(np.abs(onnx_emb - torch_emb))),
               top1_mismatches=int(np.sum(probe.predict(onnx_emb) != probe.predict(torch_emb))), n=len(x))
    if p.max_abs_diff > tolerance * scale or p.top1_mismatches:
        raise ExportError(f"ONNX export {path.name} disagrees with PyTorch: max |de| = {p.max_abs_diff:.2e} "
                          f"(tolerance {tolerance:.0e} x {scale:.2g}), {p.top1_mismatches}/{p.n} probe labels differ")
    return p
