"""The router's HTTP API: FastAPI for the schema and the small endpoints, plain ASGI for ``POST /v1/infer``.

Why this split: measured with py-spy under load, the FastAPI/Starlette middleware and routing layers took a
quarter of the router's CPU per forwarded request; the hot path is one coroutine on the raw ASGI interface
(uvicorn with uvloop and httptools), the same code answers whether FastAPI or the ASGI entry receives it,
and FastAPI still publishes the OpenAPI schema of every route. Every bad input maps to one 4xx with a JSON
reason, and every request to the inference endpoint, good or bad, leaves one audit record (the small
endpoints, /healthz, /v1/zoo, /openapi.json, and refusals by the HTTP layer itself, 400/405/431, leave none).
"""

from __future__ import annotations

import asyncio
import hmac
import re
import signal
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from .app import SERVED_PATHS, Router
from .backend import InferenceBackend, make_backend
from .infer_request import openapi_body_schema
from .settings import RouterSettings
from .workers import WorkerIdentity


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


def _str_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}


async def _send_json(send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


NOT_FOUND = orjson.dumps({"error": "not_found", "detail": "no such path"})
BAD_PATH = orjson.dumps({"error": "bad_path", "detail": "the path holds control characters"})
PRINTABLE_PATH = re.compile(r"[^\x00-\x1f\x7f]*")


class RouterApp:
    """The ASGI entry point: ``POST /v1/infer`` goes straight to the router, everything else to FastAPI.

    /metrics is not for clients (it names every client and counts, per client, requests that met what they
    asked): on the metrics listener it is all there is; on the request listener it answers 404 unless the
    request carries the metrics token."""

    def __init__(self, router: Router, api: FastAPI):
        self.router, self.api = router, api
        s = router.settings
        self.metrics_port = s.metrics_port
        self.metrics_auth = None if s.metrics_token is None else f"Bearer {s.metrics_token}".encode()

    def _metrics_allowed(self, scope) -> bool:
        if self.metrics_auth is None:
            return self._on_metrics_listener(scope)
        given = dict(scope["headers"]).get(b"authorization", b"")
        return hmac.compare_digest(given, self.metrics_auth)

    def _on_metrics_listener(self, scope) -> bool:
        server = scope.get("server")
        return self.metrics_port is not None and server is not None and server[1] == self.metrics_port

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.api(scope, receive, send)
        elif not PRINTABLE_PATH.fullmatch(scope["path"]):  # '/metrics%0A' matched FastAPI's '^/metrics$'
            await _send_json(send, 400, BAD_PATH)
        elif scope["path"] == "/metrics" or self._on_metrics_listener(scope):
            if scope["path"] == "/metrics" and scope["method"] == "GET" and self._metrics_allowed(scope):
                await self.api(scope, receive, send)
            else:
                await _send_json(send, 404, NOT_FOUND)
        elif scope["path"] in SERVED_PATHS and scope["method"] == "POST":
            await _send_json(send, *await self.router.infer(_str_headers(scope["headers"]), receive, scope["path"]))
        else:
            await self.api(scope, receive, send)


def create_app(settings: RouterSettings, backend: InferenceBackend | None = None,
               worker: WorkerIdentity | None = None) -> RouterApp:
    router = Router(settings, backend, worker)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if router.backend is None:
            router.backend = make_backend(settings, router.zoo)
        # logrotate's postrotate (kill -HUP): write to the new file at once, not on the next inode check
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, router.audit.reopen)
        yield
        await router.backend.close()
        if router.store is not None:
            await router.shared.close()  # leases' unused samples back, PRADA's staged batches in
            await router.store.close()
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
        """The router is up; whether Triton is ready and, with a state store, whether it is reachable (each asked at
        most once a second)."""
        body = {"status": "ok", "backend_ready": await router.backend_ready()}
        if router.store is not None:
            body["state_store_reachable"] = await router.store_reachable()
        return JSONResponse(body)

    # not in the public schema: the operator's page (its own listener or a token), not part of the client API
    @api.get("/metrics", response_class=Response, include_in_schema=False)
    async def metrics(request: Request):
        """Prometheus metrics, summed over every worker of this router. Only on the metrics listener
        (metrics_port) or with the metrics token (Authorization: Bearer); 404 otherwise."""
        if not app._metrics_allowed(request.scope):  # the ASGI entry checks first; any other way in, again here
            return Response(NOT_FOUND, status_code=404, media_type="application/json")
        return Response(router.metrics.exposition(), media_type=router.metrics.content_type)

    app = RouterApp(router, api)
    return app
