"""The error hierarchy: every error survives the trip through gRPC metadata, and renders as OpenAI's error body."""

from __future__ import annotations

import grpc
import pytest

from gateway.errors import (
    AuthenticationError,
    DeadlineExceededError,
    GatewayError,
    InternalError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    RequestTooLargeError,
    ServiceUnavailableError,
    ShuttingDownError,
    UpstreamConnectionError,
    UpstreamCredentialsError,
    UpstreamError,
    UpstreamRequestError,
    UpstreamTimeoutError,
    retry_after_header,
)

# Each class with what a client sees: HTTP status, gRPC code, OpenAI type, default code, retryable.
CLASSES: list[tuple[type[GatewayError], int, grpc.StatusCode, str, str, bool]] = [
    (GatewayError, 500, grpc.StatusCode.INTERNAL, "server_error", "internal_error", False),
    (InvalidRequestError, 400, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request_error", "invalid_request", False),
    (AuthenticationError, 401, grpc.StatusCode.UNAUTHENTICATED, "authentication_error", "invalid_api_key", False),
    (PermissionDeniedError, 403, grpc.StatusCode.PERMISSION_DENIED, "permission_error", "permission_denied", False),
    (NotFoundError, 404, grpc.StatusCode.NOT_FOUND, "invalid_request_error", "model_not_found", False),
    (RequestTimeoutError, 408, grpc.StatusCode.DEADLINE_EXCEEDED, "invalid_request_error", "request_timeout", False),
    (RequestTooLargeError, 413, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request_error", "request_too_large", False),
    (RateLimitError, 429, grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limit_error", "rate_limit_exceeded", True),
    (InternalError, 500, grpc.StatusCode.INTERNAL, "server_error", "internal_error", False),
    (UpstreamError, 502, grpc.StatusCode.UNAVAILABLE, "api_error", "upstream_error", True),
    (UpstreamConnectionError, 502, grpc.StatusCode.UNAVAILABLE, "api_error", "upstream_connection_error", True),
    (UpstreamCredentialsError, 502, grpc.StatusCode.UNAVAILABLE, "api_error", "upstream_credentials_rejected", True),
    (ServiceUnavailableError, 503, grpc.StatusCode.UNAVAILABLE, "api_error", "service_unavailable", True),
    (ShuttingDownError, 503, grpc.StatusCode.UNAVAILABLE, "api_error", "shutting_down", True),
    (UpstreamTimeoutError, 504, grpc.StatusCode.DEADLINE_EXCEEDED, "api_error", "upstream_timeout", True),
    (DeadlineExceededError, 504, grpc.StatusCode.DEADLINE_EXCEEDED, "api_error", "deadline_exceeded", False),
    (
        UpstreamRequestError,
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_request_error",
        "upstream_rejected_request",
        False,
    ),
]
CLASS_IDS = [c[0].__name__ for c in CLASSES]


def _all_subclasses(cls: type[GatewayError]) -> set[type[GatewayError]]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= _all_subclasses(sub)
    return found


def test_the_table_covers_every_error_class() -> None:
    """A new error class must be added to the table above, so its mapping is pinned."""
    assert {c[0] for c in CLASSES} == _all_subclasses(GatewayError)


@pytest.mark.parametrize(("cls", "status", "grpc_code", "error_type", "code", "retryable"), CLASSES, ids=CLASS_IDS)
def test_class_mapping(
    cls: type[GatewayError], status: int, grpc_code: grpc.StatusCode, error_type: str, code: str, retryable: bool
) -> None:
    error = cls("something failed")
    assert (error.http_status, error.grpc_code, error.error_type, error.code, error.retryable) == (
        status,
        grpc_code,
        error_type,
        code,
        retryable,
    )
    assert error.param is None
    assert error.retry_after is None
    assert str(error) == "something failed"


def _crossed(error: GatewayError, extra: tuple[tuple[str, str], ...] = ()) -> GatewayError:
    """What the gRPC client side rebuilds from the status a servicer aborted with."""
    return GatewayError.from_metadata(error.grpc_code, error.message, (*extra, *error.to_metadata()))


def _state(error: GatewayError) -> tuple[object, ...]:
    return type(error), error.message, error.code, error.param, error.retry_after, error.http_status


@pytest.mark.parametrize("cls", [c[0] for c in CLASSES], ids=CLASS_IDS)
def test_round_trip_with_defaults(cls: type[GatewayError]) -> None:
    error = cls("The model 'gpt-5' does not exist")
    assert _state(_crossed(error)) == _state(error)


@pytest.mark.parametrize("cls", [c[0] for c in CLASSES], ids=CLASS_IDS)
def test_round_trip_with_every_detail(cls: type[GatewayError]) -> None:
    error = cls(
        "messages[3].content: expected a string or an array, got number",
        code="custom_code",
        param="messages[3].content",
        retry_after=1.5,
        status=418,
    )
    # Metadata the servicer adds on its own (timings) does not disturb the rebuild.
    again = _crossed(error, (("tollgate-upstream-ms", "12"), ("content-type", "application/grpc")))
    assert _state(again) == _state(error)
    assert again.http_status == 418
    assert again.retry_after == 1.5


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(2.0, "2"), (0.25, "0.250"), (30, "30"), (0.0, "0")],
)
def test_retry_after_survives_and_is_formatted_compactly(retry_after: float, header: str) -> None:
    error = RateLimitError("Rate limit reached for requests", retry_after=retry_after)
    assert ("retry-after", header) in error.to_metadata()
    assert _crossed(error).retry_after == retry_after


def test_metadata_is_exact() -> None:
    error = UpstreamRequestError("Invalid 'tools[0].function.name'", param="tools[0].function.name", status=422)
    assert error.to_metadata() == (
        ("tollgate-error-code", "upstream_rejected_request"),
        ("tollgate-error-class", "UpstreamRequestError"),
        ("tollgate-http-status", "422"),
        ("tollgate-error-param", "tools[0].function.name"),
    )


def test_an_empty_param_is_kept_distinct_from_none() -> None:
    assert _crossed(InvalidRequestError("bad", param="")).param == ""


@pytest.mark.parametrize(
    ("code", "cls", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError, 400),
        (grpc.StatusCode.UNAUTHENTICATED, AuthenticationError, 401),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError, 403),
        (grpc.StatusCode.NOT_FOUND, NotFoundError, 404),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, RateLimitError, 429),
        (grpc.StatusCode.UNAVAILABLE, ServiceUnavailableError, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, UpstreamTimeoutError, 504),
        (grpc.StatusCode.CANCELLED, ServiceUnavailableError, 503),
        (grpc.StatusCode.UNKNOWN, InternalError, 500),
        (grpc.StatusCode.INTERNAL, InternalError, 500),
        (grpc.StatusCode.UNIMPLEMENTED, InternalError, 500),
        (grpc.StatusCode.FAILED_PRECONDITION, InternalError, 500),
    ],
)
def test_a_status_from_elsewhere_maps_by_its_grpc_code(
    code: grpc.StatusCode, cls: type[GatewayError], status: int
) -> None:
    """A status not made by tollgate (a proxy, grpc itself) carries no tollgate metadata."""
    error = GatewayError.from_metadata(code, "upstream connect error", [("server", "envoy")])
    assert type(error) is cls
    assert error.message == "upstream connect error"
    assert error.http_status == status
    assert error.code == cls.default_code
    assert error.param is None
    assert error.retry_after is None


