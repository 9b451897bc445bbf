"""`ExchangeServer`: GatewayService.Exchange at the engine, many calls over one stream (exchange.proto).

Each call a `start` frame opens runs as its own task through the very `Method` its own RPC runs
(`gateway.engine.methods`), with what `gateway.grpc_guard` gives every RPC: an undecodable request is answered
INVALID_ARGUMENT (`UndecodableLog`), the call is tracked by the `Drain` under its `CALL_KEY` name (so `CutCalls` and
a shutdown cut reach it, and end it with the `ShuttingDownError`), its client address is believed only from
`listen.front_doors`, and its timeout is its deadline. The exchange itself is no request in flight. A malformed
frame ends its own call with an error; the exchange and its other calls go on.

The frames that are ready when the stream is ready to write leave together as one message (a message holds
`MAX_MESSAGE_BYTES` at most, a larger frame alone); with other calls in flight, the writer first lets the loop turn
once (`gather`), never a timer. A call with a `window` sends at most that many messages beyond the credit its caller
granted: its task stops producing until credit comes, and no other call waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing, nullcontext
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import grpc
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.message import Message

from gateway.call import CallContext
from gateway.drain import Drain, absorb_cut
from gateway.engine.methods import Method, Status, failure, replies
from gateway.engine.wire import Metadata, Network, call_context, reply_metadata
from gateway.errors import DeadlineExceededError, ShuttingDownError
from gateway.grpc_guard import UNDECODABLE_MESSAGE, UndecodableLog, call_name
from tollgate.gateway.v1 import exchange_pb2 as xpb
from tollgate.gateway.v1 import gateway_pb2 as pb

log = logging.getLogger("tollgate.engine")

METHOD_PREFIX = f"/{pb.DESCRIPTOR.services_by_name['GatewayService'].full_name}/"
MAX_MESSAGE_BYTES = 4 << 20  # the frames of one message, about; far below the 64 MiB a message may carry
_NUMBERS = {code: code.value[0] for code in grpc.StatusCode}  # a status code as it goes on the wire
_OK: Status = (grpc.StatusCode.OK, "", ())
_UNKNOWN_METHOD: Status = (grpc.StatusCode.UNIMPLEMENTED, "Method not found!", ())  # grpc's own words
_UNDECODABLE: Status = (grpc.StatusCode.INVALID_ARGUMENT, UNDECODABLE_MESSAGE, ())
_NO_STEP: Status = (grpc.StatusCode.INVALID_ARGUMENT, "The frame has no step (start, cancel or credit)", ())
_REFUSED: Status = (grpc.StatusCode.UNAVAILABLE, "The engine is shutting down", ())
_BAD_TIMEOUT: Status = (grpc.StatusCode.INVALID_ARGUMENT, "The call's timeout is out of range", ())


async def within(limit: float | None, work: Awaitable[T]) -> T:
    """`work`, awaited for `limit` seconds at most (TimeoutError past it); with no limit, no timer at all (one
    per call is a measurable cost on the hop)."""
    if limit is None:
        return await work
    async with asyncio.timeout(limit):
        return await work


async def gather(company: int) -> None:
    """Before a writer takes what is ready: with `company` (other calls in flight), one more turn of the loop (never
    a timer), so that what that turn's I/O makes ready leaves in the same message (and, on a grpc.aio stream, grpc's
    write comes after the loop has taken what grpc's threads handed it). Measured with `bench.ab --split` in both
    orders: 5-7% less CPU for a split plain request at concurrency 50. Alone, a call's frames leave at once."""
    if company:
        await asyncio.sleep(0)


def put_metadata(entries: RepeatedCompositeFieldContainer[xpb.ExchangeMetadataEntry], metadata: Metadata) -> None:
    """Metadata pairs into a frame's entries (made in place: no message copied)."""
    for key, value in metadata:
        entries.add(key=key, value=value)


T = TypeVar("T")
Msg = TypeVar("Msg", xpb.ExchangeRequest, xpb.ExchangeResponse)
Frame = TypeVar("Frame", xpb.ExchangeClientFrame, xpb.ExchangeEngineFrame)


class Outbox(Generic[Msg, Frame]):
    """The messages of one side of an exchange waiting to be written: new frames join the last message until it
    holds about `MAX_MESSAGE_BYTES` (a larger frame goes alone); `ready` is set whenever there is something."""

    def __init__(self, new: Callable[[], Msg], add: Callable[[Msg, int], Frame]) -> None:
        self._new: Callable[[], Msg] = new
        self._add: Callable[[Msg, int], Frame] = add
        self._messages: deque[Msg] = deque()
        self._bytes = 0  # about how much the last message holds
        self.ready = asyncio.Event()

    def __bool__(self) -> bool:
        return bool(self._messages)

    def fits(self, size: int) -> bool:
        """Whether `size` more bytes fit in the last message (and are counted there)."""
        if self._bytes + size > MAX_MESSAGE_BYTES:
            return False
        self._bytes += size
        return True

    def frame(self, number: int, size: int) -> Frame:
        """A new frame for call `number`, of about `size` bytes, in the last message or a new one."""
        if not self._messages or (self._bytes and self._bytes + size > MAX_MESSAGE_BYTES):
            self._messages.append(self._new())
            self._bytes = 0
        self._bytes += size + 16  # the frame's own fields, about
        self.ready.set()
        frame: Frame = self._add(self._messages[-1], number)
        return frame

    def take(self) -> Msg:
        """The oldest message (a new empty one when there is none)."""
        message = self._messages.popleft() if self._messages else self._new()
        if not self._messages:
            self._bytes = 0
        return message


