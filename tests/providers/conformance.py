"""The provider conformance harness: recorded cases, replayed through the real codecs and the real adapter.

Each case is one JSON file, `tests/providers/fixtures/<provider>/<case>.json`::

    {
      "source":   "the provider API reference (URL and section) the upstream shapes come from",
      "stream":   false,                             checked against the request's own "stream" when given
      "request":  {... what a client sends to tollgate: an OpenAI chat completions body, or an embeddings body when
                   "operation": "embeddings" is set at the top level of the case ...},
      "upstream": {"method": "POST", "path": "/v1/...", "query": {...}, "headers": {...a subset; null: absent...},
                   "body": {... exactly what the provider must receive ...}},
      "reply":    {"status": 200, "headers": {...}, "body": {...}}       a JSON answer
               or {"status": 200, "sse": "data: {...}\\n\\n..."}         a streamed answer, raw text
      "expect":   {... the OpenAI completion or embeddings list the client gets ...}
               or {"chunks": [... the OpenAI chunk objects, in order ...]}
               or {"error": {"status": 503, "type": "api_error", "code": "service_unavailable"}}
                  (with "retry_after": seconds when the error carries one)
               or {"chunks": [...], "error": {...}}   a stream that failed after sending these chunks (`chunks`
                  is there only when at least one chunk came before the error)
    }

The string "*" in `expect` matches any value (ids and `created` times the adapter makes up). A case whose request is
refused before anything is sent (a bad input for this provider) leaves out `upstream` and `reply`.

Replaying a case: a small aiohttp server answers with `reply` and records what it received; the request goes through
the OpenAI request codec, the provider adapter and the OpenAI response codec, exactly as in the gateway; then the
recorded request and the client-visible result are compared with the case.

Adding a provider: make `tests/providers/fixtures/<provider>/provider.json`,
`{"provider": "<type in gateway.providers.registry>", "base_path": "/v1", "api_key": "test-key", "options": {}}`
(`base_path` is appended to the recording server's URL to make the backend's `base_url`; an optional `"model"` is
the upstream model every request is routed to, as a route maps a client's model name, else the request's own model),
then add case files. The test module finds every directory by itself.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from aiohttp import web

from gateway.codec.openai_decode import decode_chat_params, decode_embeddings_request
from gateway.codec.openai_response import encode_chunk, encode_completion, encode_embeddings
from gateway.config import BackendConfig, Secret
from gateway.errors import GatewayError
from gateway.providers.base import Provider
from gateway.providers.registry import PROVIDERS
from tests.providers.serving import served

FIXTURES = Path(__file__).parent / "fixtures"
ANY = "*"


@dataclass(frozen=True)
class Case:
    """One recorded exchange, and the provider settings of its directory."""

    name: str  # <provider dir>/<case file stem>
    provider: dict[str, Any]
    data: dict[str, Any]


def load_cases(root: Path = FIXTURES) -> list[Case]:
    """Every case under `root`, in a stable order."""
    cases = []
    for settings_file in sorted(root.glob("*/provider.json")):
        settings = json.loads(settings_file.read_text())
        for path in sorted(settings_file.parent.glob("*.json")):
            if path.name != "provider.json":
                cases.append(Case(f"{path.parent.name}/{path.stem}", settings, json.loads(path.read_text())))
    return cases


@dataclass
class Recorded:
    """What the recording server received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@asynccontextmanager
