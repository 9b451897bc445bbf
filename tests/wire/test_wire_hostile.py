"""`gateway.wire_server` against a hostile client on a raw socket: what is not HTTP/2, headers gRPC cannot read,
frames and header blocks over the limits, DATA past a window, floods of PINGs and resets, a peer that reads
nothing, held bytes past the connection's budget; and the cases a gRPC client meets rarely (a preface in pieces, a
call cut inside a message, metadata that cannot be sent, a compressed message that inflates past the limit)."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any, NoReturn, cast

import grpc
import hpack
import pytest

from gateway import http2, wire_call
from gateway.grpc_messages import grpc_message
from gateway.http2 import PREFACE, WINDOW, frame
from gateway.wire_server import WireServer
from tests.polling import until
from tests.wire.echo import Echo, as_bytes, connected, frames, goaway_code, method, raw, read_all, request_headers


async def test_what_is_not_http2_is_closed_and_the_server_goes_on(
    served: tuple[WireServer, Echo, grpc.aio.Channel],
) -> None:
    server, _, channel = served
    port = server._listeners[0].sockets[0].getsockname()[1]
    assert b"HTTP/1.1" not in await raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    even = PREFACE + frame(4, 0, 0) + frame(1, 0x4 | 0x1, 2, request_headers("/test.Echo/Unary"))
    goaway = [f for f in frames(await raw(port, even)) if f[0] == 7]
    assert goaway and struct.unpack(">II", goaway[0][3][:8])[1] == 1  # PROTOCOL_ERROR
    assert await method(channel, "unary_unary", "Unary")(b"still", timeout=5) == b"llits"


async def test_bad_headers_end_the_call_not_the_connection(
    served: tuple[WireServer, Echo, grpc.aio.Channel],
) -> None:
    server, _, _ = served
    port = server._listeners[0].sockets[0].getsockname()[1]
    calls = (
        frame(1, 0x4, 1, request_headers("/test.Echo/Unary", [("grpc-timeout", "soon")]))
        + frame(1, 0x4, 3, request_headers("/test.Echo/Unary", [("grpc-encoding", "snappy")]))
        + frame(1, 0x4, 5, request_headers("/test.Echo/Unary", [("key-bin", "abcde")]))
    )
    said = frames(await raw(port, PREFACE + frame(4, 0, 0) + calls))
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
        frame(1, 0x4, n, request_headers("/test.Echo/Unary"))
        + frame(0, 0, n, struct.pack(">BI", 0, 1 << 20) + b"z" * 30_000)
        for n in (1, 3, 5, 7)
    )
    said = frames(await raw(port, PREFACE + frame(4, 0, 0) + opened))
    assert any(kind == 7 for kind, *_ in said)  # GOAWAY: the connection is over
    await until(lambda: not server.calls)
    assert await method(channel, "unary_unary", "Unary")(b"ok", timeout=5) == b"ko"


async def test_a_preface_in_pieces_is_read_whole(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    server, _, _ = served
    port = server._listeners[0].sockets[0].getsockname()[1]
    request = PREFACE + frame(4, 0, 0) + frame(1, 0x4, 1, request_headers("/test.Echo/Unary"))
    request += frame(0, 0x1, 1, grpc_message(b"abc"))
    for cut in (3, 10, 30):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request[:cut])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(request[cut:])
        said = frames(await read_all(reader, 1.0))
        writer.close()
        assert any(kind == 0 and payload == grpc_message(b"cba") for kind, _, _, payload in said), cut


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
    reader, writer, connection = await connected(server)
    opened = frame(1, 0x4, 1, request_headers("/test.Echo/Unary")) + frame(0, 0, 1, grpc_message(b"wait"))
    if what == "a frame over the frame size":
        writer.write(frame(0, 0, 1, b"x" * 20_000))
    elif what == "a header block over the limit":
        writer.write(frame(1, 0, 1, b"\x20" * 16_000) + frame(9, 0, 1, b"\x20" * 16_000) * 4)  # HEADERS, CONTINUATION
    elif what == "DATA past the stream's window":
        # whole messages the handler (busy with its first) does not read: they hold the window until it is gone
        writer.write(opened + frame(0, 0, 1, grpc_message(b"y" * 15_995)) * (WINDOW // 16_000 + 2))
    elif what == "a PING flood":
        writer.write(frame(6, 0, 0, bytes(8)) * 1000)
    else:
        writer.write(frame(0, 0, 0, b"z"))
    said = frames(await read_all(reader))
    writer.close()
    assert goaway_code(said) == code
    await until(lambda: connection not in server.connections)
    echo.release.set()
    assert await method(channel, "unary_unary", "Unary")(b"on", timeout=5) == b"no"


async def test_rapid_resets_end_the_connection(
    served: tuple[WireServer, Echo, grpc.aio.Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP/2's rapid reset: streams opened and reset at once, each having started a call."""
    server, _, _ = served
    monkeypatch.setattr(http2, "_RESETS", (20, 0.0))
    reader, writer, _ = await connected(server)
    for n in range(1, 100, 2):
        writer.write(frame(1, 0x4, n, request_headers("/test.Echo/Unary")) + frame(3, 0, n, struct.pack(">I", 8)))
    said = frames(await read_all(reader))
    writer.close()
    assert goaway_code(said) == 0xB
    await until(lambda: not server.calls)


