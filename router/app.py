"""The router's HTTP API (FastAPI on uvicorn with uvloop and httptools).

Why this stack: an asyncio server lets one process keep many requests in flight while each waits on Triton;
uvloop/httptools keep the per-request overhead low; FastAPI publishes the OpenAPI schema from the same
pydantic models that validate requests. ``/v1/infer`` reads and validates its body itself so that every
bad input maps to one 4xx with a JSON reason and every request, good or bad, leaves one audit record.
"""

from __future__ import annotations

import itertools
import os
import time
from contextlib import asynccontextmanager

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zoo.manifest import load_manifest

from .audit_log import AuditLog
from .backend import InferenceBackend, NullBackend, TritonGrpcBackend
from .defenses import make_defense
from .errors import (Forbidden, InvalidRequest, MalformedJSON, PayloadTooLarge, RouterError, Unauthorized,
                     UnsupportedMediaType)
from .metrics import RouterMetrics
from .policies import make_policy
from .requirements import Requirements
from .selection import Selection, Selector
from .settings import RouterSettings
from .zoo_view import ZooView

API_KEY_HEADER = "x-api-key"
PIN_HEADER = "x-psml-model"  # profiling routers only (settings.allow_pinned_model)


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    inputs: list[list[float]] = Field(description="a batch of flat float32 samples, each of the zoo's input_dim")
    min_accuracy: float | None = Field(None, ge=0, le=1, description="minimum accuracy, a fraction in [0, 1]")
    max_latency_ms: float | None = Field(None, gt=0, le=600_000, description="maximum latency in milliseconds")


class InferResponse(BaseModel):
    request_id: str
    probabilities: list[list[float]]
    labels: list[int]


class ErrorBody(BaseModel):
    error: str
    detail: str