class ExchangeServer:
    """Serves `Exchange` for a servicer's methods (`methods_of`), one `_Exchange` per stream."""

    def __init__(
        self, methods: Mapping[str, Method], front_doors: Sequence[Network] = (), drain: Drain | None = None
    ) -> None:
        self.methods = methods
        self.paths = {METHOD_PREFIX + name: method for name, method in methods.items()}  # by a start frame's method
        self.front_doors = tuple(front_doors)
        self.drain = drain
        self.undecodable = UndecodableLog()

    def serve(
        self, requests: AsyncIterator[xpb.ExchangeRequest], context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncGenerator[xpb.ExchangeResponse, None]:
        """The engine's messages on one exchange, as it reads `requests`."""
        return _Exchange(self, context.peer() or "").run(requests)


class _Credit:
    """How many more messages a call may send (`None`: no limit), and a wait for more (made when first needed: a
    unary call never waits)."""

    __slots__ = ("_granted", "_left")

    def __init__(self, window: int) -> None:
        self._left: int | None = window or None
        self._granted: asyncio.Event | None = None

    async def take(self) -> None:
        """One message's credit, waited for when there is none (or until the limit is lifted meanwhile)."""
        while self._left is not None and self._left <= 0:
            if self._granted is None:
                self._granted = asyncio.Event()
            self._granted.clear()
            await self._granted.wait()
        if self._left is not None:
            self._left -= 1

    def grant(self, messages: int) -> None:
        """The caller took `messages` more."""
        if self._left is not None:
            self._left += messages
            self._wake()

    def lift(self) -> None:
        """No limit from now on (the caller can grant no more: it closed its side)."""
        self._left = None
        self._wake()

    def _wake(self) -> None:
        if self._granted is not None:
            self._granted.set()


@dataclass(slots=True)
class _Call:
    credit: _Credit
    task: asyncio.Task[None] | None = field(default=None)


class _Exchange:
    """One exchange stream: its calls by number, and the messages waiting to be written."""

    def __init__(self, server: ExchangeServer, peer: str) -> None:
        self._server = server
        self._peer = peer
        self._calls: dict[int, _Call] = {}
        self._out = Outbox(xpb.ExchangeResponse, lambda message, number: message.frames.add(call=number))
        self._tail: xpb.ExchangeEngineFrame | None = None  # the last frame waiting, while more messages may join it
        self._wake = self._out.ready
        self._reading = True
        self._broken = False  # the reader failed: no cancel or credit can come any more, so the calls end now
        self._retiring = False  # the engine refuses new calls: say so once, end when the calls have
        self._announce = False

    async def run(self, requests: AsyncIterator[xpb.ExchangeRequest]) -> AsyncGenerator[xpb.ExchangeResponse, None]:
        """Read frames in a task of their own; write what is ready whenever there is some; end when the caller has
        closed its side (or the engine is retiring the exchange) and no call is left."""
        drain = self._server.drain
        forget = drain.on_refusal(self._retire) if drain is not None else None
        if drain is not None and drain.refusing:
            self._retire()
        reader = asyncio.create_task(self._read(requests))
        try:
            while self._reading or self._calls or self._out:
                await self._wake.wait()
                await gather(len(self._calls) - 1)
                self._wake.clear()
                if self._broken:
                    return
                while self._out or self._announce:
                    yield self._next_message()
                if self._retiring and not self._calls:
                    return
        finally:
            if forget is not None:
                forget()
            await self._close(reader)

    async def _close(self, reader: asyncio.Task[None]) -> None:
        """Cancel the reader and every call left (the caller is gone or the stream broke), and wait for them."""
        tasks = [reader, *(call.task for call in self._calls.values() if call.task is not None)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, requests: AsyncIterator[xpb.ExchangeRequest]) -> None:
        try:
            async for request in requests:
                for frame in request.frames:
                    self._take(frame)
            # The caller closed its side: no credit can come any more, so its streams are no longer held for it
            # (the stream's own HTTP/2 flow control still bounds what waits to be read).
            for call in self._calls.values():
                call.credit.lift()
        except Exception as exc:  # the stream broke as we read: grpc ends the exchange, and we with it
            log.debug("exchange with %s broke: %r", self._peer, exc)
            self._broken = True
        finally:
            self._reading = False
            self._wake.set()

    def _retire(self) -> None:
        self._retiring = self._announce = True
        self._wake.set()

    def _take(self, frame: xpb.ExchangeClientFrame) -> None:
        """One frame from the caller."""
        step = frame.WhichOneof("kind")
        number = frame.call
        if step == "start":
            self._start(number, frame.start)
            return
        call = self._calls.get(number)
        if step is None:
            self._reject(number, _NO_STEP)
        elif call is None:
            return  # a cancel or credit for a call that has ended meanwhile (its end frame crossed them)
        elif step == "cancel":
            if call.task is not None:
                call.task.cancel()
        else:
            call.credit.grant(frame.credit.messages)

    def _start(self, number: int, start: xpb.ExchangeCallStart) -> None:
        if number in self._calls:
            self._reject(number, (grpc.StatusCode.INVALID_ARGUMENT, f"Call {number} is already in flight", ()))
            return
        if self._retiring:
            self._end(number, _REFUSED)
            return
        method = self._server.paths.get(start.method)
        if method is None:
            self._end(number, _UNKNOWN_METHOD)
            return
        try:
            request = method.request.FromString(start.request)
        except Exception:  # any parser failure means the same thing: not this method's message
            self._server.undecodable.note(start.method, self._peer)
            self._end(number, _UNDECODABLE)
            return
        metadata = tuple([(entry.key, entry.value) for entry in start.metadata])
        try:
            timeout = start.timeout.ToTimedelta().total_seconds() if start.HasField("timeout") else None
        except (OverflowError, ValueError):  # beyond any Duration: a malformed frame, not a broken exchange
            self._end(number, _BAD_TIMEOUT)
            return
        call = self._calls[number] = _Call(_Credit(start.window))
        call.task = asyncio.create_task(self._run(number, call, method, request, metadata, timeout))
        # Forgotten when its task is done, even one cancelled before it ran (start and cancel in one message).
        call.task.add_done_callback(lambda _: self._forget(number, call))

    def _forget(self, number: int, call: _Call) -> None:
        """Call `number`'s task is over: its state goes (an exchange ends once it has no call left)."""
        if self._calls.get(number) is call:
            del self._calls[number]
        self._wake.set()

    def _reject(self, number: int, status: Status) -> None:
        """A malformed frame for `number`: the call (if it runs) is cancelled and ends with `status`."""
        call = self._calls.pop(number, None)
        if call is not None and call.task is not None:
            call.task.cancel()
        self._end(number, status)

    async def _run(
        self, number: int, call: _Call, method: Method, request: Message, metadata: Metadata, limit: float | None
    ) -> None:
        """One call, as its own RPC would run under the guard: tracked, within its deadline, cut as a shutdown."""
        server = self._server
        ctx = call_context(metadata, self._peer, limit, server.front_doors)
        with server.drain.track(call_name(metadata)) if server.drain is not None else nullcontext():
            try:
                await within(limit, self._answer(number, call.credit, method, request, ctx))
            except TimeoutError:
                self._end(number, failure(DeadlineExceededError(), ctx))
            except asyncio.CancelledError as exc:
                if not absorb_cut(exc):
                    raise  # a cancel frame, or the exchange closing: nobody to answer
                self._end(number, failure(ShuttingDownError(), ctx))

    async def _answer(self, number: int, credit: _Credit, method: Method, request: Message, ctx: CallContext) -> None:
        """Run the method: a unary call's answer with its end; a stream's messages, each when its credit allows."""
        try:
            if method.unary is not None:
                result = await method.unary(request, ctx)
                self._end(number, (grpc.StatusCode.OK, "", reply_metadata(ctx.reply)), result.SerializeToString())
                return
            async with aclosing(replies(method, request, ctx)) as messages:
                async for metadata, message in messages:
                    await credit.take()
                    self._send(number, metadata, message.SerializeToString())
        except Exception as exc:
            self._end(number, failure(exc, ctx))
            return
        self._end(number, _OK)

    def _frame(self, number: int, size: int) -> xpb.ExchangeEngineFrame:
        frame: xpb.ExchangeEngineFrame = self._out.frame(number, size)
        self._tail = frame
        return frame

    def _send(self, number: int, metadata: Metadata, message: bytes) -> None:
        """A message of call `number` (after its reply metadata, the first time)."""
        tail = self._tail
        if tail is not None and tail.call == number and not metadata and self._out.fits(len(message)):
            tail.messages.append(message)  # the call's previous frame has not left yet: one frame for both
            return
        frame = self._frame(number, len(message))
        if metadata:
            put_metadata(frame.reply_metadata, metadata)
        frame.messages.append(message)

    def _end(self, number: int, status: Status, message: bytes | None = None) -> None:
        """Call `number` ends with `status` (after a last `message`, a unary call's answer)."""
        code, details, trailing = status
        frame = self._frame(number, len(message) if message is not None else 0)
        if message is not None:
            frame.messages.append(message)
        end = frame.end
        end.code = _NUMBERS[code]
        if details:
            end.details = details
        put_metadata(end.trailing_metadata, trailing)
        self._tail = None

    def _next_message(self) -> xpb.ExchangeResponse:
        """The oldest message waiting (announcing the retirement in the first one after it began)."""
        message = self._out.take()
        if not self._out:
            self._tail = None
        if self._announce:
            message.retiring, self._announce = True, False
        return message
