"""`gateway.wire_server`: tollgate's gRPC server on the event loop, called by grpc's own client (grpc.aio) for what
a gRPC client does, and by a raw socket for what a hostile one does. The servicers here are written for grpc.aio
and registered as generated code registers them, with generic handlers of all four kinds."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any, NoReturn, cast

import grpc
import hpack
import pytest

from gateway import http2, wire_call
from gateway.http2 import PREFACE, WINDOW, frame
from gateway.wire_call import grpc_timeout
from gateway.wire_server import ServerConnection, WireServer
from tests.polling import until

SERVICE = "test.Echo"


def _bytes(value: bytes) -> bytes:
    return value


class Echo:
    """A servicer written for grpc.aio, recording what it saw."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.seen: dict[str, Any] = {}
        self.release = asyncio.Event()

    async def unary(self, request: bytes, context: Any) -> bytes:
        self.seen["metadata"] = dict(context.invocation_metadata())
        self.seen["peer"] = context.peer()
        self.seen["remaining"] = context.time_remaining()
        if request.startswith(b"abort"):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "nön-ASCII 100% details", (("why-bin", b"\x00\xff"),)
            )
        if request == b"boom":
            raise RuntimeError("a bug")
        if request == b"code":
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details("set, not raised")
            return b""
        if request == b"slow":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if request == b"wait":
            await self.release.wait()
        await context.send_initial_metadata((("initial", "yes"),))
        context.set_trailing_metadata((("trailing", "too"), ("blob-bin", b"\x01\x02\x03")))
        return request[::-1]

    async def server_stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        count, size = struct.unpack(">II", request)
        for n in range(count):
            yield bytes([n % 256]) * size

    async def client_stream(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        if context.invocation_metadata() and dict(context.invocation_metadata()).get("idle") == "1":
            await self.release.wait()  # reads nothing
        total = 0
        async for request in requests:
            total += len(request)
        return str(total).encode()

    async def bidi(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for request in requests:
            yield request.upper()

    async def read_write(self, requests: AsyncIterator[str], context: Any) -> None:
        """A bidirectional handler that reads with context.read (parsed) and writes with context.write."""
        while (request := await context.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]  # grpc-stubs
            await context.write(request[::-1])

    async def written(self, request: bytes, context: Any) -> None:
        """A streaming handler that writes with context.write, then reads nothing more."""
        for piece in request.split(b","):
            await context.write(piece)


def _handlers(echo: Echo) -> grpc.GenericRpcHandler[Any, Any]:
    plain = {"request_deserializer": _bytes, "response_serializer": _bytes}
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(echo.unary, **plain),
            "ServerStream": grpc.unary_stream_rpc_method_handler(echo.server_stream, **plain),
            "ClientStream": grpc.stream_unary_rpc_method_handler(echo.client_stream, **plain),
            "Bidi": grpc.stream_stream_rpc_method_handler(echo.bidi, **plain),
            "Written": grpc.unary_stream_rpc_method_handler(echo.written, **plain),
            "ReadWrite": grpc.stream_stream_rpc_method_handler(
                echo.read_write, request_deserializer=bytes.decode, response_serializer=str.encode
            ),
        },
    )


@pytest.fixture
async def served() -> AsyncIterator[tuple[WireServer, Echo, grpc.aio.Channel]]:
    echo = Echo()
    server = WireServer()
    server.add_generic_rpc_handlers((_handlers(echo),))
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)])
    yield server, echo, channel
    echo.release.set()
    await channel.close(None)
    await server.stop(0)


def _method(channel: grpc.aio.Channel, kind: str, name: str) -> Any:
    return getattr(channel, kind)(f"/{SERVICE}/{name}")


