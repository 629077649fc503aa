"""The two request formats of ``POST /v1/infer`` and their validation, to a float32 batch and requirements.

- ``application/json``: ``{"inputs": [[...], ...], "min_accuracy": 0.9, "max_latency_ms": 5}`` (pydantic, strict);
- ``application/octet-stream``: the raw little-endian tensor bytes, row-major, with its shape and dtype and the
  requirements in headers (``x-psml-shape: 32,40``, ``x-psml-dtype: float32``, ``x-psml-min-accuracy``,
  ``x-psml-max-latency-ms``). For large batches: a 32x40 batch costs ~80 us of CPU to parse as JSON and
  ~2 us as bytes.

A sample has the zoo's sample shape (``/v1/zoo`` publishes it): [40] for a built MNIST-1D zoo, [1, 8, 8] for an
imported image zoo. Shaped samples may come as nested lists of that shape or flattened row-major (the same
bytes); the binary shape header is then ``batch,1,8,8`` or ``batch,64``. Either way the router hands on a flat
[B, D] batch, which the client defenses read, and reshapes it for Triton only.

Both formats share every limit (batch size, row width, finite float32 values, requirement ranges) and every
error: a 4xx with a JSON reason, raised as a RouterError.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, FailFast, Field, ValidationError, create_model

from .errors import InvalidRequest, MalformedJSON, UnsupportedMediaType, clip
from .requirements import Requirements

JSON, BINARY = "application/json", "application/octet-stream"
SHAPE_HEADER, DTYPE_HEADER = "x-psml-shape", "x-psml-dtype"
MIN_ACCURACY_HEADER, MAX_LATENCY_HEADER = "x-psml-min-accuracy", "x-psml-max-latency-ms"
BINARY_DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "float64": np.dtype("<f8")}
MAX_LATENCY_LIMIT_MS = 600_000


class _FailFast(FailFast):
    """pydantic's FailFast, hashable: a shaped zoo's body is a union of annotated list types, and typing hashes
    a union's members."""

    def __hash__(self) -> int:
        return hash(type(self))
# A JSON number as a client may write it ("-0.12345678901234567e-05", then ", "), with room for brackets and
# indentation: the largest JSON body a full batch needs is max_batch_size x sample size x this, plus the rest.
JSON_BYTES_PER_VALUE, JSON_OVERHEAD_BYTES = 32, 4096
SHAPE_PATTERN = re.compile(r"\s*[0-9]{1,9}(\s*,\s*[0-9]{1,9}){1,8}\s*")  # never int() a 4,300-digit string


def body_limit_bytes(kind: str, sample_shape: tuple[int, ...], max_batch_size: int, max_body_bytes: int) -> int:
    """The most bytes a valid body of this media type can hold: a larger body is refused unread (413)."""
    values = max_batch_size * int(np.prod(sample_shape))
    need = values * max(d.itemsize for d in BINARY_DTYPES.values()) if kind == BINARY else \
        values * JSON_BYTES_PER_VALUE + JSON_OVERHEAD_BYTES
    return min(max_body_bytes, need)


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    # FailFast at every level: the first wrong item ends validation (collecting every error of a 4 MB body of
    # wrong-typed items took 6 s and 1.6 GB, with every other request of the worker waiting)
    inputs: Annotated[list[Annotated[list[float], _FailFast()]], _FailFast()] = Field(
        description="a batch of flat float32 samples, each of the zoo's input_dim")
    min_accuracy: float | None = Field(None, ge=0, le=1, description="minimum accuracy, a fraction in [0, 1]")
    max_latency_ms: float | None = Field(None, gt=0, le=MAX_LATENCY_LIMIT_MS,
                                         description="maximum latency in milliseconds")


@lru_cache(maxsize=8)
def _shaped_request(rank: int) -> type[InferRequest]:
    """The JSON body for a zoo whose samples have ``rank`` axes: each sample flat or nested ``rank`` deep."""
    nested = float
    for _ in range(rank):
        nested = Annotated[list[nested], _FailFast()]
    flat = Annotated[list[float], _FailFast()]
    return create_model(f"InferRequestRank{rank}", __base__=InferRequest,
                        inputs=(Annotated[list[flat | nested], _FailFast()], Field(description="a batch of samples, each of the zoo's "
                                                                             "sample_shape or flattened")))


def _describe(sample_shape: tuple[int, ...]) -> str:
    return f"{list(sample_shape)} (or {int(np.prod(sample_shape))} values, flattened)"


def media_type(content_type: str) -> str:
    kind = content_type.split(";")[0].strip().lower()
    if kind not in (JSON, BINARY):
        raise UnsupportedMediaType(f"content-type must be {JSON} or {BINARY}, got {clip(content_type) or 'none'!r}")
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