async def test_a_peer_that_reads_nothing_is_dropped(
    served: tuple[WireServer, Echo, grpc.aio.Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers to a client that asks and never reads are counted, and it is dropped past the limit."""
    server, _, _ = served
    monkeypatch.setattr(http2, "MAX_HELD", 10_000)
    _, writer, connection = await connected(server)
    assert connection.transport is not None
    connection.transport.set_write_buffer_limits(high=1)
    connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    for n in range(1, 20_000, 2):  # each a trailers-only UNIMPLEMENTED, never read
        writer.write(frame(1, 0x4 | 0x1, n, request_headers("/test.Echo/Nothing")))
        if n % 1000 == 1:
            await asyncio.sleep(0.01)
    await until(lambda: connection not in server.connections)
    writer.close()


async def test_a_call_cut_inside_a_message_is_reset(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    """A deadline while an answer waits for the client's window: the stream is reset, not ended with a status
    after half a message."""
    server, _, _ = served
    reader, writer, _ = await connected(server)
    writer.write(
        frame(4, 0, 0, struct.pack(">HI", 4, 4))  # a window of 4 bytes
        + frame(1, 0x4, 1, request_headers("/test.Echo/Unary", [("grpc-timeout", "300m")]))
        + frame(0, 0x1, 1, grpc_message(b"hello"))
    )
    said = [(kind, payload) for kind, _, stream, payload in frames(await read_all(reader, 1.5)) if stream == 1]
    writer.close()
    assert [kind for kind, _ in said] == [1, 0, 3]  # headers, 4 bytes of DATA, RST_STREAM
    assert said[1][1] == b"\x00\x00\x00\x00" and said[2][1] == struct.pack(">I", 8)  # CANCEL


async def test_trailing_metadata_that_cannot_be_sent_ends_internal() -> None:
    async def bad(request: bytes, context: Any) -> NoReturn:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no", (("clé", "v"),))
        raise AssertionError("unreachable: abort raises")

    server = WireServer()
    handler = grpc.unary_unary_rpc_method_handler(bad, request_deserializer=as_bytes, response_serializer=as_bytes)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", {"M": handler}),))
    port = await server.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await channel.unary_unary("/t.S/M", as_bytes, as_bytes)(b"x", timeout=5)
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
        await method(channel, "unary_unary", "Unary")(bytes(50_000), compression=grpc.Compression.Gzip, timeout=5)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
