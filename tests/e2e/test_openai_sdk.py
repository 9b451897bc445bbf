"""The official `openai` SDK, pointed at tollgate, works unchanged: in one process and split over gRPC."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import UPSTREAM_KEY, RunningGateway

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]


def client(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, timeout=10)


async def test_completion(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    raw = await client(gateway).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    completion = raw.parse()
    assert (completion.choices[0].message.content or "").startswith("This is a reply from")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 8
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 8
    assert raw.headers["x-request-id"].startswith("req_")
    assert float(raw.headers["x-tollgate-overhead-ms"]) >= 0
    sent = upstream.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # the gateway's key, not the client's
    assert sent.json["messages"] == MESSAGES
    assert "stream" not in sent.json


async def test_stream_without_usage(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    stream = await client(gateway).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("This is a reply")
    assert all(c.choices for c in chunks), "the usage chunk is stripped when the client did not ask for it"
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    # Usage is always asked for upstream, so accounting is exact either way.
    assert upstream.requests[-1].json["stream_options"] == {"include_usage": True}


async def test_stream_with_usage(gateway: RunningGateway) -> None:
    stream = await client(gateway).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 8


async def test_sync_client(gateway: RunningGateway) -> None:
    def call() -> tuple[str, str]:
        sync = openai.OpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, timeout=10)
        whole = sync.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        streamed = sync.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        return whole.choices[0].message.content or "", "".join(c.choices[0].delta.content or "" for c in streamed)

    whole, streamed = await asyncio.to_thread(call)
    assert whole == streamed
    assert whole.startswith("This is a reply")


async def test_streamed_tool_call(gateway: RunningGateway) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    stream = await client(gateway).chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        tools=tools,  # type: ignore[arg-type]
    )
    name, arguments, finish = "", "", None
    async for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or ():
            name += call.function.name or ""  # type: ignore[union-attr]
            arguments += call.function.arguments or ""  # type: ignore[union-attr]
        finish = chunk.choices[0].finish_reason or finish
    assert name == "lookup"
    assert json.loads(arguments) == {"echo": "hello there"}
    assert finish == "tool_calls"


async def test_tool_call_whole(gateway: RunningGateway) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    completion = await client(gateway).chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        tools=tools,
        tool_choice="required",  # type: ignore[arg-type]
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "lookup"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"echo": "hello there"}  # type: ignore[union-attr]


async def test_embeddings(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    api = client(gateway)
    floats = await api.embeddings.create(model="text-embedding-3-small", input=["a b", "c"], encoding_format="float")
    # The SDK asks for base64 by default and decodes it; both must give the same vectors.
    decoded = await api.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.data[0].embedding == pytest.approx(decoded.data[0].embedding, rel=1e-6)
    assert floats.usage.prompt_tokens > 0
    assert upstream.requests[-1].json["encoding_format"] == "base64"


async def test_models(gateway: RunningGateway) -> None:
    models = [m.id async for m in client(gateway).models.list()]
    assert models == ["gpt-4o-mini", "text-embedding-3-small", "demo"]


async def test_demo_backend_streams(gateway: RunningGateway) -> None:
    stream = await client(gateway).chat.completions.create(model="demo", messages=MESSAGES, stream=True)
    pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 5
