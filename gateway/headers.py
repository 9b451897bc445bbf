"""Reading a caller's key and ids from request headers, the same for both doors (HTTP headers, gRPC metadata).

Only the doors read these (the front door's `handling`, the engine's gRPC servicer through `engine/wire.py`); the
engine and its policies get the result on the `CallContext`.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config import Secret
from gateway.credentials import mask_credentials

_CLIENT_ID_MAX = 128
_BEARER = "bearer "


def printable(value: str) -> bool:
    """Printable ASCII: what a gRPC text metadata value may hold, and all that a key or a forwarded header may be
    (aiohttp passes invalid UTF-8 through as surrogates)."""
    return value.isascii() and value.isprintable()


def client_request_id(value: str | None) -> str:
    """A caller's own `x-request-id`, kept for correlation: at most 128 printable ASCII characters, else nothing;
    a credential in it (a key pasted into the wrong header) is masked before it reaches a usage record or a log."""
    if not value or len(value) > _CLIENT_ID_MAX or not printable(value):
        return ""
    return mask_credentials(value)


def api_key(headers: Mapping[str, str]) -> Secret | None:
    """The key from `authorization: Bearer …`, else `x-api-key` (HTTP headers or gRPC metadata), kept secret."""
    auth = headers.get("authorization", "")
    key = auth[len(_BEARER) :] if auth[: len(_BEARER)].lower() == _BEARER else headers.get("x-api-key", "")
    return Secret(key) if key else None
