"""`Authenticator`: asks the external auth server about a key once per TTL, and fails closed when it cannot.

A decision is about the key, so it is cached by the key's digest for every model the key asks for; the model globs
are applied per request by the engine. Concurrent requests with the same uncached key share one `Check` call. A
denial the server gives (401, 403) is cached briefly too, so a flood of bad keys does not reach the server. When the
server is down, slow or broken, the request gets a 503 and no detail of the failure.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import time
from collections.abc import Callable
from typing import NamedTuple, cast

import grpc

from gateway.auth.cache import Decision, DecisionCache
from gateway.auth.principal import ANONYMOUS, Principal
from gateway.call import CallContext
from gateway.config import AuthConfig, Secret
from gateway.errors import (
    AuthenticationError,
    GatewayError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
)
from gateway.headers import printable
from gateway.tls import open_channel
from tollgate.auth.v1 import auth_pb2, auth_pb2_grpc

log = logging.getLogger("tollgate.auth")

_CHANNEL_OPTIONS = [("grpc.keepalive_time_ms", 30_000), ("grpc.enable_retries", 0)]
# Denials the server gives about the key itself: cached for `negative_ttl`.
_CACHED_DENIALS = (AuthenticationError, PermissionDeniedError)


class Checked(NamedTuple):
    """Who the caller is, and when this caller's own `Check` call ran (perf_counter; None: cached or shared)."""

    principal: Principal
    check: tuple[float, float] | None = None


class NoAuth:
    """`auth: none`: every caller is anonymous and may use every model."""

    enabled = False

    async def check(self, ctx: CallContext, model: str, operation: auth_pb2.Operation.ValueType) -> Checked:
        """The anonymous principal, always."""
        return Checked(ANONYMOUS)

    async def close(self) -> None:
        """Nothing to release."""


