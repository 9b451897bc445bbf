"""`Exchanges`: a split front door's GatewayService calls over `Exchange` streams to its engine (exchange.proto), on
a connection of their own (`wire_opener`, `exchange_wire`) or on a grpc.aio channel.

Every call is a `start` frame on the current exchange and the engine's frames back; its outcome is what its own RPC
would have given: the answer, the reply metadata (initial metadata) and trailing metadata, or a
`grpc.aio.AioRpcError` with the engine's status and trailers, so `RemoteEngine` rebuilds the same `GatewayError`. The
exchange breaking (the engine gone, a reset) ends each of its calls with the stream's status, UNAVAILABLE as a dead
engine's RPC would, and the next call opens a new exchange. An engine that does not know `Exchange` raises
`ExchangeUnsupported` (the caller then makes its own RPCs).

The frames that are ready when the stream is ready to write leave as one message (with other calls in flight, after
one more turn of the loop: `exchange.gather`); while a write is in flight, new frames gather for the next. A
stream's messages come `WINDOW` at a time: credit for more is granted as its consumer takes them, so a consumer that
stops reading stops its call at the engine, and only that one. An exchange is renewed after `max_age` seconds or
`max_calls` calls (new calls on a fresh stream, which load balancing may send to another engine, while the old one
finishes its own); one exchange at a time takes new calls.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import grpc
from google.protobuf.message import Message

from gateway.config.tls import ClientTLS
from gateway.engine.exchange import METHOD_PREFIX, Outbox, gather, put_metadata, within
from gateway.engine.exchange_wire import WireOpener, split_target
from gateway.engine.wire import Metadata
from tollgate.gateway.v1 import exchange_pb2 as xpb

log = logging.getLogger("tollgate.frontdoor")

EXCHANGE_METHOD = METHOD_PREFIX + "Exchange"
WINDOW = 64  # a stream's messages the engine may send ahead of its consumer
MAX_AGE = 60.0  # seconds an exchange takes new calls
MAX_CALLS = 50_000  # calls an exchange takes
_BACKSTOP = 1.0  # after a unary call's timeout, how long its engine has to say so before we do


class ExchangeUnsupported(Exception):
    """The engine does not serve `Exchange` (a release before it)."""


class _Inbox:
    """The engine's frames for one call, as they come, or the exchange's failure."""

    __slots__ = ("_arrived", "failure", "frames")

    def __init__(self) -> None:
        self.frames: deque[xpb.ExchangeEngineFrame] = deque()
        self.failure: BaseException | None = None
        self._arrived = asyncio.Event()

    def put(self, frame: xpb.ExchangeEngineFrame) -> None:
        self.frames.append(frame)
        self._arrived.set()

    def fail(self, failure: BaseException) -> None:
        self.failure = failure
        self._arrived.set()

    async def next(self) -> xpb.ExchangeEngineFrame:
        """The next frame, waited for; the exchange's failure once there are no more."""
        while not self.frames:
            if self.failure is not None:
                raise self.failure
            self._arrived.clear()
            await self._arrived.wait()
        return self.frames.popleft()


def _pairs(entries: Iterable[xpb.ExchangeMetadataEntry]) -> Metadata:
    return tuple([(entry.key, entry.value) for entry in entries])


def _error(end: xpb.ExchangeCallEnd, initial: Metadata) -> grpc.aio.AioRpcError:
    """A call's error end, as the `AioRpcError` its own RPC would have raised."""
    return grpc.aio.AioRpcError(
        _CODES.get(end.code, grpc.StatusCode.UNKNOWN),
        grpc.aio.Metadata(*initial),
        grpc.aio.Metadata(*_pairs(end.trailing_metadata)),
        end.details,
        "",
    )


_CODES = {code.value[0]: code for code in grpc.StatusCode}


@dataclass(slots=True)
class Counts:
    """What a front door's exchanges carried, for tests and benchmarks: messages each way, and the engine's frames."""

    opened: int = 0  # exchanges
    ended: int = 0  # exchanges over (retired and finished, or broken)
    sent: int = 0  # messages to the engine
    received: int = 0  # messages from the engine
    frames_received: int = 0  # the frames in them (more than `received` when frames of many calls were coalesced)


class _Stream(Protocol):
    """What an exchange uses of its stream: a grpc.aio call's, or a `WireStream`'s."""

    async def write(self, request: xpb.ExchangeRequest) -> None: ...

    async def done_writing(self) -> None: ...

    def cancel(self) -> bool: ...

    def __aiter__(self) -> AsyncIterator[xpb.ExchangeResponse]: ...


