"""The Anthropic provider against recorded transcripts built from Anthropic's API reference.

Each `fixtures/anthropic/<case>.json` (the shared conformance format; its `source` names the document the shapes
come from) holds an OpenAI request as a client sends it, the exact request Anthropic must receive, Anthropic's
reply (JSON or raw SSE) and what the OpenAI client must get. The replay: a tiny aiohttp server answers with the reply
and records the request; the request goes through the OpenAI request codec → the Anthropic adapter → the OpenAI
response codec.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.codec.openai_request import decode_chat_params
from gateway.codec.openai_response import encode_chunk, encode_completion
from gateway.config import BackendConfig, Secret
from gateway.errors import GatewayError
from gateway.providers.anthropic import AnthropicOptions, AnthropicProvider

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
MODEL = "claude-sonnet-4-5"
KEY = "sk-ant-test"
CREATED = 1700000000


@dataclass
class Recorded:
    """What the replay server received."""

    method: str = ""
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@pytest.fixture
async def replay() -> AsyncIterator[tuple[str, dict[str, Any], Recorded]]:
    """A server answering with `reply` (set by the test before the call) and recording the request."""
    reply: dict[str, Any] = {}
    seen = Recorded()

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.method, seen.path, seen.query = request.method, request.path, dict(request.query)
        seen.headers = {k.lower(): v for k, v in request.headers.items()}
        seen.body = orjson.loads(await request.read())
        headers = dict(reply.get("headers") or {})
        if "sse" in reply:
            response = web.StreamResponse(
                status=reply["status"], headers={**headers, "Content-Type": "text/event-stream"}
            )
            await response.prepare(request)
            await response.write(reply["sse"].encode())
            await response.write_eof()
            return response
        return web.json_response(reply["body"], status=reply["status"], headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", reply, seen
    finally:
        await runner.cleanup()


def _cases() -> list[Any]:
    paths = sorted(FIXTURES.glob("*.json"))
    assert paths, "no Anthropic fixtures"
    return [pytest.param(orjson.loads(p.read_bytes()), id=p.stem) for p in paths]


def _matches(expected: Any, actual: Any) -> bool:
    """Equality where an expected "*" matches any value."""
    if expected == "*":
        return True
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(_matches(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(_matches(e, a) for e, a in zip(expected, actual, strict=True))
    return bool(expected == actual)


async def _run(case: dict[str, Any], base_url: str) -> tuple[Any, GatewayError | None]:
    backend = BackendConfig(name="claude", provider="anthropic", base_url=base_url, api_key=Secret(KEY))
    provider = AnthropicProvider(backend, AnthropicOptions(), clock=lambda: CREATED)
    params, stream = decode_chat_params(case["request"])
    assert stream == case["stream"]
    chunks: list[Any] = []
    try:
        if not stream:
            return encode_completion(await provider.complete(MODEL, params)), None
        async with aclosing(provider.stream(MODEL, params)) as gen:
            async for chunk in gen:
                chunks.append(encode_chunk(chunk))
        return chunks, None
    except GatewayError as exc:
        return chunks, exc
    finally:
        await provider.close()


@pytest.mark.parametrize("case", _cases())
async def test_conformance(case: dict[str, Any], replay: tuple[str, dict[str, Any], Recorded]) -> None:
    base_url, reply, seen = replay
    reply.update(case["reply"])
    result, error = await _run(case, base_url)

    upstream = case["upstream"]
    assert (seen.method, seen.path) == (upstream["method"], upstream["path"])
    assert seen.query == upstream.get("query", {})
    for name, value in upstream["headers"].items():
        assert seen.headers.get(name) == value, name
    assert "authorization" not in seen.headers  # Anthropic takes the key as x-api-key only
    assert seen.body == upstream["body"]

    expect = case["expect"]
    if "error" in expect:
        assert error is not None, f"expected an error, got {result}"
        want = expect["error"]
        assert (error.http_status, error.error_type, error.code) == (want["status"], want["type"], want["code"])
        assert error.retry_after == want.get("retry_after")
        assert _matches(expect.get("chunks", []), result)
        return
    assert error is None, repr(error)
    want_result = expect["chunks"] if case["stream"] else expect
    assert _matches(want_result, result), orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