async def test_unary_with_metadata_both_ways(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    _, echo, channel = served
    call = _method(channel, "unary_unary", "Unary")(
        b"hello", metadata=(("who", "me"), ("raw-bin", b"\x00\x01")), timeout=5
    )
    assert await call == b"olleh"
    assert dict(cast(Any, await call.initial_metadata()))["initial"] == "yes"
    trailing = dict(cast(Any, await call.trailing_metadata()))
    assert trailing["trailing"] == "too"
    assert trailing["blob-bin"] == b"\x01\x02\x03"
    assert echo.seen["metadata"]["who"] == "me"
    assert echo.seen["metadata"]["raw-bin"] == b"\x00\x01"
    assert echo.seen["peer"].startswith("ipv4:127.0.0.1:")
    assert 0 < echo.seen["remaining"] <= 5.5  # the client rounds its grpc-timeout up


async def test_abort_and_set_code_end_with_their_status(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    _, _, channel = served
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await _method(channel, "unary_unary", "Unary")(b"abort", timeout=5)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.value.details() == "nön-ASCII 100% details"
    assert dict(cast(Any, failure.value.trailing_metadata()))["why-bin"] == b"\x00\xff"
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await _method(channel, "unary_unary", "Unary")(b"code", timeout=5)
    assert (failure.value.code(), failure.value.details()) == (grpc.StatusCode.NOT_FOUND, "set, not raised")


async def test_a_handler_bug_is_unknown_and_logged(
    served: tuple[WireServer, Echo, grpc.aio.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    _, _, channel = served
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await _method(channel, "unary_unary", "Unary")(b"boom", timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNKNOWN
    assert "a bug" in (failure.value.details() or "")
    assert any("/test.Echo/Unary failed" in r.getMessage() for r in caplog.records)


async def test_unknown_method_is_unimplemented(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    _, _, channel = served
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await _method(channel, "unary_unary", "Nothing")(b"", timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_streams_of_every_kind(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    _, _, channel = served
    # 200 messages of 100 KiB: far past every window, so flow control has to work both ways.
    pieces = [m async for m in _method(channel, "unary_stream", "ServerStream")(struct.pack(">II", 200, 100 << 10))]
    assert len(pieces) == 200
    assert all(p == bytes([n % 256]) * (100 << 10) for n, p in enumerate(pieces))

    async def requests() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * (100 << 10)

    assert (
        await _method(channel, "stream_unary", "ClientStream")(requests(), timeout=10)
        == str(100 * (100 << 10)).encode()
    )
    bidi = _method(channel, "stream_stream", "Bidi")()
    for word in (b"a", b"bc", b"def"):
        await bidi.write(word)
        assert await bidi.read() == word.upper()
    await bidi.done_writing()
    assert await bidi.read() == grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
    assert await bidi.code() == grpc.StatusCode.OK
    written = [m async for m in _method(channel, "unary_stream", "Written")(b"one,two,three")]
    assert written == [b"one", b"two", b"three"]
    both = _method(channel, "stream_stream", "ReadWrite")()
    for word in (b"abc", b"de"):
        await both.write(word)
        assert await both.read() == word[::-1]  # read as str (the deserializer's), written back through str.encode
    await both.done_writing()
    assert await both.code() == grpc.StatusCode.OK


async def test_large_messages_both_ways(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    _, _, channel = served
    big = bytes(range(256)) * (40 << 10)  # 10 MiB: more than a window, in one message
    assert await _method(channel, "unary_unary", "Unary")(big, timeout=20) == big[::-1]


async def test_a_message_over_the_limit_is_resource_exhausted(
    served: tuple[WireServer, Echo, grpc.aio.Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, channel = served
    monkeypatch.setattr(wire_call, "MAX_MESSAGE", 1000)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await _method(channel, "unary_unary", "Unary")(b"x" * 1001, timeout=5)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await _method(channel, "unary_unary", "Unary")(b"x" * 1000, timeout=5) == b"x" * 1000


async def test_compressed_requests_are_taken(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    _, _, channel = served
    for compression in (grpc.Compression.Gzip, grpc.Compression.Deflate):
        call = _method(channel, "unary_unary", "Unary")(b"squeeze me" * 100, compression=compression, timeout=5)
        assert await call == (b"squeeze me" * 100)[::-1]


async def test_the_deadline_cancels_the_handler(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    server, echo, channel = served
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await _method(channel, "unary_unary", "Unary")(b"slow", timeout=0.3)
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(echo.cancelled.wait(), 5)
    await until(lambda: not server.calls)


async def test_a_client_cancel_cancels_the_handler(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    server, echo, channel = served
    call = _method(channel, "unary_unary", "Unary")(b"slow", timeout=10)
    await until(lambda: bool(server.calls))
    call.cancel()
    await asyncio.wait_for(echo.cancelled.wait(), 5)
    await until(lambda: not server.calls)


async def test_a_reader_that_does_not_read_holds_the_client_back(
    served: tuple[WireServer, Echo, grpc.aio.Channel],
) -> None:
    """A handler that reads nothing: the client can send a window's worth, then waits; nothing piles up."""
    _, echo, channel = served
    call = _method(channel, "stream_unary", "ClientStream")(metadata=(("idle", "1"),), timeout=30)
    sent = 0

    async def write_all() -> None:
        nonlocal sent
        for _ in range(400):
            await call.write(b"y" * (64 << 10))
            sent += 64 << 10

    writer = asyncio.ensure_future(write_all())
    await asyncio.sleep(1.0)
    assert not writer.done()
    assert sent <= 2 * WINDOW  # a window, and what grpc's client buffers itself
    echo.release.set()  # now it reads: everything arrives
    await asyncio.wait_for(writer, 20)
    await call.done_writing()
    assert await call == str(400 * (64 << 10)).encode()


async def test_stop_lets_calls_finish_then_ends_the_rest(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    server, echo, channel = served
    waiting = asyncio.ensure_future(_method(channel, "unary_unary", "Unary")(b"wait", timeout=10))
    await until(lambda: bool(server.calls))
    stopping = asyncio.ensure_future(server.stop(5))
    await asyncio.sleep(0.2)
    echo.release.set()
    assert await waiting == b"tiaw"
    await stopping
    slow = asyncio.ensure_future(_method(channel, "unary_unary", "Unary")(b"slow", timeout=10))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await slow
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_stop_after_its_grace_ends_calls_unavailable() -> None:
    echo = Echo()
    server = WireServer()
    server.add_generic_rpc_handlers((_handlers(echo),))
    port = await server.start("127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        slow = asyncio.ensure_future(_method(channel, "unary_unary", "Unary")(b"slow", timeout=10))
        await until(lambda: bool(server.calls))
        await server.stop(0.2)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await slow
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert echo.cancelled.is_set()


async def test_listens_on_every_address_of_both_families() -> None:
    server = WireServer()
    server.add_generic_rpc_handlers((_handlers(Echo()),))
    port = await server.start("[::]:0")
    try:
        for host in ("127.0.0.1", "[::1]"):
            async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
                assert await _method(channel, "unary_unary", "Unary")(b"ab", timeout=5) == b"ba"
    finally:
        await server.stop(0)


def test_grpc_timeout_header() -> None:
    assert grpc_timeout(b"100m") == pytest.approx(0.1)
    assert grpc_timeout(b"5S") == 5.0
    assert grpc_timeout(b"2H") == 7200.0
    for bad in (b"", b"S", b"123456789S", b"10x", b"-1S"):
        with pytest.raises(ValueError):
            grpc_timeout(bad)


# ------------------------------------------------------------------------------------------- a hostile client


async def _raw(port: int, data: bytes) -> bytes:
    """Send `data` on a new connection; everything the server says until it closes (or 3 s pass)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    received = b""
    try:
        async with asyncio.timeout(3):
            while chunk := await reader.read(65536):
                received += chunk
    except TimeoutError:
        pass
    writer.close()
    return received


def _frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    found, at = [], 0
    while len(data) - at >= 9:
        high, low, kind, flags, stream = struct.unpack_from(">BHBBI", data, at)
        length = high << 16 | low
        found.append((kind, flags, stream, data[at + 9 : at + 9 + length]))
        at += 9 + length
    return found


def _request_headers(path: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    fields = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "x"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *(extra or []),
    ]
    return hpack.Encoder().encode(fields)


async def test_what_is_not_http2_is_closed_and_the_server_goes_on(
    served: tuple[WireServer, Echo, grpc.aio.Channel],
) -> None:
    server, _, channel = served
    port = server._listeners[0].sockets[0].getsockname()[1]
    assert b"HTTP/1.1" not in await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    even = PREFACE + frame(4, 0, 0) + frame(1, 0x4 | 0x1, 2, _request_headers("/test.Echo/Unary"))
    goaway = [f for f in _frames(await _raw(port, even)) if f[0] == 7]
    assert goaway and struct.unpack(">II", goaway[0][3][:8])[1] == 1  # PROTOCOL_ERROR
    assert await _method(channel, "unary_unary", "Unary")(b"still", timeout=5) == b"llits"


async def test_bad_headers_end_the_call_not_the_connection(
    served: tuple[WireServer, Echo, grpc.aio.Channel],
) -> None:
    server, _, _ = served
    port = server._listeners[0].sockets[0].getsockname()[1]
    calls = (
        frame(1, 0x4, 1, _request_headers("/test.Echo/Unary", [("grpc-timeout", "soon")]))
        + frame(1, 0x4, 3, _request_headers("/test.Echo/Unary", [("grpc-encoding", "snappy")]))
        + frame(1, 0x4, 5, _request_headers("/test.Echo/Unary", [("key-bin", "abcde")]))
    )
    said = _frames(await _raw(port, PREFACE + frame(4, 0, 0) + calls))
    decoder = hpack.Decoder()
    statuses = {}
    for kind, _, stream, payload in said:
        if kind == 1:
            statuses[stream] = dict(cast(Any, decoder.decode(payload))).get("grpc-status")
    assert statuses == {1: "3", 3: "12", 5: "3"}  # INVALID_ARGUMENT, UNIMPLEMENTED, INVALID_ARGUMENT


async def test_held_bytes_past_the_budget_close_the_connection(
    served: tuple[WireServer, Echo, grpc.aio.Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _, channel = served
    monkeypatch.setattr(wire_call, "MAX_BUFFERED", 100_000)
    port = server._listeners[0].sockets[0].getsockname()[1]
    opened = b"".join(
        frame(1, 0x4, n, _request_headers("/test.Echo/Unary"))
        + frame(0, 0, n, struct.pack(">BI", 0, 1 << 20) + b"z" * 30_000)
        for n in (1, 3, 5, 7)
    )
    said = _frames(await _raw(port, PREFACE + frame(4, 0, 0) + opened))
    assert any(kind == 7 for kind, *_ in said)  # GOAWAY: the connection is over
    await until(lambda: not server.calls)
    assert await _method(channel, "unary_unary", "Unary")(b"ok", timeout=5) == b"ko"


def _message(data: bytes) -> bytes:
    return struct.pack(">BI", 0, len(data)) + data


def _goaway_code(said: list[tuple[int, int, int, bytes]]) -> int | None:
    codes = [struct.unpack(">II", payload[:8])[1] for kind, _, _, payload in said if kind == 7]
    return codes[0] if codes else None


async def _connected(server: WireServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, ServerConnection]:
    before = set(server.connections)
    reader, writer = await asyncio.open_connection("127.0.0.1", server._listeners[0].sockets[0].getsockname()[1])
    writer.write(PREFACE + frame(4, 0, 0))
    await until(lambda: bool(server.connections - before))
    return reader, writer, next(iter(server.connections - before))


async def _read_all(reader: asyncio.StreamReader, seconds: float = 3.0) -> bytes:
    received = b""
    try:
        async with asyncio.timeout(seconds):
            while chunk := await reader.read(65536):
                received += chunk
    except (TimeoutError, ConnectionError):
        pass
    return received


async def test_a_preface_in_pieces_is_read_whole(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    server, _, _ = served
    port = server._listeners[0].sockets[0].getsockname()[1]
    request = PREFACE + frame(4, 0, 0) + frame(1, 0x4, 1, _request_headers("/test.Echo/Unary"))
    request += frame(0, 0x1, 1, _message(b"abc"))
    for cut in (3, 10, 30):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request[:cut])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(request[cut:])
        said = _frames(await _read_all(reader, 1.0))
        writer.close()
        assert any(kind == 0 and payload == _message(b"cba") for kind, _, _, payload in said), cut


@pytest.mark.parametrize(
    ("what", "code"),
    [
        ("a frame over the frame size", 0x6),  # FRAME_SIZE_ERROR
        ("a header block over the limit", 0xB),  # ENHANCE_YOUR_CALM
        ("DATA past the stream's window", 0x3),  # FLOW_CONTROL_ERROR
        ("a PING flood", 0xB),
        ("DATA on stream 0", 0x1),  # PROTOCOL_ERROR
    ],
)
async def test_what_breaks_the_rules_ends_the_connection(
    served: tuple[WireServer, Echo, grpc.aio.Channel], what: str, code: int
) -> None:
    server, echo, channel = served
    reader, writer, connection = await _connected(server)
    opened = frame(1, 0x4, 1, _request_headers("/test.Echo/Unary")) + frame(0, 0, 1, _message(b"wait"))
    if what == "a frame over the frame size":
        writer.write(frame(0, 0, 1, b"x" * 20_000))
    elif what == "a header block over the limit":
        writer.write(frame(1, 0, 1, b"\x20" * 16_000) + frame(9, 0, 1, b"\x20" * 16_000) * 4)  # HEADERS, CONTINUATION
    elif what == "DATA past the stream's window":
        # whole messages the handler (busy with its first) does not read: they hold the window until it is gone
        writer.write(opened + frame(0, 0, 1, _message(b"y" * 15_995)) * (WINDOW // 16_000 + 2))
    elif what == "a PING flood":
        writer.write(frame(6, 0, 0, bytes(8)) * 1000)
    else:
        writer.write(frame(0, 0, 0, b"z"))
    said = _frames(await _read_all(reader))
    writer.close()
    assert _goaway_code(said) == code
    await until(lambda: connection not in server.connections)
    echo.release.set()
    assert await _method(channel, "unary_unary", "Unary")(b"on", timeout=5) == b"no"


async def test_rapid_resets_end_the_connection(
    served: tuple[WireServer, Echo, grpc.aio.Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP/2's rapid reset: streams opened and reset at once, each having started a call."""
    server, _, _ = served
    monkeypatch.setattr(http2, "_RESETS", (20, 0.0))
    reader, writer, _ = await _connected(server)
    for n in range(1, 100, 2):
        writer.write(frame(1, 0x4, n, _request_headers("/test.Echo/Unary")) + frame(3, 0, n, struct.pack(">I", 8)))
    said = _frames(await _read_all(reader))
    writer.close()
    assert _goaway_code(said) == 0xB
    await until(lambda: not server.calls)


async def test_a_peer_that_reads_nothing_is_dropped(
    served: tuple[WireServer, Echo, grpc.aio.Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers to a client that asks and never reads are counted, and it is dropped past the limit."""
    server, _, _ = served
    monkeypatch.setattr(http2, "MAX_HELD", 10_000)
    _, writer, connection = await _connected(server)
    assert connection.transport is not None
    connection.transport.set_write_buffer_limits(high=1)
    connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    for n in range(1, 20_000, 2):  # each a trailers-only UNIMPLEMENTED, never read
        writer.write(frame(1, 0x4 | 0x1, n, _request_headers("/test.Echo/Nothing")))
        if n % 1000 == 1:
            await asyncio.sleep(0.01)
    await until(lambda: connection not in server.connections)
    writer.close()


async def test_a_call_cut_inside_a_message_is_reset(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    """A deadline while an answer waits for the client's window: the stream is reset, not ended with a status
    after half a message."""
    server, _, _ = served
    reader, writer, _ = await _connected(server)
    writer.write(
        frame(4, 0, 0, struct.pack(">HI", 4, 4))  # a window of 4 bytes
        + frame(1, 0x4, 1, _request_headers("/test.Echo/Unary", [("grpc-timeout", "300m")]))
        + frame(0, 0x1, 1, _message(b"hello"))
    )
    said = [(kind, payload) for kind, _, stream, payload in _frames(await _read_all(reader, 1.5)) if stream == 1]
    writer.close()
    assert [kind for kind, _ in said] == [1, 0, 3]  # headers, 4 bytes of DATA, RST_STREAM
    assert said[1][1] == b"\x00\x00\x00\x00" and said[2][1] == struct.pack(">I", 8)  # CANCEL


async def test_trailing_metadata_that_cannot_be_sent_ends_internal() -> None:
    async def bad(request: bytes, context: Any) -> NoReturn:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no", (("clé", "v"),))
        raise AssertionError("unreachable: abort raises")

    server = WireServer()
    handler = grpc.unary_unary_rpc_method_handler(bad, request_deserializer=_bytes, response_serializer=_bytes)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", {"M": handler}),))
    port = await server.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await channel.unary_unary("/t.S/M", _bytes, _bytes)(b"x", timeout=5)
            assert failure.value.code() == grpc.StatusCode.INTERNAL
            assert not server.calls
    finally:
        await server.stop(0)


async def test_a_compressed_message_is_inflated_as_read_and_bounded(
    served: tuple[WireServer, Echo, grpc.aio.Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small gzip message that inflates past the limit is refused when its handler reads it; nothing inflated is
    held for a handler that has not."""
    _, _, channel = served
    monkeypatch.setattr(wire_call, "MAX_MESSAGE", 10_000)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await _method(channel, "unary_unary", "Unary")(bytes(50_000), compression=grpc.Compression.Gzip, timeout=5)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