class Authenticator:
    """The client of `tollgate.auth.v1.AuthService`, with a decision cache in front of it."""

    enabled = True

    def __init__(
        self,
        config: AuthConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._cache = DecisionCache(config.cache_size, clock)
        self._wall_clock = wall_clock
        self._inflight: dict[bytes, asyncio.Task[tuple[Decision, tuple[float, float]]]] = {}
        # Made on first use: a grpc.aio channel belongs to the event loop that is running when it is made.
        self._channel: grpc.aio.Channel | None = None
        self._server_ok = True
        self.calls = 0  # Check calls made, for tests and metrics
        self.cache_hits = 0  # requests answered from the decision cache, for metrics
        self.checks: dict[str, int] = {"allow": 0, "deny": 0, "unavailable": 0}  # Check calls by result, for metrics

    async def close(self) -> None:
        """Close the channel to the auth server."""
        if self._channel is not None:
            await self._channel.close(None)

    def _stub(self) -> auth_pb2_grpc.AuthServiceAsyncStub:
        if self._channel is None:
            self._channel = open_channel(self._config.server, self._config.tls, _CHANNEL_OPTIONS)
        return auth_pb2_grpc.AuthServiceStub(self._channel)

    async def authenticate(self, ctx: CallContext, model: str, operation: auth_pb2.Operation.ValueType) -> Principal:
        """The caller's principal (`check` without the timing); raises as `check` does."""
        return (await self.check(ctx, model, operation)).principal

    async def check(self, ctx: CallContext, model: str, operation: auth_pb2.Operation.ValueType) -> Checked:
        """The caller's principal, and when its `Check` call ran if this caller made one (for the trace's auth
        span); raises the 401, 403, 429 or 503 that the decision (or its absence) means."""
        if ctx.api_key is None:
            raise AuthenticationError("Missing API key: send `Authorization: Bearer <key>`", code="missing_api_key")
        digest = hashlib.blake2b(ctx.api_key.reveal().encode(), digest_size=16).digest()
        cached = self._cache.get(digest)
        span = None
        if cached is not None:
            self.cache_hits += 1
            decision = cached
        else:
            task = self._inflight.get(digest)
            leader = task is None
            if task is None:
                task = asyncio.ensure_future(self._decide(digest, ctx, model, operation))
                self._inflight[digest] = task
                task.add_done_callback(lambda _: self._inflight.pop(digest, None))
            # Shielded: one caller going away must not cancel the decision the others are waiting for.
            decision, ran = await asyncio.shield(task)
            span = ran if leader else None
        if isinstance(decision, GatewayError):
            raise copy.copy(decision)  # a fresh instance: re-raising one object would grow its traceback forever
        return Checked(decision, span)

    async def _decide(
        self, digest: bytes, ctx: CallContext, model: str, operation: auth_pb2.Operation.ValueType
    ) -> tuple[Decision, tuple[float, float]]:
        """The decision, and when the `Check` call started and ended."""
        request = auth_pb2.CheckRequest(
            api_key=cast(Secret, ctx.api_key).reveal(),
            model=model,
            operation=operation,
            headers=self._forwarded(ctx),
            client_address=ctx.peer,
            request_id=ctx.request_id,
        )
        self.calls += 1
        started = time.perf_counter()
        try:
            reply = await self._stub().Check(request, timeout=self._config.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # anything but a status (a key gRPC cannot carry...): fail closed, not a 500
            ran = (started, time.perf_counter())
            if not isinstance(exc, grpc.aio.AioRpcError):
                log.exception("auth check failed", extra={"request_id": ctx.request_id})
                self.checks["unavailable"] += 1
                unavailable = ServiceUnavailableError(
                    "The authentication service is unavailable; try again shortly", code="auth_unavailable"
                )
                return unavailable, ran
            denial = self._denial(exc, ctx)
            self.checks["unavailable" if isinstance(denial, ServiceUnavailableError) else "deny"] += 1
            if isinstance(denial, _CACHED_DENIALS):
                self._cache.put(digest, denial, self._config.negative_ttl)
            return denial, ran
        ran = (started, time.perf_counter())
        self._mark_server(ok=True)
        self.checks["allow"] += 1
        principal = Principal.from_decision(reply)
        self._cache.put(digest, principal, self._ttl(reply))
        return principal, ran

    def _forwarded(self, ctx: CallContext) -> dict[str, str]:
        headers = ctx.headers
        # Values that are not printable ASCII (invalid UTF-8 arrives as surrogates) are left out, not sent broken.
        return {
            name: value
            for name in self._config.headers
            if (value := headers.get(name)) is not None and printable(value)
        }

    def _ttl(self, reply: auth_pb2.CheckResponse) -> float:
        ttl = self._config.cache_ttl
        if reply.HasField("cache_ttl") and (reply.cache_ttl.seconds or reply.cache_ttl.nanos):
            ttl = reply.cache_ttl.ToTimedelta().total_seconds()
        if reply.HasField("expires_at"):
            ttl = min(ttl, reply.expires_at.ToNanoseconds() / 1e9 - self._wall_clock())
        return ttl

    def _denial(self, exc: grpc.aio.AioRpcError, ctx: CallContext) -> GatewayError:
        code, details = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.UNAUTHENTICATED:
            self._mark_server(ok=True)
            return AuthenticationError(details or "Invalid API key")
        if code == grpc.StatusCode.PERMISSION_DENIED:
            self._mark_server(ok=True)
            return PermissionDeniedError(details or "This API key may not be used here", code="key_not_permitted")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            self._mark_server(ok=True)
            return RateLimitError(details or "This API key is over its limit", retry_after=_retry_after(exc))
        # Down, slow or broken: fail closed. The status text may be grpc's own description; it stays in the log.
        self._mark_server(ok=False, why=f"{code.name}: {details}", request_id=ctx.request_id)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = "The authentication service did not answer in time; try again shortly"
        else:
            message = "The authentication service is unavailable; try again shortly"
        return ServiceUnavailableError(message, code="auth_unavailable")

    def _mark_server(self, *, ok: bool, why: str = "", request_id: str = "") -> None:
        # Logged on each change of state, not on every failed request: an outage must not flood the log.
        if ok and not self._server_ok:
            log.warning("auth server %s is answering again", self._config.server)
        elif not ok and self._server_ok:
            log.error(
                "auth server %s failed (%s); failing closed", self._config.server, why, extra={"request_id": request_id}
            )
        self._server_ok = ok


def _retry_after(exc: grpc.aio.AioRpcError) -> float | None:
    # grpc-stubs types metadata as opaque items; at run time they are (key, value) pairs.
    for key, value in cast(tuple[tuple[str, str | bytes], ...], tuple(exc.trailing_metadata() or ())):
        if key == "retry-after":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def build_authenticator(config: AuthConfig | None) -> Authenticator | NoAuth:
    """The authenticator the configuration asks for."""
    return NoAuth() if config is None else Authenticator(config)