def max_json_lists(sample_shape: tuple[int, ...], max_batch_size: int) -> int:
    """The most JSON lists ('[') a valid body can hold: the batch, and per sample its nesting (flat: 1 list)."""
    nested, width = 0, 1
    for d in sample_shape[:-1] if len(sample_shape) > 1 else ():
        nested, width = nested + width, width * d
    return 1 + max_batch_size * max(1, nested + width)


def lists_cap(sample_shape: tuple[int, ...], max_batch_size: int) -> int:
    """Twice what a valid body can hold: a few rows over the batch limit still get the batch-limit answer,
    100,000 empty rows never reach pydantic."""
    return 2 * max_json_lists(sample_shape, max_batch_size)


def parse_json(body: bytes, sample_shape: tuple[int, ...], max_batch_size: int) -> tuple[np.ndarray, Requirements]:
    sample_shape = tuple(sample_shape)
    input_dim = int(np.prod(sample_shape))
    lists = body.count(b"[")  # ~30 us for a full body: before pydantic builds 100,000 empty rows (35 ms a body)
    if lists > lists_cap(sample_shape, max_batch_size):
        raise InvalidRequest(f"inputs holds more lists ({lists}) than a batch of {max_batch_size} samples of shape "
                             f"{list(sample_shape)} can")
    model = InferRequest if len(sample_shape) == 1 else _shaped_request(len(sample_shape))
    try:
        req = model.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "json_invalid":
            raise MalformedJSON(f"request body is not valid JSON: {first['msg']}") from e
        # a shaped zoo's union adds type tags ("list[float]") to the location: keep the body's own path
        where = ".".join(str(p) for p in first["loc"] if not (isinstance(p, str) and "[" in p)) or "body"
        if len(sample_shape) > 1 and first["loc"][:1] == ("inputs",) and len(first["loc"]) > 1:
            # a sample nested to another depth fails every member of the union: say what a sample is
            raise InvalidRequest(f"inputs[{first['loc'][1]}] is not a sample of numbers of shape "
                                 f"{_describe(sample_shape)} ({where}: {first['msg']})") from e
        raise InvalidRequest(f"{where}: {first['msg']}") from e
    if len(req.inputs) > max_batch_size:  # before the width scan: a huge batch is refused without reading it
        raise InvalidRequest(f"batch of {len(req.inputs)} samples exceeds the limit of {max_batch_size}")
    if len(sample_shape) > 1:
        return _check_batch(_shaped(req.inputs, sample_shape), input_dim, max_batch_size), \
            Requirements(req.min_accuracy, req.max_latency_ms)
    bad = next((i for i, row in enumerate(req.inputs) if len(row) != input_dim), None)
    if bad is not None:
        raise InvalidRequest(f"inputs[{bad}] has {len(req.inputs[bad])} values; every sample needs {input_dim}")
    x = np.asarray(req.inputs, dtype=np.float32).reshape(len(req.inputs), input_dim)
    return _check_batch(x, input_dim, max_batch_size), Requirements(req.min_accuracy, req.max_latency_ms)


def _shaped(inputs: list, sample_shape: tuple[int, ...]) -> np.ndarray:
    """Nested or flat samples to a flat [B, D] float32 batch; the first sample of another shape is named."""
    dim = int(np.prod(sample_shape))
    if not inputs:
        return np.zeros((0, dim), np.float32)  # refused as empty by _check_batch
    try:
        x = np.asarray(inputs, dtype=np.float32)
        if x.shape[1:] in (sample_shape, (dim,)):
            return x.reshape(len(x), dim)
    except ValueError:  # ragged, or flat and nested samples mixed in one batch
        pass
    for i, sample in enumerate(inputs):
        try:
            shape = np.asarray(sample, dtype=np.float32).shape
        except ValueError:
            raise InvalidRequest(f"inputs[{i}] is ragged (its nested lists differ in length); every sample needs "
                                 f"{_describe(sample_shape)}") from None
        if shape not in (sample_shape, (dim,)):
            raise InvalidRequest(f"inputs[{i}] has shape {list(shape)}; every sample needs {_describe(sample_shape)}")
    raise InvalidRequest(f"inputs mix flat and nested samples; send every sample as {list(sample_shape)} or every "
                         f"sample flattened to {dim} values")


def _header_float(headers: dict, name: str, low: float, high: float, low_inclusive: bool) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        v = float(raw)
    except ValueError:
        raise InvalidRequest(f"{name}: {clip(raw)!r} is not a number") from None
    ok = (v >= low if low_inclusive else v > low) and v <= high and math.isfinite(v)
    if not ok:
        raise InvalidRequest(f"{name}: {v} is outside {'[' if low_inclusive else '('}{low}, {high}]")
    return v