_Opener = Callable[[None], _Stream]


class _Exchange:
    """One `Exchange` stream: its calls in flight by number, a writer task and a reader task."""

    def __init__(self, open_stream: _Opener, born: float, on_done: Callable[[_Exchange], None], counts: Counts) -> None:
        self._stream = open_stream(None)
        self._inboxes: dict[int, _Inbox] = {}
        self._numbers = itertools.count(1)
        self._out = Outbox(xpb.ExchangeRequest, lambda message, number: message.frames.add(call=number))
        self._wake = self._out.ready
        self._on_done = on_done
        self._counts = counts
        self.born, self.calls = born, 0
        self.open = True  # taking new calls
        self._heard = False  # the engine has answered on this stream (it knows the method)
        self._writer = asyncio.create_task(self._write())
        self._reader = asyncio.create_task(self._read())

    def start(
        self, method: str, request: bytes, metadata: Metadata, limit: float | None, window: int
    ) -> tuple[int, _Inbox]:
        """Start a call: its number and its inbox."""
        number = next(self._numbers)
        self.calls += 1
        inbox = self._inboxes[number] = _Inbox()
        start = self._out.frame(number, len(request)).start
        start.method, start.request, start.window = method, request, window
        put_metadata(start.metadata, metadata)
        if limit is not None:
            start.timeout.FromTimedelta(timedelta(seconds=max(limit, 0.0)))
        return number, inbox

    def cancel(self, number: int) -> None:
        """The caller has gone: the engine cancels the call; nothing more of it is read."""
        if self._inboxes.pop(number, None) is not None:
            self._out.frame(number, 0).cancel.SetInParent()
            self._wake.set()  # a retired exchange may now close

    def grant(self, number: int, messages: int) -> None:
        """The caller took `messages` of the call: the engine may send that many more."""
        if number in self._inboxes:
            self._out.frame(number, 0).credit.messages = messages

    def finished(self, number: int) -> None:
        """The call has ended (its end frame came)."""
        self._inboxes.pop(number, None)
        if not self.open:
            self._wake.set()  # a retired exchange may now close

    def retire(self) -> None:
        """Take no new calls; close our side once the calls in flight have ended."""
        self.open = False
        self._wake.set()

    async def close(self) -> None:
        """End the stream now (its calls fail as cancelled) and wait for its tasks."""
        self.open = False
        self._stream.cancel()
        for task in (self._writer, self._reader):
            task.cancel()
        await asyncio.gather(self._writer, self._reader, return_exceptions=True)

    async def _write(self) -> None:
        """Write what is ready, one message at a time; half-close once retired and idle."""
        try:
            while True:
                await self._wake.wait()
                await gather(len(self._inboxes) - 1)
                self._wake.clear()
                while self._out:
                    await self._stream.write(self._out.take())
                    self._counts.sent += 1
                if not self.open and not self._inboxes:
                    await self._stream.done_writing()
                    return
        except Exception as exc:  # the stream ended under us: the reader hears how, and tells the calls
            log.debug("exchange write failed: %r", exc)

    async def _read(self) -> None:
        failure: BaseException = _broken(grpc.StatusCode.UNAVAILABLE, "The exchange ended")
        try:
            async for response in self._stream:
                self._heard = True
                self._counts.received += 1
                self._counts.frames_received += len(response.frames)
                if response.retiring:
                    self.retire()
                for frame in response.frames:
                    inbox = self._inboxes.get(frame.call)
                    if inbox is not None:
                        inbox.put(frame)
        except grpc.aio.AioRpcError as exc:
            unsupported = exc.code() == grpc.StatusCode.UNIMPLEMENTED and not self._heard
            failure = ExchangeUnsupported() if unsupported else exc
            if not unsupported and exc.code() != grpc.StatusCode.CANCELLED:
                log.warning("the exchange with the engine broke: %s %s", exc.code().name, exc.details())
        except Exception as exc:  # a message that is not an ExchangeResponse: its calls end as on a broken stream
            log.warning("the exchange with the engine broke: %r", exc)
        finally:
            self.open = False
            for inbox in self._inboxes.values():
                inbox.fail(failure)
            self._inboxes.clear()
            self._wake.set()
            self._counts.ended += 1
            self._on_done(self)


