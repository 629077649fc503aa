"""The two request formats of ``POST /v1/infer`` and their validation, to a float32 batch and requirements.

- ``application/json``: ``{"inputs": [[...], ...], "min_accuracy": 0.9, "max_latency_ms": 5}`` (pydantic, strict);
- ``application/octet-stream``: the raw little-endian tensor bytes, row-major, with its shape and dtype and the
  requirements in headers (``x-psml-shape: 32,40``, ``x-psml-dtype: float32``, ``x-psml-min-accuracy``,
  ``x-psml-max-latency-ms``). For large batches: a 32x40 batch costs ~80 us of CPU to parse as JSON and
  ~2 us as bytes.

Both formats share every limit (batch size, row width, finite float32 values, requirement ranges) and every
error: a 4xx with a JSON reason, raised as a RouterError.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InvalidRequest, MalformedJSON, UnsupportedMediaType
from .requirements import Requirements

JSON, BINARY = "application/json", "application/octet-stream"
SHAPE_HEADER, DTYPE_HEADER = "x-psml-shape", "x-psml-dtype"
MIN_ACCURACY_HEADER, MAX_LATENCY_HEADER = "x-psml-min-accuracy", "x-psml-max-latency-ms"
BINARY_DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "float64": np.dtype("<f8")}
MAX_LATENCY_LIMIT_MS = 600_000


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    inputs: list[list[float]] = Field(description="a batch of flat float32 samples, each of the zoo's input_dim")
    min_accuracy: float | None = Field(None, ge=0, le=1, description="minimum accuracy, a fraction in [0, 1]")
    max_latency_ms: float | None = Field(None, gt=0, le=MAX_LATENCY_LIMIT_MS,
                                         description="maximum latency in milliseconds")


def media_type(content_type: str) -> str:
    kind = content_type.split(";")[0].strip().lower()
    if kind not in (JSON, BINARY):
        raise UnsupportedMediaType(f"content-type must be {JSON} or {BINARY}, got {content_type or 'none'!r}")
    return kind


def _check_batch(x: np.ndarray, input_dim: int, max_batch_size: int) -> np.ndarray:
    n = len(x)
    if n == 0:
        raise InvalidRequest("inputs is empty: send at least one sample")
    if n > max_batch_size:
        raise InvalidRequest(f"batch of {n} samples exceeds the limit of {max_batch_size}")
    if not np.isfinite(x).all():  # finite as float64 JSON (or float64 bytes) but overflowing float32
        raise InvalidRequest("inputs hold values that are not finite in float32")
    return x


def parse_json(body: bytes, input_dim: int, max_batch_size: int) -> tuple[np.ndarray, Requirements]:
    try:
        req = InferRequest.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "json_invalid":
            raise MalformedJSON(f"request body is not valid JSON: {first['msg']}") from e
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidRequest(f"{where}: {first['msg']}") from e
    if len(req.inputs) > max_batch_size:  # before the width scan: a huge batch is refused without reading it
        raise InvalidRequest(f"batch of {len(req.inputs)} samples exceeds the limit of {max_batch_size}")
    bad = next((i for i, row in enumerate(req.inputs) if len(row) != input_dim), None)
    if bad is not None:
        raise InvalidRequest(f"inputs[{bad}] has {len(req.inputs[bad])} values; every sample needs {input_dim}")
    x = np.asarray(req.inputs, dtype=np.float32).reshape(len(req.inputs), input_dim)
    return _check_batch(x, input_dim, max_batch_size), Requirements(req.min_accuracy, req.max_latency_ms)


def _header_float(headers: dict, name: str, low: float, high: float, low_inclusive: bool) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        v = float(raw)
    except ValueError:
        raise InvalidRequest(f"{name}: {raw!r} is not a number") from None
    ok = (v >= low if low_inclusive else v > low) and v <= high and math.isfinite(v)
    if not ok:
        raise InvalidRequest(f"{name}: {v} is outside {'[' if low_inclusive else '('}{low}, {high}]")
    return v


def parse_binary(body: bytes, headers: dict, input_dim: int, max_batch_size: int) -> tuple[np.ndarray, Requirements]:
    """``headers``: lower-case names to str values."""
    shape_raw = headers.get(SHAPE_HEADER)
    if shape_raw is None:
        raise InvalidRequest(f"a {BINARY} body needs its shape in the {SHAPE_HEADER} header, e.g. '8,{input_dim}'")
    try:
        n, dim = (int(v) for v in shape_raw.split(","))
    except ValueError:
        raise InvalidRequest(f"{SHAPE_HEADER}: {shape_raw!r} is not 'batch,{input_dim}'") from None
    dtype_name = headers.get(DTYPE_HEADER, "float32").strip().lower()
    dtype = BINARY_DTYPES.get(dtype_name)
    if dtype is None:
        raise InvalidRequest(f"{DTYPE_HEADER}: unknown dtype {dtype_name!r}; use one of {', '.join(BINARY_DTYPES)}")
    if dim != input_dim:
        raise InvalidRequest(f"{SHAPE_HEADER}: rows of {dim} values; every sample needs {input_dim}")
    if n < 0:
        raise InvalidRequest(f"{SHAPE_HEADER}: batch size {n} is negative")
    if len(body) != n * dim * dtype.itemsize:
        raise InvalidRequest(f"body of {len(body)} bytes does not match {SHAPE_HEADER} {n},{dim} of {dtype_name} "
                             f"({n * dim * dtype.itemsize} bytes)")
    x = np.frombuffer(body, dtype=dtype).reshape(n, dim).astype(np.float32)
    req = Requirements(_header_float(headers, MIN_ACCURACY_HEADER, 0.0, 1.0, True),
                       _header_float(headers, MAX_LATENCY_HEADER, 0.0, MAX_LATENCY_LIMIT_MS, False))
    return _check_batch(x, input_dim, max_batch_size), req


def openapi_body_schema(input_dim: int, max_batch_size: int) -> dict:
    """The request body as the served zoo constrains it: published limits are the enforced ones."""
    schema = InferRequest.model_json_schema()
    schema["properties"]["inputs"] |= {
        "minItems": 1, "maxItems": max_batch_size,
        "items": {"type": "array", "items": {"type": "number"}, "minItems": input_dim, "maxItems": input_dim}}
    return {"requestBody": {"required": True, "content": {
        JSON: {"schema": schema},
        BINARY: {"schema": {"type": "string", "format": "binary",
                            "description": f"row-major little-endian tensor bytes; shape in {SHAPE_HEADER}"}},
    }}, "parameters": [
        {"name": SHAPE_HEADER, "in": "header", "required": False,
         "description": f"binary bodies only (required there): 'batch,{input_dim}', batch 1..{max_batch_size}",
         "schema": {"type": "string", "pattern": r"^[0-9]+,[0-9]+$"}},
        {"name": DTYPE_HEADER, "in": "header", "required": False, "description": "binary bodies only",
         "schema": {"type": "string", "enum": list(BINARY_DTYPES), "default": "float32"}},
        {"name": MIN_ACCURACY_HEADER, "in": "header", "required": False, "description": "binary bodies only",
         "schema": {"type": "number", "minimum": 0, "maximum": 1}},
        {"name": MAX_LATENCY_HEADER, "in": "header", "required": False, "description": "binary bodies only",
         "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_LATENCY_LIMIT_MS}},
    ]}
