"""The router's request path: per worker, one ``Router`` takes a request from its headers and body to its answer
and its audit record (key, body under a deadline, admission, parsing, client defenses, selection, inference,
output defenses, padding, audit). The HTTP layer around it is router/asgi.py."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import secrets
import sys
import time

import numpy as np
import orjson

from zoo.manifest import ENDPOINTS, load_manifest

from .admission import Admission
from .audit_log import AuditLog, AuditRecord
from .backend import InferenceBackend
from .defenses import check_combination, is_client_defense, is_output_defense, is_timing_defense, make_defense
from .errors import (AuditUnavailable, ClientDisconnected, Forbidden, InvalidRequest, Outcome, PayloadTooLarge,
                     RequestTimeout, RouterError, Unauthorized, WrongEndpoint, clip)
from .infer_request import BINARY, body_limit_bytes, media_type, parse_binary, parse_json
from .metrics import RouterMetrics
from .policies import make_policy
from .requirements import Requirements
from .selection import Selection, Selector
from .settings import RouterSettings
from .workers import WorkerIdentity, fresh_seed
from .zoo_view import ZooView

API_KEY_HEADER = "x-api-key"
SERVED_PATHS = tuple(ENDPOINTS.values())  # the hot path for either kind; the other kind's path answers 404
DIGITS = re.compile(r"[0-9]{1,15}")  # a Content-Length we will compare (isdigit() takes '²'; int() refuses 4,300 digits)
PIN_HEADER = "x-psml-model"  # profiling routers only (settings.allow_pinned_model)


class Router:
    """Per-worker state: settings, zoo view, selector, backend, admission control, audit log and metrics."""

    def __init__(self, settings: RouterSettings, backend: InferenceBackend | None = None,
                 worker: WorkerIdentity | None = None):
        self.settings = settings
        self.worker = worker or WorkerIdentity.single()
        # no seed given: fresh OS entropy (a deployment must not be predictable from the public code); the seed
        # used goes into every audit record so that a run can be replayed
        self.seed = settings.seed if settings.seed is not None else fresh_seed()
        manifest = load_manifest(settings.zoo)
        self.zoo = ZooView.from_manifest(manifest)
        defenses = [make_defense(d) for d in settings.defenses]
        check_combination(defenses, self.zoo, settings.workers, settings.state_store is not None)
        self.selector = Selector(self.zoo, make_policy(settings.policy), defenses,
                                 settings.on_no_model, self.worker.seed_sequence(self.seed))
        self.output_defenses = [(d, r) for d, r in self.selector.streams if is_output_defense(d)]
        self.client_defenses = [d for d in defenses if is_client_defense(d)]
        self.client_output_defenses = [d for d in self.client_defenses if hasattr(d, "perturb_client_output")]
        for d, rng in self.selector.streams:  # b4b's answer noise from this worker's branch of the seed tree
            if hasattr(d, "use_noise_stream"):
                d.use_noise_stream(rng)
        self.timing_defense = next((d for d in defenses if is_timing_defense(d)), None)
        self.backend = backend
        self.store = self.shared = None  # per-client state in this process (state_store null)
        if settings.state_store is not None:
            from .shared_state import SharedClientState  # the store client (hiredis) only when one is configured
            from .state_store import StateStore

            self.store = StateStore(settings.state_store, settings.state_store_connect_timeout_ms,
                                    settings.state_store_socket_timeout_ms, settings.state_store_retry_ms)
            self.shared = SharedClientState(self.store, self.client_defenses, settings.max_in_flight_per_client,
                                            settings.state_store_slot_lease_ms, settings.state_store_fail_open,
                                            settings.state_store_prefix, settings.state_store_recheck_ms,
                                            settings.state_store_budget_lease_samples,
                                            settings.state_store_budget_lease_ms,
                                            settings.state_store_prada_commit_ms,
                                            settings.state_store_prada_commit_samples,
                                            settings.state_store_slot_hold_ms,
                                            # the longest a request may take: its body, a backend call and its
                                            # one retry (a wait for budget leases is added where they are on)
                                            settings.body_timeout_ms + 2 * settings.request_timeout_ms)
        # with a store, the bound per client is the store's (over every worker); this worker's own bound stays here
        self.admission = Admission(settings.max_in_flight, None if self.shared else settings.max_in_flight_per_client)
        self.audit = AuditLog(settings.audit_log, settings.audit_fsync)
        self.audit_failures = 0
        self.metrics = RouterMetrics()
        # request ids: unique and cheap, but unlinkable: a keyed hash of a counter (a raw counter told a client how
        # many requests others sent between two of its own, and the prefix named the worker's pid)
        self._id_key, self._ids = secrets.token_bytes(16), itertools.count(1)
        self.receiving = Admission(None, settings.max_in_flight_per_client, "request bodies")  # before admission
        self._ready: tuple[float, bool] = (0.0, False)  # /healthz: (monotonic time, backend ready), cached
        self._store_ok: tuple[float, bool] = (0.0, False)  # /healthz: (monotonic time, store reachable), cached

    def _request_id(self) -> str:
        return hashlib.blake2b(next(self._ids).to_bytes(8, "little"), key=self._id_key, digest_size=9).hexdigest()

    async def backend_ready(self) -> bool:
        """Triton's readiness, asked at most once a second (an unauthenticated /healthz flood cost a Triton round
        trip each, and benign p50 6.4 -> 11.5 ms)."""
        at, ready = self._ready
        if time.monotonic() - at > 1.0:
            ready = await self.backend.ready()
            self._ready = (time.monotonic(), ready)
        return ready

    async def store_reachable(self) -> bool | None:
        """Whether the state store answers PING (None: no store), asked at most once a second like Triton."""
        if self.store is None:
            return None
        at, ok = self._store_ok
        if time.monotonic() - at > 1.0:
            ok = await self.store.reachable()
            self._store_ok = (time.monotonic(), ok)
        return ok

    def client_of(self, headers: dict[str, str]) -> str:
        key = headers.get(API_KEY_HEADER)
        if key is None:
            raise Unauthorized(f"missing API key: send it in the {API_KEY_HEADER!r} header")
        client = self.settings.api_keys.get(key)
        if client is None:
            raise Unauthorized("unknown API key")
        return client

    async def read_body(self, headers: dict[str, str], receive, kind: str) -> bytes:
        """The whole body, within body_timeout_ms and under the most bytes a valid body of ``kind`` can hold."""
        limit = body_limit_bytes(kind, self.zoo.sample_shape, self.settings.max_batch_size, self.settings.max_body_bytes)
        declared = headers.get("content-length")
        if declared is not None and (not DIGITS.fullmatch(declared) or int(declared) > limit):
            raise PayloadTooLarge(f"request body of {clip(declared)} bytes exceeds the limit of {limit} bytes for "
                                  f"{self.settings.max_batch_size} samples as {kind}")
        try:
            async with asyncio.timeout(self.settings.body_timeout_ms / 1e3):
                return await self._receive_all(receive, limit)
        except TimeoutError:
            raise RequestTimeout(f"the body did not arrive within {self.settings.body_timeout_ms:g} ms") from None

    async def _body_of(self, client: str, headers: dict[str, str], receive, kind: str) -> bytes:
        """The body, with at most max_in_flight_per_client bodies of one key being received at once (bodies wait
        in memory before admission: 190 stalled near-full bodies of one key held 60 MiB)."""
        self.receiving.enter(client)
        try:
            return await self.read_body(headers, receive, kind)
        finally:
            self.receiving.leave(client)

    def _penalize(self, client: str, body_bytes: int) -> None:
        """A malformed body's rows, as many as its bytes could carry as float32, come out of the key's rate."""
        rows = max(1, min(self.settings.max_batch_size, body_bytes // (4 * self.zoo.input_dim)))
        if self.shared is not None:
            self.shared.penalize(client, rows)
            return
        now = time.monotonic()
        for d in self.client_defenses:
            if hasattr(d, "penalize"):
                d.penalize(client, rows, now)

    @staticmethod
    async def _receive_all(receive, limit: int) -> bytes:
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
            raise InvalidRequest(f"{PIN_HEADER}: {clip(name)!r} is not a model of this zoo")
        return Selection(model, req)

    async def infer(self, headers: dict[str, str], receive, endpoint: str = "/v1/infer"
                    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """One request, from its headers and ASGI ``receive`` to (status, JSON body, extra headers).
        ``endpoint``: /v1/infer (classifier zoos: probabilities, labels) or /v1/embed (encoder zoos: embeddings).

        Order: key, media type and the whole body (under a deadline) before admission, so a slow client holds a
        connection, never a slot; then parsing, the client defenses, selection, inference. Once a model has been
        selected every answer, error or not, is held to the timing defense's floor. No answer leaves without its
        audit record: when the record cannot be written the answer becomes a 503 and the client is not charged."""
        t0 = time.perf_counter()
        rec: AuditRecord = {"ts": time.time(), "request_id": self._request_id(), "client": None,
                     "worker": self.worker.index, "seed": self.seed}
        admitted, charged, selected, shared = False, [], False, self.shared
        try:
            if endpoint != self.zoo.endpoint:
                raise WrongEndpoint(f"this zoo serves {self.zoo.kind}s: POST {self.zoo.endpoint}, not {endpoint}")
            rec["client"] = client = self.client_of(headers)
            kind = media_type(headers.get("content-type", ""))
            now = time.monotonic()
            for d in () if shared else self.client_defenses:  # a blocked, spent or rate-limited key: refused unread
                if hasattr(d, "precheck"):
                    d.precheck(client, now)
            if shared:
                shared.precheck(client)
            body = await self._body_of(client, headers, receive, kind)
            self.admission.enter(client)
            admitted = True
            try:
                x, req = self.parse(kind, body, headers)
            except RouterError:
                self._penalize(client, len(body))
                raise
            rec |= {"batch_size": len(x), "req_min_accuracy": req.min_accuracy, "req_max_latency_ms": req.max_latency_ms}
            if shared:  # one round trip: the key's slot, budget, rate and flag together
                admitted_how = await shared.admit(client, rec["request_id"], len(x))
                rec |= admitted_how
                if "state_store" not in admitted_how:  # fail-open with the store away charged nothing to refund
                    charged.append(shared)
            for d in () if shared else self.client_defenses:
                d.admit(client, len(x), time.monotonic())
                charged.append(d)
            sel = self.pinned(headers, req) or self.selector.choose(req)
            selected = True
            rec |= {"eff_min_accuracy": sel.effective.min_accuracy, "eff_max_latency_ms": sel.effective.max_latency_ms,
                    "model": sel.model.name, "model_accuracy": sel.model.accuracy, "model_latency_ms": sel.model.latency_ms}
            t1 = time.perf_counter()
            probs = await self.backend.infer(sel.model.name, self.zoo.to_model(x))
            rec["triton_ms"] = (time.perf_counter() - t1) * 1e3
            encoder = self.zoo.kind == "encoder"
            labels = None if encoder else probs.argmax(1)  # an encoder's output: embeddings, no classes
            if shared:
                rec |= await shared.observe(client, x, labels)
            for d in () if shared else self.client_defenses:  # before the answer leaves: a detector may withhold it
                rec |= d.observe(client, x, labels) or {}
            for d, rng in self.output_defenses:
                probs, labels = d.perturb_output(probs, labels, rng)
            if shared:
                probs, fields = await shared.perturb_client_output(client, probs)
                rec |= fields
            for d in () if shared else self.client_output_defenses:  # per-key perturbation by its history (b4b)
                probs, fields = d.perturb_client_output(client, probs)
                rec |= fields
            payload = {"request_id": rec["request_id"], "embeddings": probs} if encoder else \
                {"request_id": rec["request_id"], "probabilities": probs, "labels": labels}
            answer = 200, orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), []
            rec |= {"status": 200, "outcome": Outcome.SERVED.value}
        except RouterError as e:
            answer = self._fail(rec, e)
        except Exception as e:  # a bug must still answer JSON and leave its audit record
            answer = self._fail(rec, RouterError(f"internal error: {type(e).__name__}"))
        try:
            if selected and self.timing_defense is not None:  # errors after selection too: their time names the model
                await self._pad(rec, t0)
        finally:
            if admitted:
                self.admission.leave(rec["client"])
            if shared is not None and shared in charged:
                shared.leave(rec["client"], rec["request_id"])
        rec["router_ms"] = (time.perf_counter() - t0) * 1e3
        try:
            self.audit.write(rec)
        except Exception as e:  # ENOSPC, EIO, or a record that cannot be encoded: never answer without it
            answer = self._unrecorded(rec, e, charged)
        self.metrics.observe(rec)
        return answer

    async def _pad(self, rec: dict, t0: float) -> None:
        elapsed_ms = (time.perf_counter() - t0) * 1e3
        batch = rec.get("batch_size") or 1
        hold_ms = self.timing_defense.hold_until_ms(elapsed_ms, batch) - elapsed_ms
        if rec.get("status") == 200:  # answers teach the floor how long the slowest model takes now
            self.timing_defense.observe(batch, elapsed_ms)
        if hold_ms > 0:
            rec["padded_ms"] = hold_ms
            await self.timing_defense.wait_until(t0 + (elapsed_ms + hold_ms) / 1e3)

    def _unrecorded(self, rec: dict, e: Exception, charged: list) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """The audit record could not be written: withhold the answer, refund what the client defenses charged."""
        for d in charged:
            if hasattr(d, "refund"):
                d.refund(rec["client"], rec.get("batch_size") or 0)
        self.audit_failures += 1
        if self.audit_failures == 1 or self.audit_failures % 1000 == 0:  # say it, without a line per request
            print(f"router: error: audit log {self.settings.audit_log} cannot be written ({getattr(e, 'strerror', None) or e}); answering "
                  f"503 audit_unavailable ({self.audit_failures} so far)", file=sys.stderr, flush=True)
        answer = self._fail(rec, AuditUnavailable("the service cannot record this request; nothing was charged, "
                                                  "retry later"))
        try:  # the refusal's own record, if the failure has passed (a rotated file, space freed)
            self.audit.write(rec)
        except Exception:
            pass
        return answer

    def _fail(self, rec: dict, e: RouterError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        rec |= {"status": e.status, "outcome": e.outcome.value, "detail": e.detail} | e.audit
        if e.effective is not None:
            rec |= {"eff_min_accuracy": e.effective.min_accuracy, "eff_max_latency_ms": e.effective.max_latency_ms}
        if e.retry_after is not None:  # shed by admission control, or rate-limited by a client defense
            return e.status, orjson.dumps(e.body()), [(b"retry-after", str(e.retry_after).encode())]
        if e.status in (503, 504):
            # Triton's own message names the model; keep it in the audit log, never in the answer.
            return e.status, orjson.dumps({"error": e.kind, "detail": "the inference backend is unavailable; retry later"}), []
        if e.status == 408:  # the rest of the body may still be on its way: do not keep the connection
            return e.status, orjson.dumps(e.body()), [(b"connection", b"close")]
        return e.status, orjson.dumps(e.body()), []
