"""Router errors, all of them: each declares its HTTP status, its ``kind`` (the JSON body's ``{"error": <kind>,
"detail": <sentence>}``) and its audit ``outcome`` (what goodput counts it as). What the audit record gets
beyond that (PRADA's figures, the effective requirements after noise) and a Retry-After are given when the
error is raised, never stuck onto it afterwards."""

from __future__ import annotations

from enum import Enum


class Outcome(str, Enum):
    """Every request's audit outcome (router/goodput.py counts them; the values are the audit log's strings)."""

    SERVED = "served"  # answered 200
    SHED = "shed"  # refused for load: admission control (503 overloaded, 429 too_many_requests)
    NO_MODEL = "no_model"  # no model meets the stated requirements (422): a reject
    REFUSED = "refused"  # a per-client defense refused the key: blocked, rate-limited, budget spent
    UNAUTHORIZED = "unauthorized"  # no or unknown API key
    INVALID = "invalid"  # the client's request was wrong: malformed, too large, wrong endpoint, too slow
    UNAVAILABLE = "unavailable"  # the service could not answer: Triton, the store, the audit log
    ERROR = "error"  # a bug (500)


MAX_DETAIL_CHARS = 300  # a detail may quote client text (a header, a key): bounded in the answer and the audit log


def clip(text: str, limit: int = 60) -> str:
    """Client-supplied text quoted in an error, cut to ``limit`` characters with the original length named."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class RouterError(Exception):
    status = 500
    kind = "internal_error"
    outcome = Outcome.ERROR
    retry_after: int | None = None  # seconds, sent as Retry-After when set

    def __init__(self, detail: str, *, audit: dict | None = None, effective=None, retry_after: int | None = None):
        """``audit``: fields for the audit record only; ``effective``: the requirements selection used after
        requirement defenses (audited, never answered: it would reveal the noise drawn)."""
        detail = clip(detail, MAX_DETAIL_CHARS)
        super().__init__(detail)
        self.detail, self.audit, self.effective = detail, audit or {}, effective
        if retry_after is not None:
            self.retry_after = retry_after

    def again(self) -> "RouterError":
        """A fresh copy to raise for a remembered refusal: raising one instance again and again would chain every
        raise's frames onto its traceback (and keep those frames, request data and all, alive)."""
        return type(self)(self.detail, audit=self.audit, effective=self.effective, retry_after=self.retry_after)

    def body(self) -> dict:
        return {"error": self.kind, "detail": self.detail}


class InvalidRequest(RouterError):
    status, kind = 422, "invalid_request"
    outcome = Outcome.INVALID


class MalformedJSON(RouterError):
    status, kind = 400, "malformed_json"
    outcome = Outcome.INVALID


class Unauthorized(RouterError):
    status, kind = 401, "unauthorized"
    outcome = Outcome.UNAUTHORIZED


class WrongEndpoint(RouterError):
    """/v1/infer on an encoder zoo, /v1/embed on a classifier zoo."""

    status, kind = 404, "wrong_endpoint"
    outcome = Outcome.INVALID


class Forbidden(RouterError):
    status, kind = 403, "forbidden"
    outcome = Outcome.UNAUTHORIZED


class RequestTimeout(RouterError):
    """The body did not arrive within body_timeout_ms of the headers."""

    status, kind = 408, "request_timeout"
    outcome = Outcome.INVALID


class AuditUnavailable(RouterError):
    """The audit record could not be written (disk full, I/O error): the answer is withheld, nothing charged."""

    status, kind = 503, "audit_unavailable"
    outcome = Outcome.UNAVAILABLE
    retry_after = 5


class PayloadTooLarge(RouterError):
    status, kind = 413, "payload_too_large"
    outcome = Outcome.INVALID


class UnsupportedMediaType(RouterError):
    status, kind = 415, "unsupported_media_type"
    outcome = Outcome.INVALID


class NoModelMeetsRequirements(RouterError):
    status, kind = 422, "no_model_meets_requirements"
    outcome = Outcome.NO_MODEL


class BackendUnavailable(RouterError):
    status, kind = 503, "backend_unavailable"
    outcome = Outcome.UNAVAILABLE


class BackendTimeout(RouterError):
    status, kind = 504, "backend_timeout"
    outcome = Outcome.UNAVAILABLE


class ClientDisconnected(RouterError):
    status, kind = 400, "client_disconnected"
    outcome = Outcome.INVALID


class Overloaded(RouterError):
    status, kind = 503, "overloaded"
    outcome = Outcome.SHED
    retry_after = 1  # seconds: the queue is short, so soon is soon enough


class TooManyRequests(RouterError):
    status, kind = 429, "too_many_requests"
    outcome = Outcome.SHED
    retry_after = 1


class RateLimited(RouterError):
    """A key over its rate (query_budget, PRADA's throttle): raised with its Retry-After."""

    status, kind = 429, "rate_limited"
    outcome = Outcome.REFUSED


class BudgetExhausted(RouterError):
    status, kind = 403, "query_budget_exhausted"
    outcome = Outcome.REFUSED


class Blocked(RouterError):
    status, kind = 403, "blocked"
    outcome = Outcome.REFUSED


class BatchOverBurst(RouterError):
    """A batch larger than the bucket can ever hold: waiting would not help, so not 429."""

    status, kind = 422, "batch_over_rate_burst"
    outcome = Outcome.INVALID


class StateStoreUnavailable(RouterError):
    status, kind = 503, "state_store_unavailable"
    outcome = Outcome.UNAVAILABLE
    retry_after = 1  # seconds: a store restart or fail-over takes about that long

    def __init__(self, detail: str = "the per-client state store cannot be reached; any charge for this request "
                                     "is undone, retry later", **kw):
        super().__init__(detail, **kw)


class StateStoreReplyLost(StateStoreUnavailable):
    """The command was written but its reply never came (a stalled store, a connection cut): it may have run,
    so whatever it took must be undone (router/shared_state.py queues the undo)."""


class StateStoreContended(RouterError):
    """A key's detector state kept changing under this router's commit (other routers writing it back to back):
    the batch was not taken. Not an outage: ``state_store_fail_open`` never serves it unobserved."""

    status, kind = 503, "state_store_contended"
    outcome = Outcome.UNAVAILABLE
    retry_after = 1

    def __init__(self, detail: str = "this API key's detector state is being written by too many routers at once; "
                                     "retry later", **kw):
        super().__init__(detail, **kw)


class StateStoreError(RouterError):
    """The store refused a command (a script bug, a wrong-typed key): a 500, not an outage."""
