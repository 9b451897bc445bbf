"""The floor for Python: the least an aiohttp proxy that understands its traffic can do.

It parses the client's JSON body with orjson, POSTs it to the upstream on one pooled ClientSession, and re-encodes
the JSON answer; for a stream it parses each SSE ``data:`` line with orjson, re-encodes it and writes it at once.
No routing, no auth, no accounting: whatever tollgate spends beyond this is its own overhead.

    python -m bench.floor_proxy --upstream http://127.0.0.1:9000/v1 --port 0

prints ``listening <base_url>`` once it accepts connections and runs (on uvloop) until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import orjson
import uvloop
from aiohttp import ClientSession, ClientTimeout, DummyCookieJar, StreamReader, TCPConnector, web

__all__ = ["FloorProxy", "main"]

_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_DATA = b"data:"
_DONE = b"[DONE]"
_DONE_EVENT = b"data: [DONE]\n\n"
_BACKLOG = 4096
_BAD_JSON = orjson.dumps({"error": {"message": "invalid JSON body", "type": "invalid_request_error"}})


class FloorProxy:
    """Forward every POST under /v1 to the same path under the upstream's base URL."""

    def __init__(self, upstream: str, api_key: str, max_connections: int) -> None:
        self._upstream = upstream.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._max_connections = max_connections
        self._session: ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> str:
        self._session = ClientSession(
            connector=TCPConnector(limit=self._max_connections),
            timeout=ClientTimeout(total=None, sock_connect=10, sock_read=60),
            cookie_jar=DummyCookieJar(),
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=_BACKLOG)
        await site.start()
        bound = self._runner.addresses[0][1]
        return f"http://{host}:{bound}/v1"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.Response(status=400, body=_BAD_JSON, content_type="application/json")
        stream = isinstance(body, dict) and body.get("stream") is True
        url = self._upstream + request.path[3:]  # "/v1/chat/completions" -> base + "/chat/completions"
        assert self._session is not None
        async with self._session.post(url, data=orjson.dumps(body), headers=self._headers) as upstream:
            if stream and upstream.status == 200:
                return await self._relay_stream(request, upstream.content)
            raw = await upstream.read()
            try:
                answer = orjson.dumps(orjson.loads(raw))
            except orjson.JSONDecodeError:
                answer = raw
            return web.Response(status=upstream.status, body=answer, content_type="application/json")

    @staticmethod
    async def _relay_stream(request: web.Request, content: StreamReader) -> web.StreamResponse:
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        async for line in content:
            if not line.startswith(_DATA):
                continue
            data = line[5:].strip()
            if data == _DONE:
                await response.write(_DONE_EVENT)
            else:
                await response.write(b"data: " + orjson.dumps(orjson.loads(data)) + b"\n\n")
        await response.write_eof()
        return response


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.floor_proxy", description="A bare aiohttp passthrough proxy."
    )
    parser.add_argument("--upstream", required=True, help="the upstream's base URL, e.g. http://127.0.0.1:9000/v1")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default="bench")
    parser.add_argument("--max-connections", type=int, default=200)
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    proxy = FloorProxy(args.upstream, args.api_key, args.max_connections)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        base_url = await proxy.start(args.host, args.port)
        sys.stdout.write(f"listening {base_url}\n")
        sys.stdout.flush()
        await stopping.wait()
    finally:
        await proxy.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the floor proxy until SIGTERM or SIGINT."""
    args = _parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(args))


if __name__ == "__main__":
    main()
