"""The one error hierarchy of tollgate.

Every failure a client can see is a `GatewayError`. A subclass knows its HTTP status, its gRPC status code, the
OpenAI error type and a machine-readable code, and whether trying another target could help (`retryable`). Each
boundary maps these once: the front door renders them as OpenAI error bodies, the gRPC servicer aborts with them and
the gRPC client side rebuilds the same error from the trailing metadata (`to_metadata` / `from_metadata`), so nothing
is lost crossing processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar
from urllib.parse import quote, unquote

import grpc

from gateway.credentials import mask_credentials

_SAFE = "._-[]:/@ "
DEFAULT_RETRY_AFTER = 1  # seconds: what a 503 that knows no better asks the client to wait


class GatewayError(Exception):
    """A failure with a client-facing meaning."""

    status: ClassVar[int] = 500
    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str] = "internal_error"
    # Whether another attempt (another target, a fallback model) may succeed where this one failed.
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        # Whatever a client sent that is echoed here (a model name, a bad value) is never a key in an answer or a log.
        message = mask_credentials(message)
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = mask_credentials(param) if param else param
        self.retry_after = retry_after
        # An instance may narrow the class's status (an upstream 422 stays a 422), never its kind.
        self.http_status = status or self.status

    def to_openai(self) -> dict[str, object]:
        """The OpenAI error body: `{"error": {"message", "type", "param", "code"}}`."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}

    def to_metadata(self) -> tuple[tuple[str, str], ...]:
        """Trailing gRPC metadata that lets the other side rebuild this error exactly."""
        # gRPC metadata values must be printable ASCII; code and param come from clients and providers.
        md = [
            ("tollgate-error-code", quote(self.code, safe=_SAFE)),
            ("tollgate-error-class", type(self).__name__),
            ("tollgate-http-status", str(self.http_status)),
        ]
        if self.param is not None:
            md.append(("tollgate-error-param", quote(self.param, safe=_SAFE)))
        if self.retry_after is not None:
            md.append(("retry-after", _format_seconds(self.retry_after)))
        return tuple(md)

    @staticmethod
    def from_metadata(code: grpc.StatusCode, message: str, metadata: Iterable[tuple[str, str | bytes]]) -> GatewayError:
        """Rebuild the error a servicer aborted with; a status from elsewhere maps by its gRPC code alone."""
        md: Mapping[str, str | bytes] = dict(metadata)
        cls = _BY_NAME.get(str(md.get("tollgate-error-class", "")), _BY_GRPC_CODE.get(code, InternalError))
        status = md.get("tollgate-http-status")
        retry_after = md.get("retry-after")
        param = md.get("tollgate-error-param")
        err_code = md.get("tollgate-error-code")
        return cls(
            message,
            code=unquote(str(err_code)) if err_code else None,
            param=unquote(str(param)) if param is not None else None,
            retry_after=float(retry_after) if retry_after else None,
            status=int(status) if status and str(status).isdigit() else None,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.http_status}, {self.code!r}, {self.message!r})"


class InvalidRequestError(GatewayError):
    """The request is malformed or has a bad parameter."""

    status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    error_type = "invalid_request_error"
    default_code = "invalid_request"


class AuthenticationError(GatewayError):
    """No credentials, or credentials that are not valid."""

    status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    """Valid credentials that may not do this."""

    status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    error_type = "permission_error"
    default_code = "permission_denied"


def model_not_allowed(model: str) -> PermissionDeniedError:
    """The 403 for a model the caller's key may not use: the name it asked for, or what that name resolves to (which
    the message does not name: where a name leads is the operator's business)."""
    return PermissionDeniedError(
        f"This API key may not use the model '{model}'", param="model", code="model_not_allowed"
    )


class NotFoundError(GatewayError):
    """The model or route does not exist."""

    status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class RequestTooLargeError(GatewayError):
    """The request body is over the configured limit."""

    status = 413
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RequestTimeoutError(GatewayError):
    """The client took too long to send its request (a body that trickles or never ends)."""

    status = 408
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class RateLimitError(GatewayError):
    """A limit is exhausted, the gateway's own or a provider's."""

    status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"
    retryable = True


class InternalError(GatewayError):
    """A bug in tollgate; the message never carries internals."""


class UpstreamError(GatewayError):
    """The provider failed (5xx, a broken answer)."""

    status = 502
    grpc_code = grpc.StatusCode.UNAVAILABLE
    error_type = "api_error"
    default_code = "upstream_error"
    retryable = True


class UpstreamConnectionError(UpstreamError):
    """The provider could not be reached."""

    default_code = "upstream_connection_error"


class UpstreamCredentialsError(UpstreamError):
    """The provider refused the gateway's own credentials: a configuration problem, not the client's."""

    default_code = "upstream_credentials_rejected"


class ServiceUnavailableError(GatewayError):
    """Nothing can answer right now (provider overloaded, every target failed, shutting down)."""

    status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    error_type = "api_error"
    default_code = "service_unavailable"
    retryable = True


class ShuttingDownError(ServiceUnavailableError):
    """The process is stopping and its shutdown grace is over: what it still serves is cut here."""

    default_code = "shutting_down"

    def __init__(self, message: str = "The gateway is shutting down; retry the request", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class UpstreamTimeoutError(GatewayError):
    """The provider did not answer in time (connect, first byte, or idle during a stream)."""

    status = 504
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    error_type = "api_error"
    default_code = "upstream_timeout"
    retryable = True


class DeadlineExceededError(GatewayError):
    """The caller's own deadline (a gRPC deadline) passed before the answer was complete: no target's fault."""

    status = 504
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    error_type = "api_error"
    default_code = "deadline_exceeded"

    def __init__(self, message: str = "The request's deadline passed before the answer was complete", **kwargs: Any):
        super().__init__(message, **kwargs)


class UpstreamRequestError(GatewayError):
    """The provider rejected the request itself (a 4xx other than auth and limits); the client sees its status."""

    status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    error_type = "invalid_request_error"
    default_code = "upstream_rejected_request"


def _subclasses(cls: type[GatewayError]) -> list[type[GatewayError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_subclasses(sub))
    return found


_BY_NAME: dict[str, type[GatewayError]] = {c.__name__: c for c in _subclasses(GatewayError)}
_BY_GRPC_CODE: dict[grpc.StatusCode, type[GatewayError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimitError,
    grpc.StatusCode.UNAVAILABLE: ServiceUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UpstreamTimeoutError,
    grpc.StatusCode.CANCELLED: ServiceUnavailableError,
}


def retry_after_header(error: GatewayError) -> str | None:
    """The `Retry-After` an HTTP answer to `error` carries: the error's own estimate in whole seconds (at least 1),
    else `DEFAULT_RETRY_AFTER` for every 503, so no client is told "unavailable" without when to come back."""
    if error.retry_after is not None:
        return str(max(1, round(error.retry_after)))
    if error.http_status == 503:
        return str(DEFAULT_RETRY_AFTER)
    return None


def _format_seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.3f}"
