"""A provider's pooled session serves every client: a cookie one upstream answer sets never rides on a later request
(a real aiohttp upstream that sets one on every answer and records what it is sent)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gateway.config import BackendConfig, Secret
from gateway.providers.registry import PROVIDERS
from tests.providers.serving import served
from tollgate.gateway.v1 import gateway_pb2 as pb

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
}


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, list[str | None]]]:
    cookies: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        cookies.append(request.headers.get("Cookie"))
        response = web.json_response(COMPLETION)
        response.set_cookie("session", f"caller-{len(cookies)}")  # e.g. a load balancer's affinity cookie
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    async with served(app) as port:
        # A host name, not an address: aiohttp keeps no cookies for IP addresses anyway.
        yield f"http://localhost:{port}/v1", cookies


async def test_a_cookie_set_by_one_answer_is_not_sent_with_the_next_request(
    upstream: tuple[str, list[str | None]],
) -> None:
    base_url, cookies = upstream
    backend = BackendConfig(name="b", provider="openai", base_url=base_url, api_key=Secret("sk-test"))
    provider = PROVIDERS["openai"](backend, "backends[0]")
    params = pb.ChatCompletionParams(model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hello")])
    try:
        for _ in range(3):
            answer = await provider.complete("m", params)
            assert answer.choices[0].message.content == "hi"
    finally:
        await provider.close()
    assert cookies == [None, None, None]
