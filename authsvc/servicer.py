"""`AuthServicer`: `tollgate.auth.v1.AuthService.Check` over a `KeyStore`.

A denial is UNAUTHENTICATED with a message the client sees; an unknown id, a wrong secret and a malformed key get
the same message, so a caller cannot probe which ids exist. The raw key never reaches a log: only its id, once the
key has parsed.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from authsvc.keyfile import KeyRecord
from authsvc.store import KeyStatus, KeyStore
from tollgate.auth.v1 import auth_pb2 as pb
from tollgate.auth.v1 import auth_pb2_grpc as pb_grpc

log = logging.getLogger("tollgate.authsvc")

MISSING_KEY = "Missing API key: send `Authorization: Bearer <key>`"
INVALID_KEY = "Invalid API key"
EXPIRED_KEY = "API key expired"
REVOKED_KEY = "API key revoked"
_DENIALS = {
    KeyStatus.MISSING: MISSING_KEY,
    KeyStatus.INVALID: INVALID_KEY,
    KeyStatus.EXPIRED: EXPIRED_KEY,
    KeyStatus.REVOKED: REVOKED_KEY,
}
_PERIODS = {
    "day": pb.BUDGET_PERIOD_DAY,
    "week": pb.BUDGET_PERIOD_WEEK,
    "month": pb.BUDGET_PERIOD_MONTH,
    "total": pb.BUDGET_PERIOD_TOTAL,
}


class AuthServicer(pb_grpc.AuthServiceServicer):
    """Answers `Check` from the keys of a `KeyStore`; `checks` counts the calls."""

    def __init__(self, store: KeyStore, *, cache_ttl: float = 30.0) -> None:
        self.store = store
        self.cache_ttl = cache_ttl
        self.checks = 0

    async def Check(  # the gRPC method name is fixed by the proto
        self, request: pb.CheckRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CheckResponse:
        """Allow with the key's decision, or abort UNAUTHENTICATED."""
        self.checks += 1
        try:
            found = self.store.lookup(request.api_key)
        except Exception:  # grpc.aio would send the exception's text to the caller; log it here instead
            log.exception("check failed (request %s)", request.request_id)
            await _abort(context, grpc.StatusCode.INTERNAL, "Internal error in the auth server")
        if found.record is None or found.status is not KeyStatus.VALID:
            _log_denial(request, found.status, found.key_id)
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, _DENIALS[found.status])
        log.debug("allowed key %s (request %s, model %r)", found.key_id, request.request_id, request.model)
        return decision(found.record, self.cache_ttl)


def decision(record: KeyRecord, cache_ttl: float) -> pb.CheckResponse:
    """The allow decision for `record`, reusable by the gateway for `cache_ttl` seconds and never past the expiry."""
    limits = pb.Limits(
        requests_per_minute=record.limits.requests_per_minute,
        tokens_per_minute=record.limits.tokens_per_minute,
        concurrent_requests=record.limits.concurrent_requests,
    )
    if record.limits.budget is not None:
        limits.budget.limit_usd = record.limits.budget.usd
        limits.budget.period = _PERIODS[record.limits.budget.period]
    reply = pb.CheckResponse(
        key_id=record.id,
        user=record.user,
        team=record.team,
        allowed_models=record.models,
        denied_models=record.deny,
        limits=limits,
        labels=dict(record.labels),
    )
    reply.cache_ttl.CopyFrom(_duration(cache_ttl))
    if record.expires is not None:
        expires_at = Timestamp()
        expires_at.FromDatetime(record.expires)
        reply.expires_at.CopyFrom(expires_at)
    return reply


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def _log_denial(request: pb.CheckRequest, status: KeyStatus, key_id: str) -> None:
    # The id is 16 hex characters once the key parsed; what did not parse is never echoed.
    who = f"key {key_id}" if key_id else "a malformed key" if status is KeyStatus.INVALID else "no key"
    log.info(
        "denied %s: %s (request %r, client %r, model %r)",  # %r: these strings come from the client
        who,
        status.value,
        request.request_id,
        request.client_address,
        request.model,
    )


async def _abort(context: grpc.aio.ServicerContext[object, object], code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover
