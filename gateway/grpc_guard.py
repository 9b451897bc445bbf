"""What every tollgate gRPC server does around its servicers, as one server interceptor.

- A request that does not decode as its method's protobuf message is answered `INVALID_ARGUMENT` with a fixed
  message, never `UNKNOWN` with the parser's text and a traceback in the log; it is logged at most once a minute
  per server. (Every tollgate method takes one request message; client-streaming methods, grpc's own reflection,
  are left alone.)
- With a `Drain`, every call (health and reflection aside) is tracked as a request in flight, and a call cut when the
  shutdown grace is over ends with `UNAVAILABLE` and the `ShuttingDownError` metadata, which a split front door
  renders as an in-band error event. A call that carries `CALL_KEY` metadata is tracked under that name, so its
  caller can cut it as a shutdown (`Drain.cut_calls`).

The bidirectional `Exchange` (`gateway.engine.exchange`) is left alone here like any client-streaming method (a
long-lived stream is no request in flight); it does the same for each call it carries, with `UndecodableLog`,
`call_name` and the same `Drain`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing, nullcontext
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from gateway.drain import CALL_KEY, Drain, absorb_cut
from gateway.errors import ShuttingDownError

log = logging.getLogger("tollgate.grpc")

UNDECODABLE_MESSAGE = "The request is not a valid protobuf message for this method"
_LOG_INTERVAL = 60.0
_UNTRACKED = ("/grpc.health.v1.Health/", "/grpc.reflection.")  # long-lived watches must not hold up a drain

Context = grpc.aio.ServicerContext[Any, Any]


class _Undecodable:
    """What the guarded deserializer returns for bytes that are not the method's message."""

    __slots__ = ()


UNDECODABLE = _Undecodable()


if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]  # generic in the stubs only
else:
    _Interceptor = grpc.aio.ServerInterceptor


class GuardInterceptor(_Interceptor):
    """Undecodable requests answered cleanly, and calls tracked by a `Drain` (see the module docstring)."""

    def __init__(self, drain: Drain | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._drain = drain
        self._undecodable = UndecodableLog(clock)
        # Each method's handler, wrapped once: (the servicer's handler, ours).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # an unknown method: grpc answers UNIMPLEMENTED
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        parse = _guarded_parser(handler.request_deserializer)
        serialize = handler.response_serializer
        drain = None if method.startswith(_UNTRACKED) else self._drain
        if handler.unary_unary is not None:
            behavior = self._unary(handler.unary_unary, method, drain)
            return grpc.unary_unary_rpc_method_handler(
                behavior, request_deserializer=parse, response_serializer=serialize
            )
        if handler.unary_stream is not None:
            streaming = self._stream(handler.unary_stream, method, drain)
            return grpc.unary_stream_rpc_method_handler(
                streaming, request_deserializer=parse, response_serializer=serialize
            )
        ours = not method.startswith(_UNTRACKED)
        if handler.stream_stream is not None and ours and inspect.isasyncgenfunction(handler.stream_stream):
            # A stream of our own (Exchange): each request message is checked as it is read.
            streams = self._streams(handler.stream_stream, method)
            return grpc.stream_stream_rpc_method_handler(
                streams, request_deserializer=parse, response_serializer=serialize
            )
        # Other client-streaming methods (grpc's own reflection service) are left as they are: their servicers read
        # the request iterator synchronously or asynchronously, and a wrapper would have to guess.
        return handler

    def _unary(self, inner: Any, method: str, drain: Drain | None) -> Callable[[Any, Context], Awaitable[Any]]:
        async def behavior(request: Any, context: Context) -> Any:
            if request is UNDECODABLE:
                await self._refuse(context, method)
            with drain.track(call_name(context.invocation_metadata() or ())) if drain is not None else nullcontext():
                try:
                    return await inner(request, context)
                except asyncio.CancelledError as exc:
                    if not absorb_cut(exc):
                        raise
                    await _abort_shutdown(context)

        return behavior

    def _stream(self, inner: Any, method: str, drain: Drain | None) -> Callable[[Any, Context], AsyncIterator[Any]]:
        async def behavior(request: Any, context: Context) -> AsyncIterator[Any]:
            if request is UNDECODABLE:
                await self._refuse(context, method)
            with drain.track(call_name(context.invocation_metadata() or ())) if drain is not None else nullcontext():
                try:
                    result = inner(request, context)
                    if inspect.isasyncgen(result):
                        async with aclosing(result):
                            async for message in result:
                                yield message
                    else:
                        await result  # a handler that writes with context.write
                except asyncio.CancelledError as exc:
                    if not absorb_cut(exc):
                        raise
                    await _abort_shutdown(context)

        return behavior

    def _streams(self, inner: Any, method: str) -> Callable[[AsyncIterator[Any], Context], AsyncIterator[Any]]:
        """A bidirectional stream whose request messages that do not decode end it INVALID_ARGUMENT. The stream is
        not tracked by the drain: it is no request in flight (the calls it carries track themselves)."""

        async def checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async for request in requests:
                if request is UNDECODABLE:
                    await self._refuse(context, method)
                yield request

        async def behavior(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async with aclosing(inner(checked(requests, context), context)) as responses:
                async for response in responses:
                    yield response

        return behavior

    async def _refuse(self, context: Context, method: str) -> NoReturn:
        self._undecodable.note(method, context.peer())
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, UNDECODABLE_MESSAGE)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover


class UndecodableLog:
    """The warning for an undecodable request, logged at most once a minute (a hostile client must not flood it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next_log = -float("inf")

    def note(self, method: str, peer: str) -> None:
        """An undecodable request to `method` from `peer` was answered INVALID_ARGUMENT."""
        now = self._clock()
        if now >= self._next_log:
            self._next_log = now + _LOG_INTERVAL
            log.warning(
                "undecodable request to %s from %s: answered INVALID_ARGUMENT (more are not logged for %gs)",
                method,
                peer,
                _LOG_INTERVAL,
            )


def call_name(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The name the caller gave a call in its metadata (`CALL_KEY`), for `Drain.cut_calls`; empty when it gave
    none."""
    for key, value in metadata:
        if key == CALL_KEY:
            return value if isinstance(value, str) else ""
    return ""


def _guarded_parser(parse: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if parse is None:
        return None

    def guarded(raw: bytes) -> Any:
        try:
            return parse(raw)
        except Exception:  # any parser failure means the same thing: not this method's message
            return UNDECODABLE

    return guarded


async def _abort_shutdown(context: Context) -> NoReturn:
    error = ShuttingDownError()
    await context.abort(error.grpc_code, error.message, error.to_metadata())
    raise AssertionError("unreachable: abort raises")  # pragma: no cover
