"""What the tests of tollgate's gRPC server (`gateway.wire_server`) call it with: a servicer written for grpc.aio,
registered as generated code registers one (generic handlers of all four kinds), grpc's own client to call it, and
a raw socket's helpers for what a hostile client sends."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from typing import Any

import grpc
import hpack

from gateway.http2 import PREFACE, frame
from gateway.wire_server import ServerConnection, WireServer
from tests.polling import until

SERVICE = "test.Echo"


def as_bytes(value: bytes) -> bytes:
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


def handlers(echo: Echo) -> grpc.GenericRpcHandler[Any, Any]:
    plain = {"request_deserializer": as_bytes, "response_serializer": as_bytes}
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


def method(channel: grpc.aio.Channel, kind: str, name: str) -> Any:
    return getattr(channel, kind)(f"/{SERVICE}/{name}")


async def raw(port: int, data: bytes) -> bytes:
    """Send `data` on a new connection; everything the server says until it closes (or 3 s pass)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    received = await read_all(reader)
    writer.close()
    return received


def frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    found, at = [], 0
    while len(data) - at >= 9:
        high, low, kind, flags, stream = struct.unpack_from(">BHBBI", data, at)
        length = high << 16 | low
        found.append((kind, flags, stream, data[at + 9 : at + 9 + length]))
        at += 9 + length
    return found


def request_headers(path: str, extra: list[tuple[str, str]] | None = None) -> bytes:
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


def goaway_code(said: list[tuple[int, int, int, bytes]]) -> int | None:
    codes = [struct.unpack(">II", payload[:8])[1] for kind, _, _, payload in said if kind == 7]
    return codes[0] if codes else None


async def connected(server: WireServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, ServerConnection]:
    before = set(server.connections)
    reader, writer = await asyncio.open_connection("127.0.0.1", server._listeners[0].sockets[0].getsockname()[1])
    writer.write(PREFACE + frame(4, 0, 0))
    await until(lambda: bool(server.connections - before))
    return reader, writer, next(iter(server.connections - before))


async def read_all(reader: asyncio.StreamReader, seconds: float = 3.0) -> bytes:
    received = b""
    try:
        async with asyncio.timeout(seconds):
            while chunk := await reader.read(65536):
                received += chunk
    except (TimeoutError, ConnectionError):
        pass
    return received
