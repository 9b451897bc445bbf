"""The upstream client (gateway.providers.transport) against real servers on loopback: aiohttp apps for well-formed
HTTP, and raw asyncio servers for the answers a well-behaved server never sends (cut short, garbage, close-delimited,
stalled)."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from gateway.providers import answer as answers
from gateway.providers.answer import BrokenAnswer, ConnectFailed, MalformedAnswer
from gateway.providers.transport import InvalidHeader, UpstreamClient, multipart_form
from tests.providers.serving import served
from tests.security.pki import Pki

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def client(**settings: float) -> AsyncIterator[UpstreamClient]:
    options: dict[str, float] = {"limit": 10, "connect_timeout": 2.0, "read_timeout": 5.0, **settings}
    upstream = UpstreamClient(
        limit=int(options["limit"]),
        connect_timeout=options["connect_timeout"],
        read_timeout=options["read_timeout"],
        headers={"Authorization": "Bearer k"},
    )
    try:
        yield upstream
    finally:
        await upstream.close()


@asynccontextmanager
async def raw_server(handle: Handler) -> AsyncIterator[str]:
    """A TCP server whose every connection `handle` answers byte for byte; yields its base URL."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """A request's head; its body, if it has a Content-Length, read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


def answering(answer: bytes, *, then_close: bool = True) -> Handler:
    """A server that writes `answer` to a request, then closes the connection or (`then_close` False) answers every
    further request on it the same way."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_head(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(answer)
            await writer.drain()
            if then_close:
                break
        writer.close()

    return handle


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # reads the request, never answers


def counting_app(peers: list[object]) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        body = await request.read()
        return web.json_response({"got": len(body), "auth": request.headers.get("Authorization")})

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    return app


async def test_calls_reuse_one_kept_alive_connection() -> None:
    peers: list[object] = []
    async with served(counting_app(peers)) as port, client() as upstream:
        for _ in range(20):
            async with upstream.post(f"http://127.0.0.1:{port}/echo", b"x" * 100) as answer:
                assert answer.status == 200
                assert orjson.loads(await answer.read()) == {"got": 100, "auth": "Bearer k"}
    assert len(peers) == 20
    assert len(set(peers)) == 1


async def test_no_more_than_the_limit_are_in_use_and_the_rest_wait() -> None:
    in_flight, most = 0, 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", slow)

    async def one(upstream: UpstreamClient, port: int) -> bytes:
        async with upstream.get(f"http://127.0.0.1:{port}/") as answer:
            return await answer.read()

    async with served(app) as port, client(limit=2) as upstream:
        assert await asyncio.gather(*(one(upstream, port) for _ in range(12))) == [b"ok"] * 12
    assert most == 2


async def test_a_waiting_call_cancelled_after_its_wake_passes_the_slot_on() -> None:
    ok = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", then_close=False)
    async with raw_server(ok) as url, client(limit=1) as upstream:
        holder = upstream.get(url + "/")
        answer = await holder.__aenter__()
        waiting = [asyncio.create_task(upstream.send(b"GET", url + "/", None)) for _ in range(2)]
        await asyncio.sleep(0.05)
        await answer.read()
        await holder.__aexit__(None, None, None)  # wakes the first waiter...
        waiting[0].cancel()  # ...which is cancelled before it runs: the second must get the slot
        second = await asyncio.wait_for(waiting[1], 2)
        assert second.status == 200
        upstream.release(second)


async def test_a_chunked_body_a_close_delimited_body_and_an_interim_answer() -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for piece in (b"one ", b"two ", b"three"):
            await resp.write(piece)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", chunked)
    async with served(app) as port, client() as upstream, upstream.get(f"http://127.0.0.1:{port}/") as answer:
        assert await answer.read() == b"one two three"

    close_delimited = answering(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
    async with raw_server(close_delimited) as url, client() as upstream, upstream.get(url + "/") as answer:
        assert await answer.read() == b"until the end"

    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    async with raw_server(answering(early)) as url, client() as upstream, upstream.get(url + "/") as answer:
        assert answer.status == 201
        assert "link" not in answer.headers
        assert await answer.read() == b"ok"


async def test_headers_are_found_whatever_their_case_and_repeats_are_joined() -> None:
    head = b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nX-Thing: a\r\nx-thing: b\r\nContent-Length: 0\r\n\r\n"
    async with raw_server(answering(head)) as url, client() as upstream, upstream.get(url + "/") as answer:
        assert answer.status == 429
        assert answer.headers.get("retry-after") == "7"
        assert answer.headers["RETRY-AFTER"] == "7"
        assert answer.headers.get("X-Thing") == "a, b"
        assert answer.headers.get("Missing") is None


async def test_a_body_cut_short_is_a_broken_answer_and_no_answer_is_a_reset() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"
    async with raw_server(answering(cut)) as url, client() as upstream, upstream.get(url + "/") as answer:
        assert answer.status == 200
        with pytest.raises(BrokenAnswer, match="before the end of the body"):
            await answer.read()

    async with raw_server(answering(b"")) as url, client() as upstream:
        with pytest.raises(ConnectionResetError):
            await upstream.send(b"GET", url + "/", None)


async def test_what_is_not_http_is_a_malformed_answer() -> None:
    async with raw_server(answering(b"SMTP ready\r\n\r\n")) as url, client() as upstream:
        with pytest.raises(MalformedAnswer):
            await upstream.send(b"GET", url + "/", None)


async def test_a_refused_connection_is_connect_failed() -> None:
    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with client() as upstream:
        with pytest.raises(ConnectFailed) as caught:
            await upstream.send(b"GET", f"http://127.0.0.1:{port}/", None)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


async def test_the_read_timeout_is_idle_based() -> None:
    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(6):  # 0.6 s in all, never more than 0.1 s apart
            await asyncio.sleep(0.1)
            writer.write(b"1\r\nx\r\n")
        writer.write(b"0\r\n\r\n")
        await reader.read()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
        await reader.read()

    async with raw_server(dribble) as url, client(read_timeout=0.3) as upstream, upstream.get(url + "/") as answer:
        assert await answer.read() == b"xxxxxx"
    async with raw_server(stall) as url, client(read_timeout=0.3) as upstream, upstream.get(url + "/") as answer:
        with pytest.raises(TimeoutError):
            await answer.read()
    async with raw_server(silent) as url, client(read_timeout=0.3) as upstream:  # no answer at all
        with pytest.raises(TimeoutError):
            await upstream.send(b"GET", url + "/never", None)


async def test_a_gzip_body_is_decoded() -> None:
    text = b"hello " * 1000
    packed = gzip.compress(text)
    answer_bytes = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(packed), packed)
    async with raw_server(answering(answer_bytes)) as url, client() as upstream, upstream.get(url + "/") as answer:
        assert await answer.read() == text


async def test_a_slow_reader_holds_back_the_socket_and_misses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answers, "PAUSE_AT", 64 * 1024)
    body = bytes(range(256)) * 16 * 1024  # 4 MiB

    async def flood(request: web.Request) -> web.Response:
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/", flood)
    most = 0
    async with served(app) as port, client() as upstream, upstream.get(f"http://127.0.0.1:{port}/") as answer:
        got = []
        while piece := await answer.readany():
            got.append(piece)
            most = max(most, answer._buffered + len(piece))
            await asyncio.sleep(0.001)
    assert b"".join(got) == body
    assert most < 1024 * 1024  # far below the body: the socket was paused while the reader lagged


async def test_a_partly_read_answer_closes_its_connection_and_the_next_call_opens_one() -> None:
    peers: list[object] = []

    async def big(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(body=b"z" * 200_000)

    app = web.Application()
    app.router.add_get("/", big)
    async with served(app) as port, client() as upstream:
        for _ in range(2):
            async with upstream.get(f"http://127.0.0.1:{port}/") as answer:
                assert await answer.read(10) == b"z" * 10
    assert len(set(peers)) == 2


async def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    peers: list[object] = []
    app = counting_app(peers)
    runner = web.AppRunner(app, keepalive_timeout=0.2)  # aiohttp also times a new connection out before its request
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with client() as upstream:
            for _ in range(3):
                async with upstream.post(f"http://127.0.0.1:{port}/echo", b"{}") as answer:
                    assert answer.status == 200
                    await answer.read()
                await asyncio.sleep(0.45)  # the server closes the idle connection meanwhile
    finally:
        await runner.cleanup()
    assert len(set(peers)) == 3


async def test_a_cancelled_call_closes_its_connection_and_frees_its_slot() -> None:
    closed = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        if b"/fast" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await reader.read()
            return
        await reader.read()  # until the client hangs up
        closed.set()

    async with raw_server(stall) as url, client(limit=1) as upstream:
        call = asyncio.create_task(upstream.send(b"GET", url + "/slow", None))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(closed.wait(), 2)
        async with upstream.get(url + "/fast") as answer:
            assert await answer.read() == b"ok"


async def test_a_header_that_cannot_be_sent_is_refused_before_anything_is() -> None:
    async with raw_server(silent) as url, client() as upstream:
        with pytest.raises(InvalidHeader, match="line break"):
            await upstream.send(b"GET", url + "/", None, {"anthropic-beta": "x\r\nEvil: 1"})
        with pytest.raises(InvalidHeader, match="not a header name"):
            await upstream.send(b"GET", url + "/", None, {"bad name": "x"})


async def test_tls_to_a_server_the_context_trusts(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    leaf = pki.leaf("upstream")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(leaf.cert, leaf.key)
    trusting = ssl.create_default_context(cafile=str(pki.ca_file))
    async with served(counting_app([]), server_context) as port:
        upstream = UpstreamClient(limit=2, connect_timeout=2, read_timeout=2, headers={}, ssl_context=trusting)
        try:
            async with upstream.post(f"https://localhost:{port}/echo", b"abc") as answer:
                assert orjson.loads(await answer.read()) == {"got": 3, "auth": None}
        finally:
            await upstream.close()
        stranger = UpstreamClient(limit=2, connect_timeout=2, read_timeout=2, headers={})  # the system's CAs only
        try:
            with pytest.raises(ConnectFailed):
                await stranger.send(b"GET", f"https://localhost:{port}/echo", None)
        finally:
            await stranger.close()


async def test_a_multipart_form_reads_back_as_its_fields_and_file() -> None:
    seen: dict[str, object] = {}

    async def upload(request: web.Request) -> web.Response:
        form = await request.post()
        seen.update(form)
        upload_file = form["file"]
        assert isinstance(upload_file, web.FileField)
        seen["file"] = (upload_file.filename, upload_file.content_type, upload_file.file.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/", upload)
    body, content_type = multipart_form(
        [("model", "whisper-1"), ("timestamp_granularities[]", "word")],
        ("file", 'a "clip".wav', "audio/wav", b"RIFF\x00\x01"),
    )
    async with (
        served(app) as port,
        client() as upstream,
        upstream.post(f"http://127.0.0.1:{port}/", body, {"Content-Type": content_type}) as answer,
    ):
        assert await answer.read() == b"ok"
    assert seen["model"] == "whisper-1"
    assert seen["timestamp_granularities[]"] == "word"
    assert seen["file"] == ("a %22clip%22.wav", "audio/wav", b"RIFF\x00\x01")