async def recording_server(reply: dict[str, Any] | None) -> AsyncIterator[tuple[str, list[Recorded]]]:
    """A loopback server that answers every request with `reply`; yields its URL and what it received."""
    received: list[Recorded] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        received.append(
            Recorded(
                request.method,
                request.path,
                dict(request.query),
                {k.lower(): v for k, v in request.headers.items()},
                json.loads(raw) if raw else None,
            )
        )
        if reply is None:
            return web.json_response({"error": "this case expects no request"}, status=599)
        headers = dict(reply.get("headers") or {})
        if "sse" in reply:
            headers.setdefault("Content-Type", "text/event-stream")
            return web.Response(status=reply.get("status", 200), text=reply["sse"], headers=headers)
        return web.json_response(reply.get("body"), status=reply.get("status", 200), headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with served(app) as port:
        yield f"http://127.0.0.1:{port}", received


def build_provider(settings: dict[str, Any], server_url: str) -> Provider:
    """The adapter under test, built through the registry as the gateway builds it."""
    backend = BackendConfig(
        name="conformance",
        provider=settings["provider"],
        base_url=server_url + settings.get("base_path", ""),
        api_key=Secret(settings["api_key"]) if settings.get("api_key") else None,
        connect_timeout=2.0,
        read_timeout=5.0,
        options=MappingProxyType(settings.get("options") or {}),
    )
    return PROVIDERS[settings["provider"]](backend, "backends[name=conformance]")


async def client_result(provider: Provider, case: dict[str, Any], model: str | None = None) -> Any:
    """What the client gets for the case's request: the OpenAI JSON, or the error's status, type and code (after the
    chunks a stream sent before it, if any). `model` is the upstream model, else the request's own."""
    request = case["request"]
    chunks: list[Any] = []
    try:
        if case.get("operation") == "embeddings":
            embeddings = decode_embeddings_request(request)
            return encode_embeddings(await provider.embed(model or embeddings.model, embeddings))
        params, stream = decode_chat_params(request)
        if "stream" in case:
            assert stream == case["stream"], f"the case says stream={case['stream']}, its request says {stream}"
        if stream:
            async with aclosing(provider.stream(model or params.model, params)) as chunk_stream:
                async for chunk in chunk_stream:
                    chunks.append(encode_chunk(chunk))
            return {"chunks": chunks}
        return encode_completion(await provider.complete(model or params.model, params))
    except GatewayError as exc:
        error: dict[str, Any] = {"status": exc.http_status, "type": exc.error_type, "code": exc.code}
        if exc.retry_after is not None:
            error["retry_after"] = exc.retry_after
        return {"chunks": chunks, "error": error} if chunks else {"error": error}


def assert_matches(actual: Any, expected: Any, where: str = "$") -> None:
    """`actual` equals `expected`, where the string "*" in `expected` stands for any value."""
    if expected == ANY:
        return
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        assert set(actual) == set(expected), f"{where}: keys {sorted(actual)} != expected {sorted(expected)}"
        for key, value in expected.items():
            assert_matches(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: expected an array, got {actual!r}"
        assert len(actual) == len(expected), f"{where}: {len(actual)} items != expected {len(expected)}: {actual!r}"
        for i, (got, want) in enumerate(zip(actual, expected, strict=True)):
            assert_matches(got, want, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != expected {expected!r}"


def assert_upstream(received: list[Recorded], expected: dict[str, Any] | None) -> None:
    """The provider got exactly the expected request (headers: the expected ones, among others; an expected null
    header must be absent)."""
    if expected is None:
        assert not received, f"the request was refused before sending, yet the provider got {received}"
        return
    assert len(received) == 1, f"expected one upstream request, got {len(received)}"
    got = received[0]
    assert got.method == expected.get("method", "POST")
    assert got.path == expected["path"]
    assert got.query == expected.get("query", {}), f"query {got.query} != {expected.get('query', {})}"
    for name, value in (expected.get("headers") or {}).items():
        assert got.headers.get(name.lower()) == value, f"header {name}: {got.headers.get(name.lower())!r} != {value!r}"
    assert_matches(got.body, expected["body"], "upstream.body")


async def replay(case: Case) -> None:
    """Run one case and check both sides of it."""
    async with recording_server(case.data.get("reply")) as (url, received):
        provider = build_provider(case.provider, url)
        try:
            result = await client_result(provider, case.data, case.provider.get("model"))
        finally:
            await provider.close()
    assert_upstream(received, case.data.get("upstream"))
    assert_matches(result, case.data["expect"], "expect")
