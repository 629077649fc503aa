"""Router errors: each maps to one HTTP status and a JSON body ``{"error": <kind>, "detail": <sentence>}``."""

from __future__ import annotations


MAX_DETAIL_CHARS = 300  # a detail may quote client text (a header, a key): bounded in the answer and the audit log


def clip(text: str, limit: int = 60) -> str:
    """Client-supplied text quoted in an error, cut to ``limit`` characters with the original length named."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class RouterError(Exception):
    status = 500
    kind = "internal_error"

    def __init__(self, detail: str):
        detail = clip(detail, MAX_DETAIL_CHARS)
        super().__init__(detail)
        self.detail = detail

    def body(self) -> dict:
        return {"error": self.kind, "detail": self.detail}


class InvalidRequest(RouterError):
    status, kind = 422, "invalid_request"


class MalformedJSON(RouterError):
    status, kind = 400, "malformed_json"


class Unauthorized(RouterError):
    status, kind = 401, "unauthorized"


class WrongEndpoint(RouterError):
    """/v1/infer on an encoder zoo, /v1/embed on a classifier zoo."""

    status, kind = 404, "wrong_endpoint"


class Forbidden(RouterError):
    status, kind = 403, "forbidden"


class RequestTimeout(RouterError):
    """The body did not arrive within body_timeout_ms of the headers."""

    status, kind = 408, "request_timeout"


class AuditUnavailable(RouterError):
    """The audit record could not be written (disk full, I/O error): the answer is withheld, nothing charged."""

    status, kind = 503, "audit_unavailable"
    retry_after = 5


class PayloadTooLarge(RouterError):
    status, kind = 413, "payload_too_large"


class UnsupportedMediaType(RouterError):
    status, kind = 415, "unsupported_media_type"


class NoModelMeetsRequirements(RouterError):
    status, kind = 422, "no_model_meets_requirements"


class BackendUnavailable(RouterError):
    status, kind = 503, "backend_unavailable"


class BackendTimeout(RouterError):
    status, kind = 504, "backend_timeout"