def test_an_unknown_class_name_falls_back_to_the_grpc_code() -> None:
    """A newer peer's error class this side does not know still maps by its code, keeping the details."""
    metadata = [
        ("tollgate-error-class", "QuotaExhaustedError"),
        ("tollgate-error-code", "quota"),
        ("retry-after", "60"),
    ]
    error = GatewayError.from_metadata(grpc.StatusCode.RESOURCE_EXHAUSTED, "Monthly quota used up", metadata)
    assert type(error) is RateLimitError
    assert (error.code, error.retry_after, error.http_status) == ("quota", 60.0, 429)


def test_a_garbled_http_status_is_ignored() -> None:
    metadata = [("tollgate-error-class", "NotFoundError"), ("tollgate-http-status", "4o4")]
    error = GatewayError.from_metadata(grpc.StatusCode.NOT_FOUND, "gone", metadata)
    assert type(error) is NotFoundError
    assert error.http_status == 404


@pytest.mark.parametrize(
    ("error", "body"),
    [
        pytest.param(
            InvalidRequestError(
                "temperature: must be between 0 and 2, got 3", code="invalid_parameter", param="temperature"
            ),
            {
                "message": "temperature: must be between 0 and 2, got 3",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": "invalid_parameter",
            },
            id="invalid-request",
        ),
        pytest.param(
            NotFoundError("The model 'gpt-5' does not exist", param="model"),
            {
                "message": "The model 'gpt-5' does not exist",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            },
            id="not-found",
        ),
        pytest.param(
            RateLimitError("Rate limit reached", retry_after=20),
            {"message": "Rate limit reached", "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"},
            id="rate-limit",
        ),
        pytest.param(
            InternalError("Internal error (request req_123)"),
            {
                "message": "Internal error (request req_123)",
                "type": "server_error",
                "param": None,
                "code": "internal_error",
            },
            id="internal",
        ),
    ],
)
def test_to_openai_shape(error: GatewayError, body: dict[str, object]) -> None:
    assert error.to_openai() == {"error": body}


def test_repr_names_class_status_and_code() -> None:
    error = UpstreamTimeoutError("no first byte in 60s")
    assert repr(error) == "UpstreamTimeoutError(504, 'upstream_timeout', 'no first byte in 60s')"


def _legal_grpc_value(value: str) -> bool:
    """gRPC refuses ASCII-keyed metadata values outside printable ASCII (grpc-core validate_metadata)."""
    return all(0x20 <= ord(c) <= 0x7E for c in value)


@pytest.mark.parametrize("param", ["metadata.ключ", "logit_bias.é", "metadata.line\nbreak"])
def test_metadata_values_are_legal_for_grpc(param: str) -> None:
    error = InvalidRequestError(f"{param}: expected a string, got number", code="invalid_parameter", param=param)
    assert all(_legal_grpc_value(value) for _, value in error.to_metadata())
    assert _crossed(error).param == param


def test_every_503_gets_a_retry_after_header() -> None:
    assert retry_after_header(ServiceUnavailableError("auth server down")) == "1"
    assert retry_after_header(ShuttingDownError()) == "1"
    assert retry_after_header(ServiceUnavailableError("overloaded", retry_after=7.4)) == "7"
    assert retry_after_header(RateLimitError("slow down", retry_after=0.2)) == "1"
    assert retry_after_header(UpstreamError("bad gateway")) is None
    # The default stays at the HTTP boundary: the engine's own backoff still sees "unknown".
    assert ServiceUnavailableError("auth server down").retry_after is None
