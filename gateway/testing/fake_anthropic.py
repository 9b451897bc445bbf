"""A fake Anthropic server: the Messages API (JSON and SSE) and token counting, for tests and benchmarks.

It requires `x-api-key` (when given one) and `anthropic-version`, validates bodies like the real API, answers
deterministically (an echoing text, a tool call when a tool is due, thinking with a signature when asked, cache
tokens when a body carries `cache_control`), and injects the documented errors, before the answer or inside the
stream. It records every request. Shapes: https://docs.anthropic.com/en/api/messages, .../messages-streaming,
.../errors, .../messages-count-tokens.

Run it standalone for benchmarks::

    python -m gateway.testing.fake_anthropic --port 9001 --chunks 20

which prints ``listening <base_url>`` once it accepts connections and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from gateway.testing.anthropic_replies import (
    InvalidRequest,
    error_body,
    error_event,
    input_tokens,
    make_reply,
    message_object,
    stream_events,
    validate,
)
from gateway.testing.fake_openai import RecordedRequest
from gateway.testing.loopback import LoopbackServer, serve_until_stopped

__all__ = ["AnthropicFault", "FakeAnthropic", "main"]

_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_STATUSES = {"overloaded_error": 529, "api_error": 500, "rate_limit_error": 429, "request_too_large": 413,
             "not_found_error": 404, "permission_error": 403, "authentication_error": 401,
             "invalid_request_error": 400, "billing_error": 402, "timeout_error": 504}  # fmt: skip


@dataclass
class AnthropicFault:
    """One injected failure, consumed by the next request to /v1/messages."""

    error_type: str = "overloaded_error"  # a documented error type; its status is the documented one
    message: str = "Overloaded"
    retry_after: str | None = None
    after_events: int = -1  # >=0 (streams only): send that many events after the 200, then the error event
    cut_after_events: int = -1  # >=0 (streams only): send that many events, then close without message_stop


class FakeAnthropic(LoopbackServer):
    """An in-process HTTP server that answers like Anthropic's API; see the module docstring."""

    def __init__(self, *, chunks: int = 8, api_key: str | None = None, record_requests: bool = True) -> None:
        super().__init__()  # base_url: http://127.0.0.1:PORT, without /v1 (Anthropic's SDK adds it)
        self.chunks = chunks
        self.api_key = api_key
        self.record_requests = record_requests
        self.requests: list[RecordedRequest] = []
        self.faults: list[AnthropicFault] = []
        self._ids = itertools.count(1)
        self._cache_seen: set[str] = set()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return _error(400, "invalid_request_error", "The request body is not valid JSON.")
        if self.record_requests:
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.requests.append(RecordedRequest(request.method, request.path, headers, body))
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        if request.method != "POST" or request.path not in ("/v1/messages", "/v1/messages/count_tokens"):
            return _error(404, "not_found_error", f"Not found: {request.method} {request.path}")
        try:
            return await self._answer(request, body)
        except InvalidRequest as exc:
            return _error(400, "invalid_request_error", str(exc))

    async def _answer(self, request: web.Request, body: Any) -> web.StreamResponse:
        if request.path.endswith("/count_tokens"):
            validate({**(body if isinstance(body, dict) else {}), "max_tokens": 1})
            return web.json_response({"input_tokens": input_tokens(body)})
        validate(body)
        fault = self.faults.pop(0) if self.faults else None
        if fault is not None and fault.after_events < 0 and fault.cut_after_events < 0:
            headers = {"retry-after": fault.retry_after} if fault.retry_after else None
            return _error(_STATUSES[fault.error_type], fault.error_type, fault.message, headers)
        reply = make_reply(body, f"msg_{next(self._ids):024d}", self.chunks, self._cache_seen)
        if not body.get("stream"):
            return web.json_response(message_object(reply), headers={"request-id": f"req_{reply.message_id}"})
        return await self._stream(request, stream_events(reply), fault)

    async def _stream(
        self, request: web.Request, events: list[bytes], fault: AnthropicFault | None
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        try:
            for count, event in enumerate(events):
                if fault is not None and count == fault.after_events:
                    await response.write(error_event(fault.error_type, fault.message))
                    break
                if fault is not None and count == fault.cut_after_events:
                    break
                await response.write(event)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away
        return response


def _error(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(error_type, message), status=status, headers=headers)


async def _serve(args: argparse.Namespace) -> None:
    server = FakeAnthropic(chunks=args.chunks, api_key=args.api_key, record_requests=False)
    await serve_until_stopped(server, args.host, args.port)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fake server until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m gateway.testing.fake_anthropic")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--chunks", type=int, default=20, help="text deltas per answer")
    parser.add_argument("--api-key", default=None, help="require this x-api-key")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