async def _whole(inbox: _Inbox) -> tuple[xpb.ExchangeCallEnd, bytes, Metadata]:
    """A unary call's end, answer and reply metadata, read from its frames."""
    initial: Metadata = ()
    answer = b""
    while True:
        frame = await inbox.next()
        initial = initial or _pairs(frame.reply_metadata)
        if frame.messages:
            answer = frame.messages[-1]
        if frame.HasField("end"):
            return frame.end, answer, initial


def _broken(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, "")


class Exchanges:
    """A front door's exchanges with its engine over one channel: the current one takes new calls."""

    def __init__(
        self,
        channel: grpc.aio.Channel | WireOpener[xpb.ExchangeRequest, xpb.ExchangeResponse],
        *,
        max_age: float = MAX_AGE,
        max_calls: int = MAX_CALLS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open: _Opener
        if isinstance(channel, WireOpener):
            self._wire: WireOpener[xpb.ExchangeRequest, xpb.ExchangeResponse] | None = channel
            self._open = channel
        else:
            self._wire = None
            self._open = channel.stream_stream(
                EXCHANGE_METHOD,
                request_serializer=xpb.ExchangeRequest.SerializeToString,
                response_deserializer=xpb.ExchangeResponse.FromString,
            )
        self._max_age, self._max_calls, self._clock = max_age, max_calls, clock
        self._current: _Exchange | None = None
        self._all: set[_Exchange] = set()  # the current one, and retired ones finishing their calls
        self.counts = Counts()

    def _exchange(self) -> _Exchange:
        """The exchange for a new call: the current one, or a new one when it is closed, old or full."""
        current = self._current
        now = self._clock()
        if (
            current is None
            or not current.open
            or current.calls >= self._max_calls
            or now - current.born >= self._max_age
        ):
            if current is not None:
                current.retire()
            current = self._current = _Exchange(self._open, now, self._all.discard, self.counts)
            self._all.add(current)
            self.counts.opened += 1
        return current

    async def unary(
        self, method: str, request: Message, metadata: Metadata, limit: float | None = None
    ) -> tuple[bytes, Metadata, Metadata]:
        """A unary call: its answer (serialized), its initial metadata and its trailing metadata."""
        exchange = self._exchange()
        number, inbox = exchange.start(method, request.SerializeToString(), metadata, limit, 0)
        ended = False
        try:
            end, answer, initial = await within(None if limit is None else limit + _BACKSTOP, _whole(inbox))
            ended = True
        except TimeoutError:
            raise _broken(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        finally:
            if ended:
                exchange.finished(number)
            else:
                exchange.cancel(number)
        if end.code:
            raise _error(end, initial)
        return answer, initial, _pairs(end.trailing_metadata)

    async def stream(
        self, method: str, request: Message, metadata: Metadata, limit: float | None = None
    ) -> AsyncGenerator[tuple[Metadata, bytes], None]:
        """A server-streaming call's messages (serialized), each with the initial metadata that came before it (the
        first only); closing the generator early cancels the call."""
        exchange = self._exchange()
        number, inbox = exchange.start(method, request.SerializeToString(), metadata, limit, WINDOW)
        ended, taken = False, 0
        try:
            while True:
                frame = await inbox.next()
                initial = _pairs(frame.reply_metadata)
                for message in frame.messages:
                    yield initial, message
                    initial = ()
                    taken += 1
                    if taken >= WINDOW // 2:
                        exchange.grant(number, taken)
                        taken = 0
                if frame.HasField("end"):
                    ended = True
                    if frame.end.code:
                        raise _error(frame.end, initial)
                    return
        finally:
            if ended:
                exchange.finished(number)
            else:
                exchange.cancel(number)

    async def close(self) -> None:
        """End every exchange now."""
        exchanges, self._current = list(self._all), None
        await asyncio.gather(*(exchange.close() for exchange in exchanges))
        if self._wire is not None:
            await self._wire.close()


def wire_opener(target: str, tls: ClientTLS | None) -> WireOpener[xpb.ExchangeRequest, xpb.ExchangeResponse] | None:
    """Exchanges on a connection of their own to `target` (`exchange_wire`); None for a target it cannot dial."""
    place = split_target(target)
    if place is None:
        return None
    serialize, deserialize = xpb.ExchangeRequest.SerializeToString, xpb.ExchangeResponse.FromString
    return WireOpener(*place, EXCHANGE_METHOD, serialize, deserialize, tls)
