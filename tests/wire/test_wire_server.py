"""`gateway.wire_server` called by grpc's own client (grpc.aio), for what a gRPC client does: every kind of method,
metadata both ways, statuses, large messages and streams, compression, deadlines and cancels, backpressure, stopping,
and both address families."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import pytest

from gateway import wire_call
from gateway.http2 import WINDOW
from gateway.wire_call import grpc_timeout
from gateway.wire_server import WireServer
from tests.polling import until
from tests.wire.echo import Echo, handlers, method


async def test_unary_with_metadata_both_ways(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    _, echo, channel = served
    call = method(channel, "unary_unary", "Unary")(
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
        await method(channel, "unary_unary", "Unary")(b"abort", timeout=5)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.value.details() == "nön-ASCII 100% details"
    assert dict(cast(Any, failure.value.trailing_metadata()))["why-bin"] == b"\x00\xff"
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await method(channel, "unary_unary", "Unary")(b"code", timeout=5)
    assert (failure.value.code(), failure.value.details()) == (grpc.StatusCode.NOT_FOUND, "set, not raised")


async def test_a_handler_bug_is_unknown_and_logged(
    served: tuple[WireServer, Echo, grpc.aio.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    _, _, channel = served
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await method(channel, "unary_unary", "Unary")(b"boom", timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNKNOWN
    assert "a bug" in (failure.value.details() or "")
    assert any("/test.Echo/Unary failed" in r.getMessage() for r in caplog.records)


async def test_unknown_method_is_unimplemented(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    _, _, channel = served
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await method(channel, "unary_unary", "Nothing")(b"", timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_streams_of_every_kind(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    _, _, channel = served
    # 200 messages of 100 KiB: far past every window, so flow control has to work both ways.
    pieces = [m async for m in method(channel, "unary_stream", "ServerStream")(struct.pack(">II", 200, 100 << 10))]
    assert len(pieces) == 200
    assert all(p == bytes([n % 256]) * (100 << 10) for n, p in enumerate(pieces))

    async def requests() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * (100 << 10)

    assert (
        await method(channel, "stream_unary", "ClientStream")(requests(), timeout=10) == str(100 * (100 << 10)).encode()
    )
    bidi = method(channel, "stream_stream", "Bidi")()
    for word in (b"a", b"bc", b"def"):
        await bidi.write(word)
        assert await bidi.read() == word.upper()
    await bidi.done_writing()
    assert await bidi.read() == grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
    assert await bidi.code() == grpc.StatusCode.OK
    written = [m async for m in method(channel, "unary_stream", "Written")(b"one,two,three")]
    assert written == [b"one", b"two", b"three"]
    both = method(channel, "stream_stream", "ReadWrite")()
    for word in (b"abc", b"de"):
        await both.write(word)
        assert await both.read() == word[::-1]  # read as str (the deserializer's), written back through str.encode
    await both.done_writing()
    assert await both.code() == grpc.StatusCode.OK


async def test_large_messages_both_ways(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    _, _, channel = served
    big = bytes(range(256)) * (40 << 10)  # 10 MiB: more than a window, in one message
    assert await method(channel, "unary_unary", "Unary")(big, timeout=20) == big[::-1]


async def test_a_message_over_the_limit_is_resource_exhausted(
    served: tuple[WireServer, Echo, grpc.aio.Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, channel = served
    monkeypatch.setattr(wire_call, "MAX_MESSAGE", 1000)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await method(channel, "unary_unary", "Unary")(b"x" * 1001, timeout=5)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await method(channel, "unary_unary", "Unary")(b"x" * 1000, timeout=5) == b"x" * 1000


async def test_compressed_requests_are_taken(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    _, _, channel = served
    for compression in (grpc.Compression.Gzip, grpc.Compression.Deflate):
        call = method(channel, "unary_unary", "Unary")(b"squeeze me" * 100, compression=compression, timeout=5)
        assert await call == (b"squeeze me" * 100)[::-1]


async def test_the_deadline_cancels_the_handler(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    server, echo, channel = served
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await method(channel, "unary_unary", "Unary")(b"slow", timeout=0.3)
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(echo.cancelled.wait(), 5)
    await until(lambda: not server.calls)


async def test_a_client_cancel_cancels_the_handler(served: tuple[WireServer, Echo, grpc.aio.Channel]) -> None:
    server, echo, channel = served
    call = method(channel, "unary_unary", "Unary")(b"slow", timeout=10)
    await until(lambda: bool(server.calls))
    call.cancel()
    await asyncio.wait_for(echo.cancelled.wait(), 5)
    await until(lambda: not server.calls)


async def test_a_reader_that_does_not_read_holds_the_client_back(
    served: tuple[WireServer, Echo, grpc.aio.Channel],
) -> None:
    """A handler that reads nothing: the client can send a window's worth, then waits; nothing piles up."""
    _, echo, channel = served
    call = method(channel, "stream_unary", "ClientStream")(metadata=(("idle", "1"),), timeout=30)
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
    waiting = asyncio.ensure_future(method(channel, "unary_unary", "Unary")(b"wait", timeout=10))
    await until(lambda: bool(server.calls))
    stopping = asyncio.ensure_future(server.stop(5))
    await asyncio.sleep(0.2)
    echo.release.set()
    assert await waiting == b"tiaw"
    await stopping
    slow = asyncio.ensure_future(method(channel, "unary_unary", "Unary")(b"slow", timeout=10))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await slow
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_stop_after_its_grace_ends_calls_unavailable() -> None:
    echo = Echo()
    server = WireServer()
    server.add_generic_rpc_handlers((handlers(echo),))
    port = await server.start("127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        slow = asyncio.ensure_future(method(channel, "unary_unary", "Unary")(b"slow", timeout=10))
        await until(lambda: bool(server.calls))
        await server.stop(0.2)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await slow
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert echo.cancelled.is_set()


async def test_listens_on_every_address_of_both_families() -> None:
    server = WireServer()
    server.add_generic_rpc_handlers((handlers(Echo()),))
    port = await server.start("[::]:0")
    try:
        for host in ("127.0.0.1", "[::1]"):
            async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
                assert await method(channel, "unary_unary", "Unary")(b"ab", timeout=5) == b"ba"
    finally:
        await server.stop(0)


def test_grpc_timeout_header() -> None:
    assert grpc_timeout(b"100m") == pytest.approx(0.1)
    assert grpc_timeout(b"5S") == 5.0
    assert grpc_timeout(b"2H") == 7200.0
    for bad in (b"", b"S", b"123456789S", b"10x", b"-1S"):
        with pytest.raises(ValueError):
            grpc_timeout(bad)
