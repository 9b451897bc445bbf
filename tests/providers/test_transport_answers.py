"""The upstream client against answers a well-behaved server does not send, and the pool's edges: a second answer in
one packet, a slot freed under load, a connection the server just ended, an endless header, compressed bodies raw,
cut short or empty, a Host header of the caller's, a 101, a transfer coding other than chunked."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from gateway.providers.answer import Answer, BrokenAnswer, TransportError
from tests.providers.test_transport import Handler, answering, client, raw_server, read_head


@asynccontextmanager
async def answered(handle: Handler) -> AsyncIterator[Answer]:
    """The answer to one POST from a server whose connections `handle` answers."""
    async with raw_server(handle) as url, client() as upstream, upstream.post(url + "/x", b"{}") as answer:
        yield answer


async def test_a_second_answer_in_one_packet_neither_replaces_the_first_nor_lets_the_connection_go_on() -> None:
    first = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    second = b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\nX-Second: 1\r\n\r\nboom"
    async with raw_server(answering(first + second, then_close=False)) as url, client() as upstream:
        async with upstream.post(url + "/x", b"{}") as answer:
            assert answer.status == 200
            assert "X-Second" not in answer.headers
            assert await answer.read() == b"hi"
            connection = answer.connection
        assert connection.closed  # bytes after the answer: the connection is out of step


async def test_an_endless_header_line_is_refused_before_the_read_timeout() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
        try:
            for _ in range(64):  # 4 MiB of one header value, well past the 256 KiB limit, and it never ends
                writer.write(b"a" * 65536)
                await writer.drain()
            await asyncio.sleep(10)
        except (ConnectionError, asyncio.CancelledError):
            pass
        writer.close()

    async with raw_server(handle) as url, client(read_timeout=3.0) as upstream:
        started = time.monotonic()
        with pytest.raises(TransportError):
            async with upstream.post(url + "/x", b"{}"):
                pass
        assert time.monotonic() - started < 2.0


async def test_a_raw_deflate_body_is_decoded() -> None:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # what many servers send as "deflate" (aiohttp reads it)
    body = compressor.compress(b"hello world" * 10) + compressor.flush()
    answer_bytes = b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    async with answered(answering(answer_bytes)) as answer:
        assert await answer.read() == b"hello world" * 10


async def test_a_truncated_gzip_body_is_a_broken_answer() -> None:
    body = gzip.compress(b"x" * 100_000 + bytes(range(256)) * 100)[:-20]  # cut before its end and its checksum
    answer_bytes = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    async with answered(answering(answer_bytes)) as answer:
        with pytest.raises(BrokenAnswer):
            await answer.read()


async def test_a_host_header_given_by_the_caller_replaces_the_url_s() -> None:
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await read_head(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async with (
        raw_server(handle) as url,
        client() as upstream,
        upstream.post(url + "/x", b"{}", headers={"Host": "api.example.com"}) as answer,
    ):
        await answer.read()
    hosts = [line for line in heads[0].split(b"\r\n") if line.lower().startswith(b"host:")]
    assert hosts == [b"Host: api.example.com"]


async def test_a_101_answer_is_a_transport_error_not_an_exception_in_the_protocol() -> None:
    answer_bytes = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    async with raw_server(answering(answer_bytes, then_close=False)) as url, client(read_timeout=2.0) as upstream:
        with pytest.raises((TransportError, OSError)):
            async with upstream.post(url + "/x", b"{}"):
                pass
    assert [context.get("message") for context in errors] == []


async def test_a_connection_whose_server_ended_it_is_not_handed_out_before_connection_lost_runs() -> None:
    """eof_received has run (the transport is closing) but connection_lost is still queued: the pool must not reuse
    the connection in that loop iteration."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()  # a keep-alive connection the server ends while it is idle
        while True:  # and later calls are answered on new connections
            try:
                await read_head(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break

    connections: list[object] = []

    async def fresh(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        if len(connections) == 1:
            await handle(reader, writer)
            return
        await answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")(reader, writer)

    async with raw_server(fresh) as url, client() as upstream:
        async with upstream.post(url + "/x", b"{}") as answer:
            assert await answer.read() == b"hi"
            connection = answer.connection
        transport = connection.transport
        assert transport is not None
        while not transport.is_closing():  # noqa: ASYNC110  # no event says a transport began closing
            await asyncio.sleep(0)
        # The window: eof_received has run (the transport is closing), connection_lost is still queued.
        async with upstream.post(url + "/x", b"{}") as answer:  # no await in between
            assert await answer.read() == b"ok"


async def test_a_body_under_a_transfer_coding_other_than_chunked_ends_when_the_connection_does() -> None:
    answer_bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nall of it"
    async with answered(answering(answer_bytes)) as answer:
        assert await answer.read() == b"all of it"


async def test_an_empty_gzip_body_is_an_empty_body() -> None:
    answer_bytes = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 0\r\n\r\n"
    async with answered(answering(answer_bytes)) as answer:
        assert await answer.read() == b""


async def test_a_woken_waiter_is_not_overtaken_by_a_newcomer() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with raw_server(answering(ok, then_close=False)) as url, client(limit=1) as upstream:
        first = await upstream.send(b"POST", url + "/x", b"{}")
        await first.read()
        waiter = asyncio.create_task(upstream.send(b"POST", url + "/x", b"{}"))
        await asyncio.sleep(0.01)  # waiting for the slot
        # A newcomer whose first step is already queued when the slot is freed, as under load:
        newcomer = asyncio.create_task(upstream.send(b"POST", url + "/x", b"{}"))
        upstream.release(first)  # wakes the waiter, which must get the slot before the newcomer
        done, _ = await asyncio.wait([waiter, newcomer], return_when=asyncio.FIRST_COMPLETED)
        assert done == {waiter}
        upstream.release(waiter.result())
        upstream.release(await newcomer)
        assert upstream._in_use == 0