def parse_binary(body: bytes, headers: dict, sample_shape: tuple[int, ...],
                 max_batch_size: int) -> tuple[np.ndarray, Requirements]:
    """``headers``: lower-case names to str values."""
    sample_shape = tuple(sample_shape)
    input_dim = int(np.prod(sample_shape))
    example = ",".join(map(str, (8, *sample_shape)))
    shape_raw = headers.get(SHAPE_HEADER)
    if shape_raw is None:
        raise InvalidRequest(f"a {BINARY} body needs its shape in the {SHAPE_HEADER} header, e.g. '{example}'")
    if not SHAPE_PATTERN.fullmatch(shape_raw):
        raise InvalidRequest(f"{SHAPE_HEADER}: {clip(shape_raw)!r} is not 'batch,{','.join(map(str, sample_shape))}' "
                             "(numbers of at most 9 digits)")
    n, *axes = (int(v) for v in shape_raw.split(","))
    if len(sample_shape) == 1 and len(axes) != 1:
        raise InvalidRequest(f"{SHAPE_HEADER}: {clip(shape_raw)!r} is not 'batch,{input_dim}'")
    if len(sample_shape) > 1 and tuple(axes) not in (sample_shape, (input_dim,)):
        raise InvalidRequest(f"{SHAPE_HEADER}: samples of shape {axes}; every sample needs {_describe(sample_shape)}")
    dim = int(np.prod(axes)) if axes else 0
    dtype_name = headers.get(DTYPE_HEADER, "float32").strip().lower()
    dtype = BINARY_DTYPES.get(dtype_name)
    if dtype is None:
        raise InvalidRequest(f"{DTYPE_HEADER}: unknown dtype {clip(dtype_name)!r}; use one of {', '.join(BINARY_DTYPES)}")
    if dim != input_dim:
        raise InvalidRequest(f"{SHAPE_HEADER}: rows of {dim} values; every sample needs {input_dim}")
    if n > max_batch_size:
        raise InvalidRequest(f"batch of {n} samples exceeds the limit of {max_batch_size}")
    if len(body) != n * dim * dtype.itemsize:
        raise InvalidRequest(f"body of {len(body)} bytes does not match {SHAPE_HEADER} {clip(shape_raw)} of {dtype_name} "
                             f"({n * dim * dtype.itemsize} bytes)")
    x = np.frombuffer(body, dtype=dtype).reshape(n, dim).astype(np.float32)
    req = Requirements(_header_float(headers, MIN_ACCURACY_HEADER, 0.0, 1.0, True),
                       _header_float(headers, MAX_LATENCY_HEADER, 0.0, MAX_LATENCY_LIMIT_MS, False))
    return _check_batch(x, input_dim, max_batch_size), req


def _array_schema(shape: tuple[int, ...]) -> dict:
    inner = {"type": "number"} if len(shape) == 1 else _array_schema(shape[1:])
    return {"type": "array", "items": inner, "minItems": shape[0], "maxItems": shape[0]}


def openapi_body_schema(sample_shape: tuple[int, ...], max_batch_size: int) -> dict:
    """The request body as the served zoo constrains it: published limits are the enforced ones."""
    sample_shape = tuple(sample_shape)
    input_dim = int(np.prod(sample_shape))
    schema = InferRequest.model_json_schema()
    flat = _array_schema((input_dim,))
    sample = flat if len(sample_shape) == 1 else {"anyOf": [_array_schema(sample_shape), flat]}
    schema["properties"]["inputs"] |= {"minItems": 1, "maxItems": max_batch_size, "items": sample,
                                       "description": f"a batch of samples of shape {list(sample_shape)}"
                                       + (" or flattened" if len(sample_shape) > 1 else "")}
    return {"requestBody": {"required": True, "content": {
        JSON: {"schema": schema},
        BINARY: {"schema": {"type": "string", "format": "binary",
                            "description": f"row-major little-endian tensor bytes; shape in {SHAPE_HEADER}"}},
    }}, "parameters": [
        {"name": SHAPE_HEADER, "in": "header", "required": False,
         "description": f"binary bodies only (required there): 'batch,{','.join(map(str, sample_shape))}'"
                        + (f" or 'batch,{input_dim}'" if len(sample_shape) > 1 else "") + f", batch 1..{max_batch_size}",
         "schema": {"type": "string", "pattern": r"^[0-9]+(,[0-9]+)+$"}},
        {"name": DTYPE_HEADER, "in": "header", "required": False, "description": "binary bodies only",
         "schema": {"type": "string", "enum": list(BINARY_DTYPES), "default": "float32"}},
        {"name": MIN_ACCURACY_HEADER, "in": "header", "required": False, "description": "binary bodies only",
         "schema": {"type": "number", "minimum": 0, "maximum": 1}},
        {"name": MAX_LATENCY_HEADER, "in": "header", "required": False, "description": "binary bodies only",
         "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_LATENCY_LIMIT_MS}},
    ]}
