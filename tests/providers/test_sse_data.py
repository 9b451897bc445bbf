"""`sse_data`, the SSE reader every provider streams through, against a real aiohttp server that sends the body in
pieces (one TCP write each, a pause between): events whose lines, and newlines, arrive split anywhere read the same."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from gateway.providers import http
from gateway.providers.answer import BrokenAnswer
from gateway.providers.http import sse_data
from gateway.providers.transport import UpstreamClient
from tests.providers.serving import served

BODY = (
    b": ping\n\n"
    b'data: {"a":1}\n\n'
    b"event: delta\nid: 7\ndata: first\ndata:second\n\n"  # multi-line data, joined with a newline
    b"data: crlf\r\n\r\n"
    b"\n\n"  # blank lines with no data dispatch nothing
    b"data: [DONE]\n\n"
)
EXPECTED = [b'{"a":1}', b"first\nsecond", b"crlf", b"[DONE]"]


async def read_events(body: bytes, piece: int) -> list[bytes]:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for start in range(0, len(body), piece):
            await resp.write(body[start : start + piece])
            await asyncio.sleep(0.001)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", handler)
    async with served(app) as port:
        client = UpstreamClient(limit=1, connect_timeout=5, read_timeout=5, headers={})
        try:
            async with client.get(f"http://127.0.0.1:{port}/") as resp:
                return [data async for data in sse_data(resp)]
        finally:
            await client.close()


@pytest.mark.parametrize("piece", [1, 2, 5, 17, len(BODY)])
async def test_events_read_the_same_however_the_body_is_split(piece: int) -> None:
    assert await read_events(BODY, piece) == EXPECTED


async def test_an_unterminated_last_event_is_discarded() -> None:
    assert await read_events(b"data: one\n\ndata: two\n", 4) == [b"one"]
    assert await read_events(b"data: one\n\ndata: two", 4) == [b"one"]  # nor its line's newline


async def test_a_last_blank_line_without_its_newline_still_dispatches() -> None:
    # As aiohttp's readline gave it: the body's last bytes are a line, newline or not.
    assert await read_events(b"data: one\n \t", 3) == [b"one"]


async def test_a_line_over_the_limit_is_a_broken_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "_MAX_LINE", 64)
    assert await read_events(b"data: " + b"x" * 60 + b"\n\n", 8) == [b"x" * 60]
    with pytest.raises(BrokenAnswer, match="over 64 bytes"):
        await read_events(b"data: " + b"x" * 200 + b"\n\n", 8)
