"""The router's HTTP API: FastAPI for the schema and the small endpoints, plain ASGI for ``POST /v1/infer``.

Why this split: measured with py-spy under load, the FastAPI/Starlette middleware and routing layers took a
quarter of the router's CPU per forwarded request; the hot path is one coroutine on the raw ASGI interface
(uvicorn with uvloop and httptools), the same code answers whether FastAPI or the ASGI entry receives it,
and FastAPI still publishes the OpenAPI schema of every route. Every bad input maps to one 4xx with a JSON
reason, and every request, good or bad, leaves one audit record.
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
from pydantic import BaseModel

from zoo.manifest import ENDPOINTS, load_manifest

from .admission import Admission, Overloaded, TooManyRequests
from .audit_log import AuditLog
from .backend import InferenceBackend, make_backend
from .defenses import check_combination, is_client_defense, is_output_defense, is_timing_defense, make_defense
from .errors import Forbidden, InvalidRequest, PayloadTooLarge, RouterError, Unauthorized, WrongEndpoint
from .infer_request import BINARY, media_type, openapi_body_schema, parse_binary, parse_json
from .metrics import RouterMetrics
from .policies import make_policy
from .requirements import Requirements
from .selection import Selection, Selector
from .settings import RouterSettings
from .workers import WorkerIdentity
from .zoo_view import ZooView

API_KEY_HEADER = "x-api-key"
SERVED_PATHS = tuple(ENDPOINTS.values())  # the hot path for either kind; the other kind's path answers 404
PIN_HEADER = "x-psml-model"  # profiling routers only (settings.allow_pinned_model)
# a client defense refused the request (blocked, rate-limited, budget spent): counted against the service in
# goodput, since a benign client refused by a false positive loses service
REFUSALS = ("blocked", "rate_limited", "query_budget_exhausted")
OUTCOMES = {401: "unauthorized", 403: "unauthorized", 422: "invalid", 503: "unavailable", 504: "unavailable",
            500: "error"}


class InferResponse(BaseModel):
    request_id: str
    probabilities: list[list[float]]
    labels: list[int]


class EmbedResponse(BaseModel):
    request_id: str
    embeddings: list[list[float]]


class ErrorBody(BaseModel):
    error: str
    detail: str


class ClientDisconnected(RouterError):
    status, kind = 400, "client_disconnected"


class Router:
    """Per-worker state: settings, zoo view, selector, backend, admission control, audit log and metrics."""

    def __init__(self, settings: RouterSettings, backend: InferenceBackend | None = None,
                 worker: WorkerIdentity | None = None):
        self.settings = settings
        self.worker = worker or WorkerIdentity.single()
        manifest = load_manifest(settings.zoo)
        self.zoo = ZooView.from_manifest(manifest)
        defenses = [make_defense(d) for d in settings.defenses]
        check_combination(defenses, self.zoo, settings.workers)
        self.selector = Selector(self.zoo, make_policy(settings.policy), defenses,
                                 settings.on_no_model, self.worker.seed_sequence(settings.seed))
        self.output_defenses = [(d, r) for d, r in self.selector.streams if is_output_defense(d)]
        self.client_defenses = [d for d in defenses if is_client_defense(d)]
        self.client_output_defenses = [d for d in self.client_defenses if hasattr(d, "perturb_client_output")]
        self.timing_defense = next((d for d in defenses if is_timing_defense(d)), None)
        self.backend = backend
        self.admission = Admission(settings.max_in_flight, settings.max_in_flight_per_client)
        self.audit = AuditLog(settings.audit_log, settings.audit_fsync)
        self.metrics = RouterMetrics()
        # request ids: unique per router process and cheap (uuid4 costs a syscall per request)
        self._id_prefix, self._ids = f"{os.getpid():x}{int(time.time()):x}", itertools.count(1)

    def client_of(self, headers: dict[str, str]) -> str:
        key = headers.get(API_KEY_HEADER)
        if key is None:
            raise Unauthorized(f"missing API key: send it in the {API_KEY_HEADER!r} header")
        client = self.settings.api_keys.get(key)
        if client is None:
            raise Unauthorized("unknown API key")
        return client

    async def read_body(self, headers: dict[str, str], receive) -> bytes:
        limit = self.settings.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected("the client closed the connection before sending its whole body")
            chunk, more = message.get("body", b""), message.get("more_body", False)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def parse(self, kind: str, body: bytes, headers: dict[str, str]) -> tuple[np.ndarray, Requirements]:
        if kind == BINARY:
            return parse_binary(body, headers, self.zoo.sample_shape, self.settings.max_batch_size)
        return parse_json(body, self.zoo.sample_shape, self.settings.max_batch_size)

    def pinned(self, headers: dict[str, str], req: Requirements) -> Selection | None:
        name = headers.get(PIN_HEADER)
        if name is None:
            return None
        if not self.settings.allow_pinned_model:
            raise Forbidden(f"the {PIN_HEADER} header is only accepted by profiling routers (allow_pinned_model)")
        model = next((m for m in self.zoo.models if m.name == name), None)
        if model is None:
            raise InvalidRequest(f"{PIN_HEADER}: {name!r} is not a model of this zoo")
        return Selection(model, req)

    async def infer(self, headers: dict[str, str], receive, endpoint: str = "/v1/infer"
                    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """One request, from its headers and ASGI ``receive`` to (status, JSON body, extra headers).
        ``endpoint``: /v1/infer (classifier zoos: probabilities, labels) or /v1/embed (encoder zoos: embeddings)."""
        t0 = time.perf_counter()
        rec: dict = {"ts": time.time(), "request_id": f"{self._id_prefix}-{next(self._ids)}", "client": None,
                     "worker": self.worker.index}
        admitted = False
        try:
            if endpoint != self.zoo.endpoint:
                raise WrongEndpoint(f"this zoo serves {self.zoo.kind}s: POST {self.zoo.endpoint}, not {endpoint}")
            rec["client"] = client = self.client_of(headers)
            self.admission.enter(client)
            admitted = True
            kind = media_type(headers.get("content-type", ""))
            x, req = self.parse(kind, await self.read_body(headers, receive), headers)
            rec |= {"batch_size": len(x), "req_min_accuracy": req.min_accuracy, "req_max_latency_ms": req.max_latency_ms}
            for d in self.client_defenses:
                d.admit(client, len(x), time.monotonic())
            sel = self.pinned(headers, req) or self.selector.choose(req)
            rec |= {"eff_min_accuracy": sel.effective.min_accuracy, "eff_max_latency_ms": sel.effective.max_latency_ms,
                    "model": sel.model.name, "model_accuracy": sel.model.accuracy, "model_latency_ms": sel.model.latency_ms}
            t1 = time.perf_counter()
            probs = await self.backend.infer(sel.model.name, self.zoo.to_model(x))
            rec["triton_ms"] = (time.perf_counter() - t1) * 1e3
            encoder = self.zoo.kind == "encoder"
            labels = None if encoder else probs.argmax(1)  # an encoder's output: embeddings, no classes
            for d in self.client_defenses:  # before the answer leaves: a detector may still withhold it
                rec |= d.observe(client, x, labels) or {}
            for d, rng in self.output_defenses:
                probs, labels = d.perturb_output(probs, labels, rng)
            for d in self.client_output_defenses:  # per-key perturbation by the key's history (b4b)
                probs, fields = d.perturb_client_output(client, probs)
                rec |= fields
            payload = {"request_id": rec["request_id"], "embeddings": probs} if encoder else \
                {"request_id": rec["request_id"], "probabilities": probs, "labels": labels}
            answer = status, body, extra = 200, orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), []
            rec |= {"status": 200, "outcome": "served"}
            if self.timing_defense is not None:
                elapsed_ms = (time.perf_counter() - t0) * 1e3
                hold_ms = self.timing_defense.hold_until_ms(elapsed_ms) - elapsed_ms
                if hold_ms > 0:
                    rec["padded_ms"] = hold_ms
                    await self.timing_defense.wait_until(t0 + (elapsed_ms + hold_ms) / 1e3)
        except RouterError as e:
            answer = self._fail(rec, e)
        except Exception as e:  # a bug must still answer JSON and leave its audit record
            answer = self._fail(rec, RouterError(f"internal error: {type(e).__name__}"))
        finally:
            if admitted:
                self.admission.leave(rec["client"])
        rec["router_ms"] = (time.perf_counter() - t0) * 1e3
        self.audit.write(rec)
        self.metrics.observe(rec)
        return answer

    def _fail(self, rec: dict, e: RouterError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        rec["status"] = e.status
        shed = isinstance(e, (Overloaded, TooManyRequests))
        rec["outcome"] = ("shed" if shed else "no_model" if e.kind == "no_model_meets_requirements"
                          else "refused" if e.kind in REFUSALS else OUTCOMES.get(e.status, "invalid"))
        rec["detail"] = e.detail
        rec |= getattr(e, "audit", None) or {}
        if hasattr(e, "effective"):
            rec |= {"eff_min_accuracy": e.effective.min_accuracy, "eff_max_latency_ms": e.effective.max_latency_ms}
        if hasattr(e, "retry_after"):  # shed by admission control, or rate-limited by a client defense
            return e.status, orjson.dumps(e.body()), [(b"retry-after", str(e.retry_after).encode())]
        if e.status in (503, 504):
            # Triton's own message names the model; keep it in the audit log, never in the answer.
            return e.status, orjson.dumps({"error": e.kind, "detail": "the inference backend is unavailable; retry later"}), []
        return e.status, orjson.dumps(e.body()), []


def _str_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}


class RouterApp:
    """The ASGI entry point: ``POST /v1/infer`` goes straight to the router, everything else to FastAPI."""

    def __init__(self, router: Router, api: FastAPI):
        self.router, self.api = router, api

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] in SERVED_PATHS and scope["method"] == "POST":
            status, body, extra = await self.router.infer(_str_headers(scope["headers"]), receive, scope["path"])
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]})
            await send({"type": "http.response.body", "body": body})
        else:
            await self.api(scope, receive, send)


def create_app(settings: RouterSettings, backend: InferenceBackend | None = None,
               worker: WorkerIdentity | None = None) -> RouterApp:
    router = Router(settings, backend, worker)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if router.backend is None:
            router.backend = make_backend(settings, router.zoo)
        yield
        await router.backend.close()
        router.audit.close()

    api = FastAPI(title="psml router", version="1", lifespan=lifespan,
                  description="Model-zoo inference: state your minimum accuracy and maximum latency; the service picks the model.")
    api.state.router = router
    errors = {s: {"model": ErrorBody} for s in (400, 401, 403, 404, 413, 415, 422, 429, 503, 504)}

    encoder = router.zoo.kind == "encoder"

    @api.post(router.zoo.endpoint, response_model=EmbedResponse if encoder else InferResponse, responses=errors,
              openapi_extra=openapi_body_schema(router.zoo.sample_shape, settings.max_batch_size))
    async def infer(request: Request):
        """Classify a batch (/v1/infer) or embed it (/v1/embed, encoder zoos) under the stated requirements. The
        answer never names the model that served it. Over a bound on requests in flight the answer is 503 (this
        worker) or 429 (your client), with Retry-After; the other zoo kind's path answers 404. The router's ASGI
        entry serves this path itself; this handler runs the same code."""
        status, body, extra = await router.infer(_str_headers(request.headers.raw), request.receive,
                                                 router.zoo.endpoint)
        return Response(body, status_code=status, media_type="application/json",
                        headers={k.decode(): v.decode() for k, v in extra})

    @api.get("/v1/zoo")
    async def zoo():
        """The ranges of accuracy and latency this service offers (no model names)."""
        return router.zoo.public_info(settings.max_batch_size)

    @api.get("/healthz")
    async def healthz():
        ready = await router.backend.ready()
        return JSONResponse({"status": "ok", "backend_ready": ready})

    @api.get("/metrics", response_class=Response, responses={200: {"content": {
        "text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text exposition format"}})
    async def metrics():
        """Prometheus metrics, summed over every worker of this router."""
        return Response(router.metrics.exposition(), media_type=router.metrics.content_type)

    return RouterApp(router, api)
