"""The front door's connection deadlines, with raw sockets: an idle keep-alive connection, headers that never end, a
chunked body that never ends, and one connection over `server.max_connections`; each close counted by its reason
(`tollgate_http_connections_closed_total`), and the metric scraped from a running `tollgate serve`."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import orjson
import pytest

from gateway.assemble import assemble
from gateway.config import parse_config
from gateway.frontdoor.app import create_app, start_http_server
from gateway.frontdoor.server import HttpServer

CONFIG = """
auth: none
server: {header_timeout: 300ms, body_timeout: 300ms, keepalive_timeout: 400ms, max_connections: 3}
backends: [{name: demo, provider: mock, options: {chunks: 2}}]
models: [{name: demo, targets: [{backend: demo, model: tollgate-demo}]}]
"""
REQUEST = b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}]}'
SLACK = 1.0  # loop scheduling on a busy machine


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    config = parse_config(CONFIG, os.environ)
    engine = assemble(config).engine
    await engine.start()
    http = await start_http_server(create_app(engine, config.server), "127.0.0.1:0", config.server)
    yield http
    await http.close()
    await engine.close()


async def connect(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), seconds)
    return data, time.monotonic() - started


def post(body: bytes) -> bytes:
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def test_idle_keepalive_connection_is_closed(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(post(REQUEST))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1]
    )
    await reader.readexactly(length)
    rest, took = await closed_within(reader, 0.4 + SLACK)  # then nothing: closed at keepalive_timeout
    assert rest == b""
    assert took >= 0.3
    await asyncio.sleep(0.01)  # the server's side of the close
    assert server.connections.closed == {
        "keepalive_timeout": 1,
        "header_timeout": 0,
        "body_timeout": 0,
        "max_connections": 0,
    }
    writer.close()


async def test_a_connection_the_client_closes_is_not_counted(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(post(REQUEST))
    await reader.readuntil(b"\r\n\r\n")
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.05)
    assert sum(server.connections.closed.values()) == 0


async def test_headers_that_never_end_get_408(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and nothing more
    data, took = await closed_within(reader, 0.3 + SLACK)
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert orjson.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
    assert took >= 0.25
    assert server.connections.timed_out == 1
    writer.close()


async def test_a_silent_new_connection_gets_408(server: HttpServer) -> None:
    reader, writer = await connect(server)
    data, _ = await closed_within(reader, 0.3 + SLACK)
    assert data.startswith(b"HTTP/1.1 408")
    writer.close()


async def test_chunked_body_that_never_ends_gets_408_and_the_connection_closes(server: HttpServer) -> None:
    reader, writer = await connect(server)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n" + b"5\r\n" + b'{"mod' + b"\r\n")  # then nothing
    data, took = await closed_within(reader, 0.3 + 2.0 + SLACK)  # the body deadline, then lingering
    assert data.startswith(b"HTTP/1.1 408")
    assert b'"request_timeout"' in data
    assert b"Connection: close" in data or b"connection: close" in data.lower()
    assert took < 0.3 + 2.0 + SLACK
    assert server.connections.closed["body_timeout"] == 1
    writer.close()


async def test_connections_over_the_cap_are_refused_with_503(server: HttpServer) -> None:
    held = [await connect(server) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert server.connections.open_connections == 3
    reader, writer = await connect(server)
    data, _ = await closed_within(reader, SLACK)
    assert data.startswith(b"HTTP/1.1 503")
    assert b"Retry-After: 1" in data
    assert server.connections.refused == 1
    writer.close()
    for _, w in held:
        w.close()
    await asyncio.sleep(0.05)
    again_reader, again = await connect(server)  # room again once they are gone
    again.write(post(REQUEST))
    assert (await again_reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
    again.close()


async def test_defaults_are_documented_values() -> None:
    config = parse_config(CONFIG.replace("server:", "telemetry: {}\n#"), os.environ).server
    assert (config.header_timeout, config.body_timeout, config.keepalive_timeout) == (10.0, 60.0, 75.0)
    assert (config.max_connections, config.drain_delay, config.shutdown_grace) == (10_000, 2.0, 10.0)
    assert replace(config, drain_delay=0.0).drain_delay == 0.0