def _error_response(e: RouterError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


class Router:
    """Per-deployment state: settings, zoo view, selector, backend, audit log and metrics."""

    def __init__(self, settings: RouterSettings, backend: InferenceBackend | None = None):
        self.settings = settings
        manifest = load_manifest(settings.zoo)
        self.zoo = ZooView.from_manifest(manifest)
        self.selector = Selector(self.zoo, make_policy(settings.policy), [make_defense(d) for d in settings.defenses],
                                 settings.on_no_model, settings.seed)
        self.backend = backend
        self.audit = AuditLog(settings.audit_log, settings.audit_fsync)
        self.metrics = RouterMetrics()
        # request ids: unique per router process and cheap (uuid4 costs a syscall per request)
        self._id_prefix, self._ids = f"{os.getpid():x}{int(time.time()):x}", itertools.count(1)

    def client_of(self, request: Request) -> str:
        key = request.headers.get(API_KEY_HEADER)
        if key is None:
            raise Unauthorized(f"missing API key: send it in the {API_KEY_HEADER!r} header")
        client = self.settings.api_keys.get(key)
        if client is None:
            raise Unauthorized("unknown API key")
        return client

    async def read_body(self, request: Request) -> bytes:
        ctype = request.headers.get("content-type", "")
        if ctype.split(";")[0].strip() != "application/json":
            raise UnsupportedMediaType(f"content-type must be application/json, got {ctype or 'none'!r}")
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def parse(self, body: bytes) -> tuple[np.ndarray, Requirements]:
        try:
            req = InferRequest.model_validate_json(body)
        except ValidationError as e:
            first = e.errors()[0]
            if first["type"] == "json_invalid":
                raise MalformedJSON(f"request body is not valid JSON: {first['msg']}") from e
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise InvalidRequest(f"{where}: {first['msg']}") from e
        n, dim, limit = len(req.inputs), self.zoo.input_dim, self.settings.max_batch_size
        if n == 0:
            raise InvalidRequest("inputs is empty: send at least one sample")
        if n > limit:
            raise InvalidRequest(f"batch of {n} samples exceeds the limit of {limit}")
        bad = next((i for i, row in enumerate(req.inputs) if len(row) != dim), None)
        if bad is not None:
            raise InvalidRequest(f"inputs[{bad}] has {len(req.inputs[bad])} values; every sample needs {dim}")
        x = np.asarray(req.inputs, dtype=np.float32)
        if not np.isfinite(x).all():  # finite as float64 JSON but overflowing float32
            raise InvalidRequest("inputs hold values outside float32 range")
        return x, Requirements(req.min_accuracy, req.max_latency_ms)

    def pinned(self, request: Request, req: Requirements) -> Selection | None:
        name = request.headers.get(PIN_HEADER)
        if name is None:
            return None
        if not self.settings.allow_pinned_model:
            raise Forbidden(f"the {PIN_HEADER} header is only accepted by profiling routers (allow_pinned_model)")
        model = next((m for m in self.zoo.models if m.name == name), None)
        if model is None:
            raise InvalidRequest(f"{PIN_HEADER}: {name!r} is not a model of this zoo")
        return Selection(model, req)

    async def infer(self, request: Request) -> Response:
        t0 = time.perf_counter()
        rec: dict = {"ts": time.time(), "request_id": f"{self._id_prefix}-{next(self._ids)}", "client": None}
        try:
            rec["client"] = self.client_of(request)
            x, req = self.parse(await self.read_body(request))
            rec |= {"batch_size": len(x), "req_min_accuracy": req.min_accuracy, "req_max_latency_ms": req.max_latency_ms}
            sel = self.pinned(request, req) or self.selector.choose(req)
            rec |= {"eff_min_accuracy": sel.effective.min_accuracy, "eff_max_latency_ms": sel.effective.max_latency_ms,
                    "model": sel.model.name, "model_accuracy": sel.model.accuracy, "model_latency_ms": sel.model.latency_ms}
            t1 = time.perf_counter()
            probs = await self.backend.infer(sel.model.name, x)
            rec["triton_ms"] = (time.perf_counter() - t1) * 1e3
            body = orjson.dumps({"request_id": rec["request_id"], "probabilities": probs,
                                 "labels": probs.argmax(1)}, option=orjson.OPT_SERIALIZE_NUMPY)
            response = Response(body, media_type="application/json")
            rec |= {"status": 200, "outcome": "served"}
        except RouterError as e:
            response = self._fail(rec, e)
        except Exception as e:  # a bug must still answer JSON and leave its audit record
            response = self._fail(rec, RouterError(f"internal error: {type(e).__name__}"))
        rec["router_ms"] = (time.perf_counter() - t0) * 1e3
        self.audit.write(rec)
        self.metrics.observe(rec)
        return response

    def _fail(self, rec: dict, e: RouterError) -> JSONResponse:
        outcome = {401: "unauthorized", 403: "unauthorized", 422: "invalid", 503: "unavailable", 504: "unavailable", 500: "error"}
        rec["status"] = e.status
        rec["outcome"] = "no_model" if e.kind == "no_model_meets_requirements" else outcome.get(e.status, "invalid")
        rec["detail"] = e.detail
        if hasattr(e, "effective"):
            rec |= {"eff_min_accuracy": e.effective.min_accuracy, "eff_max_latency_ms": e.effective.max_latency_ms}
        if e.status in (503, 504):
            # Triton's own message names the model; keep it in the audit log, never in the answer.
            return JSONResponse({"error": e.kind, "detail": "the inference backend is unavailable; retry later"},
                                status_code=e.status)
        return _error_response(e)


def create_app(settings: RouterSettings, backend: InferenceBackend | None = None) -> FastAPI:
    router = Router(settings, backend)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if router.backend is None and settings.backend == "null":
            router.backend = NullBackend(router.zoo.n_classes)
        if router.backend is None:
            router.backend = TritonGrpcBackend(settings.triton_grpc_url, settings.request_timeout_ms)
        yield
        await router.backend.close()
        router.audit.close()

    app = FastAPI(title="psml router", version="1", lifespan=lifespan,
                  description="Model-zoo inference: state your minimum accuracy and maximum latency; the service picks the model.")
    app.state.router = router
    errors = {s: {"model": ErrorBody} for s in (400, 401, 403, 413, 415, 422, 503, 504)}
    body_schema = {"requestBody": {"required": True, "content": {"application/json": {"schema": InferRequest.model_json_schema()}}}}

    @app.post("/v1/infer", response_model=InferResponse, responses=errors, openapi_extra=body_schema)
    async def infer(request: Request):
        """Classify a batch under the stated requirements. The answer never names the model that served it."""
        return await router.infer(request)

    @app.get("/v1/zoo")
    async def zoo():
        """The ranges of accuracy and latency this service offers (no model names)."""
        return router.zoo.public_info(settings.max_batch_size)

    @app.get("/healthz")
    async def healthz():
        ready = await router.backend.ready()
        return JSONResponse({"status": "ok", "backend_ready": ready})

    @app.get("/metrics")
    async def metrics():
        return Response(router.metrics.exposition(), media_type=router.metrics.content_type)

    return app
