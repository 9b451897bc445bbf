"""The fake OpenAI server answers in OpenAI's documented shapes and injects the failures it is asked to."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionUserMessageParam

from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.polling import until

REPO_ROOT = Path(__file__).resolve().parents[2]
USER = {"role": "user", "content": "hello world"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "be brief"}, USER]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]
SDK_USER: ChatCompletionUserMessageParam = {"role": "user", "content": "hello world"}
# chunks=5 answers with the first five words of the reply sentence.
FIVE_WORDS = "This is a reply from "


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(chunks=5) as server:
        yield server


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def post(session: aiohttp.ClientSession, fake: FakeOpenAI, path: str, body: Any) -> tuple[int, Any]:
    async with session.post(fake.base_url + path, json=body) as resp:
        return resp.status, await resp.json()


async def stream_events(session: aiohttp.ClientSession, fake: FakeOpenAI, body: dict[str, Any]) -> list[Any]:
    """Every SSE event of a streamed completion: parsed chunks, then the literal "[DONE]"."""
    async with session.post(fake.base_url + "/chat/completions", json={**body, "stream": True}) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        text = await resp.text()
    assert text.endswith("\n\n")
    events: list[Any] = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: ")
        payload = block.removeprefix("data: ")
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def assert_error(body: Any, error_type: str, param: str | None, code: str | None) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str)
    assert (body["error"]["type"], body["error"]["param"], body["error"]["code"]) == (error_type, param, code)


# ---------------------------------------------------------------------------------------------------- chat


@pytest.mark.asyncio
async def test_completion_has_openai_shape_and_deterministic_text(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    status, body = await post(session, fake, "/chat/completions", CHAT)

    assert status == 200
    assert body["id"].startswith("chatcmpl-fake-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "gpt-4o-mini"
    assert body["system_fingerprint"] == "fp_fake"
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == FIVE_WORDS
    # 2 words + 3 per message, twice.
    assert body["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


@pytest.mark.asyncio
async def test_reply_cycles_through_the_user_text(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    fake.chunks = 14
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

    _, answer = await post(session, fake, "/chat/completions", body)

    expected = "This is a reply from the fake OpenAI server to: hi This is a "
    assert answer["choices"][0]["message"]["content"] == expected


@pytest.mark.asyncio
async def test_content_parts_count_as_text(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    parts = [
        {"type": "text", "text": "one two"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "three"},
    ]
    fake.chunks = 13
    body = {"model": "m", "messages": [{"role": "user", "content": parts}]}

    _, answer = await post(session, fake, "/chat/completions", body)

    assert answer["usage"]["prompt_tokens"] == 3 + 3
    assert answer["choices"][0]["message"]["content"].endswith("to: one two three ")


@pytest.mark.asyncio
async def test_requests_are_recorded(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    async with session.post(fake.base_url + "/chat/completions", json=CHAT, headers={"X-Trace": "abc"}) as resp:
        assert resp.status == 200
    async with session.get(fake.base_url + "/models") as resp:
        assert resp.status == 200

    first, second = fake.requests
    assert (first.method, first.path, first.json) == ("POST", "/v1/chat/completions", CHAT)
    assert first.headers["x-trace"] == "abc"
    assert first.headers["content-type"] == "application/json"
    assert (second.method, second.path, second.json) == ("GET", "/v1/models", None)


@pytest.mark.asyncio
async def test_stream_without_usage(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    events = await stream_events(session, fake, CHAT)

    *chunks, done = events
    assert done == "[DONE]"
    assert len(chunks) == 1 + 5 + 1
    assert len({chunk["id"] for chunk in chunks}) == 1
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "gpt-4o-mini"
        assert chunk["system_fingerprint"] == "fp_fake"
        assert "usage" not in chunk
        assert len(chunk["choices"]) == 1
    opening, *content, closing = (chunk["choices"][0] for chunk in chunks)
    assert opening == {
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": None,
    }
    assert all(choice["finish_reason"] is None and set(choice["delta"]) == {"content"} for choice in content)
    assert "".join(choice["delta"]["content"] for choice in content) == FIVE_WORDS
    assert closing == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert fake.completed_streams == 1
    assert fake.disconnects == 0


@pytest.mark.asyncio
async def test_stream_with_usage(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    events = await stream_events(session, fake, {**CHAT, "stream_options": {"include_usage": True}})

    *chunks, usage_chunk, done = events
    assert done == "[DONE]"
    assert len(chunks) == 7
    assert all(chunk["usage"] is None for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["choices"] == []
    assert usage_chunk["id"] == chunks[0]["id"]
    assert usage_chunk["usage"]["prompt_tokens"] == 10
    assert usage_chunk["usage"]["completion_tokens"] == 5
    assert usage_chunk["usage"]["total_tokens"] == 15


@pytest.mark.asyncio
async def test_tool_call_completion(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    _, body = await post(session, fake, "/chat/completions", {**CHAT, "tools": TOOLS})

    [choice] = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["id"] == body["id"].replace("chatcmpl-fake-", "call_fake_")
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"echo": "hello world"}


@pytest.mark.asyncio
async def test_tool_call_stream(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    events = await stream_events(session, fake, {**CHAT, "tools": TOOLS})

    *chunks, done = events
    assert done == "[DONE]"
    opening, *pieces, closing = (chunk["choices"][0] for chunk in chunks)
    assert opening["delta"]["role"] == "assistant"
    [header] = opening["delta"]["tool_calls"]
    assert header["index"] == 0
    assert header["id"].startswith("call_fake_")
    assert header["type"] == "function"
    assert header["function"] == {"name": "get_weather", "arguments": ""}
    assert 3 <= len(pieces) <= 4
    arguments = ""
    for piece in pieces:
        [call] = piece["delta"]["tool_calls"]
        assert set(call) == {"index", "function"}
        assert call["index"] == 0
        arguments += call["function"]["arguments"]
    assert json.loads(arguments) == {"echo": "hello world"}
    assert closing["delta"] == {}
    assert closing["finish_reason"] == "tool_calls"


@pytest.mark.asyncio
async def test_tool_choice_none_and_named(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    _, plain = await post(session, fake, "/chat/completions", {**CHAT, "tools": TOOLS, "tool_choice": "none"})
    named_choice = {"type": "function", "function": {"name": "get_time"}}
    _, named = await post(session, fake, "/chat/completions", {**CHAT, "tools": TOOLS, "tool_choice": named_choice})

    assert plain["choices"][0]["message"]["content"] == FIVE_WORDS
    assert plain["choices"][0]["finish_reason"] == "stop"
    assert named["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_time"


@pytest.mark.asyncio
async def test_n_choices(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    _, body = await post(session, fake, "/chat/completions", {**CHAT, "n": 2})
    events = await stream_events(session, fake, {**CHAT, "n": 2})

    assert [choice["index"] for choice in body["choices"]] == [0, 1]
    assert {choice["message"]["content"] for choice in body["choices"]} == {FIVE_WORDS}
    assert body["usage"]["completion_tokens"] == 10
    for index in (0, 1):
        mine = [event["choices"][0] for event in events[:-1] if event["choices"][0]["index"] == index]
        assert len(mine) == 7
        assert "".join(choice["delta"].get("content", "") for choice in mine) == FIVE_WORDS
        assert mine[-1]["finish_reason"] == "stop"


@pytest.mark.asyncio
@pytest.mark.parametrize("limit_name", ["max_tokens", "max_completion_tokens"])
async def test_token_limit_finishes_with_length(
    fake: FakeOpenAI, session: aiohttp.ClientSession, limit_name: str
) -> None:
    _, body = await post(session, fake, "/chat/completions", {**CHAT, limit_name: 3})
    events = await stream_events(session, fake, {**CHAT, limit_name: 3})
    _, roomy = await post(session, fake, "/chat/completions", {**CHAT, limit_name: 50})

    assert body["choices"][0]["message"]["content"] == "This is a "
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    assert len(events) == 1 + 3 + 1 + 1
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert roomy["choices"][0]["finish_reason"] == "stop"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [USER]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({**CHAT, "n": 0}, "n"),
        ({**CHAT, "max_tokens": -1}, "max_tokens"),
        ([1, 2], None),
    ],
)
async def test_invalid_chat_requests_get_400(
    fake: FakeOpenAI, session: aiohttp.ClientSession, body: Any, param: str | None
) -> None:
    status, answer = await post(session, fake, "/chat/completions", body)

    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["param"] == param


@pytest.mark.asyncio
async def test_unparseable_body_gets_400(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    async with session.post(fake.base_url + "/chat/completions", data=b"{not json") as resp:
        assert resp.status == 400
        assert_error(await resp.json(), "invalid_request_error", None, None)
    assert fake.requests[0].json is None


@pytest.mark.asyncio
async def test_latency_delays_the_answer(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    fake.latency = 0.2
    started = time.monotonic()

    status, _ = await post(session, fake, "/chat/completions", CHAT)

    assert status == 200
    assert time.monotonic() - started >= 0.2


# ---------------------------------------------------------------------------------------------------- other endpoints


@pytest.mark.asyncio
async def test_embeddings_as_floats(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    body = {"model": "text-embedding-3-small", "input": ["one two", "three"]}

    status, answer = await post(session, fake, "/embeddings", body)
    _, again = await post(session, fake, "/embeddings", body)

    assert status == 200
    assert answer["object"] == "list"
    assert answer["model"] == "text-embedding-3-small"
    assert answer["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    first, second = answer["data"]
    assert (first["object"], first["index"], second["index"]) == ("embedding", 0, 1)
    for item in answer["data"]:
        assert len(item["embedding"]) == 8
        assert all(-1.0 <= value <= 1.0 for value in item["embedding"])
    assert first["embedding"] != second["embedding"]
    assert again["data"] == answer["data"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("value", "items", "tokens"),
    [("a b c", 1, 3), ([5, 6, 7], 1, 3), ([[5, 6], [7]], 2, 3), (["x", "y", "z"], 3, 3)],
)
async def test_embedding_input_forms(
    fake: FakeOpenAI, session: aiohttp.ClientSession, value: Any, items: int, tokens: int
) -> None:
    _, answer = await post(session, fake, "/embeddings", {"model": "e", "input": value, "dimensions": 3})

    assert len(answer["data"]) == items
    assert all(len(item["embedding"]) == 3 for item in answer["data"])
    assert answer["usage"]["prompt_tokens"] == tokens


@pytest.mark.asyncio
async def test_embeddings_as_base64_decode_to_the_floats(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    body = {"model": "e", "input": "hello", "dimensions": 40}

    _, floats = await post(session, fake, "/embeddings", body)
    _, packed = await post(session, fake, "/embeddings", {**body, "encoding_format": "base64"})

    raw = base64.b64decode(packed["data"][0]["embedding"])
    assert list(struct.unpack("<40f", raw)) == floats["data"][0]["embedding"]


@pytest.mark.asyncio
@pytest.mark.parametrize("value", [[], "", [1, "a"], [[]], None])
async def test_invalid_embedding_input_gets_400(fake: FakeOpenAI, session: aiohttp.ClientSession, value: Any) -> None:
    status, answer = await post(session, fake, "/embeddings", {"model": "e", "input": value})

    assert status == 400
    assert_error(answer, "invalid_request_error", "input", None)


@pytest.mark.asyncio
async def test_models_list_and_retrieve(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    async with session.get(fake.base_url + "/models") as resp:
        listing = await resp.json()
    async with session.get(fake.base_url + "/models/gpt-4o-mini") as resp:
        one = await resp.json()
    async with session.get(fake.base_url + "/models/nope") as resp:
        missing_status = resp.status
        missing = await resp.json()

    assert listing == {
        "object": "list",
        "data": [
            {"id": "gpt-4o-mini", "object": "model", "created": 1700000000, "owned_by": "fake"},
            {"id": "text-embedding-3-small", "object": "model", "created": 1700000000, "owned_by": "fake"},
        ],
    }
    assert one == listing["data"][0]
    assert missing_status == 404
    assert_error(missing, "invalid_request_error", "model", "model_not_found")


@pytest.mark.asyncio
async def test_unknown_path_gets_404(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    async with session.post(fake.base_url + "/completions-nope", json={}) as resp:
        assert resp.status == 404
        assert_error(await resp.json(), "invalid_request_error", None, "unknown_url")
    async with session.get(fake.base_url + "/chat/completions") as resp:
        assert resp.status == 404


@pytest.mark.asyncio
async def test_api_key_is_required_when_configured(session: aiohttp.ClientSession) -> None:
    async with FakeOpenAI(api_key="sk-test") as fake:
        url = fake.base_url + "/chat/completions"
        async with session.post(url, json=CHAT) as missing:
            assert missing.status == 401
            assert_error(await missing.json(), "invalid_request_error", None, "invalid_api_key")
        async with session.post(url, json=CHAT, headers={"Authorization": "Bearer sk-wrong"}) as wrong:
            assert wrong.status == 401
        async with session.post(url, json=CHAT, headers={"Authorization": "Bearer sk-test"}) as right:
            assert right.status == 200


# ---------------------------------------------------------------------------------------------------- faults


@pytest.mark.asyncio
async def test_status_fault_with_retry_after_is_consumed_once(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    fake.add_fault(Fault(status=429, error_type="requests", message="slow down", retry_after="2", code="rate_limit"))

    async with session.post(fake.base_url + "/chat/completions", json=CHAT) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "2"
        body = await resp.json()
    status, _ = await post(session, fake, "/chat/completions", CHAT)

    assert_error(body, "requests", None, "rate_limit")
    assert body["error"]["message"] == "slow down"
    assert status == 200
    assert fake.faults == []


@pytest.mark.asyncio
async def test_faults_only_hit_their_path_in_order(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    fake.add_fault(Fault(status=500, path="/v1/embeddings"))
    fake.add_fault(Fault(status=502))
    fake.add_fault(Fault(status=503))

    chat_statuses = [(await post(session, fake, "/chat/completions", CHAT))[0] for _ in range(3)]
    embed_status, body = await post(session, fake, "/embeddings", {"model": "e", "input": "x"})

    assert chat_statuses == [502, 503, 200]
    assert embed_status == 500
    assert_error(body, "server_error", None, None)


@pytest.mark.asyncio
async def test_a_fault_can_span_several_requests(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    fake.add_fault(Fault(status=500, times=3))
    fake.add_fault(Fault(status=503))

    statuses = [(await post(session, fake, "/chat/completions", CHAT))[0] for _ in range(5)]

    assert statuses == [500, 500, 500, 503, 200]
    assert fake.faults == []


@pytest.mark.asyncio
async def test_hang_fault_trips_client_timeout(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    fake.add_fault(Fault(hang=30))

    with pytest.raises(asyncio.TimeoutError):
        async with session.post(
            fake.base_url + "/chat/completions", json=CHAT, timeout=aiohttp.ClientTimeout(total=0.3)
        ) as resp:
            await resp.read()
    status, _ = await post(session, fake, "/chat/completions", CHAT)

    assert status == 200


@pytest.mark.asyncio
async def test_hang_fault_then_answers(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    fake.add_fault(Fault(hang=0.2))
    started = time.monotonic()

    status, _ = await post(session, fake, "/chat/completions", CHAT)

    assert status == 200
    assert time.monotonic() - started >= 0.2


@pytest.mark.asyncio
async def test_reset_fault_drops_the_connection(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    fake.add_fault(Fault(reset=True))

    with pytest.raises(aiohttp.ClientError):
        await post(session, fake, "/chat/completions", CHAT)
    status, _ = await post(session, fake, "/chat/completions", CHAT)

    assert len(fake.requests) == 2
    assert status == 200


@pytest.mark.asyncio
async def test_stall_fault_trips_idle_timeout_and_counts_disconnect(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake.add_fault(Fault(stall_after_chunks=2))
    received = 0

    with pytest.raises(asyncio.TimeoutError):
        async with session.post(
            fake.base_url + "/chat/completions",
            json={**CHAT, "stream": True},
            timeout=aiohttp.ClientTimeout(sock_read=0.3),
        ) as resp:
            async for line in resp.content:
                if line.startswith(b"data: "):
                    received += 1

    # The opening chunk, then exactly the two content chunks.
    assert received == 3
    await until(lambda: fake.disconnects == 1)
    assert fake.completed_streams == 0


@pytest.mark.asyncio
async def test_client_closing_mid_stream_counts_disconnect(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    fake.chunks = 50
    fake.chunk_delay = 0.02

    async with session.post(fake.base_url + "/chat/completions", json={**CHAT, "stream": True}) as resp:
        await resp.content.readline()
        resp.close()

    await until(lambda: fake.disconnects == 1)
    assert fake.completed_streams == 0


# ---------------------------------------------------------------------------------------------------- clients


@pytest.mark.asyncio
async def test_openai_sdk_parses_completions_and_stream(fake: FakeOpenAI) -> None:
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="x", max_retries=0) as client:
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=[SDK_USER])
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[SDK_USER],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]

    assert completion.choices[0].message.content == FIVE_WORDS
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == FIVE_WORDS
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


@pytest.mark.asyncio
async def test_openai_sdk_parses_tools_embeddings_and_errors(fake: FakeOpenAI) -> None:
    fake.add_fault(Fault(status=429, error_type="requests", retry_after="1"))
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="x", max_retries=0) as client:
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="gpt-4o-mini", messages=[SDK_USER])
        tool = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[SDK_USER],
            # Through extra_body: the SDK's tool param types change between versions, the wire format does not.
            extra_body={"tools": TOOLS},
        )
        # The SDK asks for base64 and decodes it itself.
        embedding = await client.embeddings.create(model="text-embedding-3-small", input=["hello"], dimensions=8)
        models = await client.models.list()

    calls = tool.choices[0].message.tool_calls
    assert calls is not None
    assert json.loads(calls[0].model_dump()["function"]["arguments"]) == {"echo": "hello world"}
    assert fake.requests[-2].json["encoding_format"] == "base64"
    async with aiohttp.ClientSession() as session:
        _, floats = await post(session, fake, "/embeddings", {"model": "e", "input": "hello", "dimensions": 8})
    assert embedding.data[0].embedding == floats["data"][0]["embedding"]
    assert [model.id for model in models.data] == ["gpt-4o-mini", "text-embedding-3-small"]


@pytest.mark.asyncio
async def test_cli_serves_until_sigterm(session: aiohttp.ClientSession) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "gateway.testing.fake_openai", "--port", "0", "--chunks", "3"]
    process = await asyncio.create_subprocess_exec(*command, cwd=REPO_ROOT, env=env, stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=20)).decode()
        assert line.startswith("listening http://127.0.0.1:")
        base_url = line.split()[1]
        assert base_url.endswith("/v1")
        async with session.post(base_url + "/chat/completions", json=CHAT) as resp:
            answer = await resp.json()
        assert answer["choices"][0]["message"]["content"] == "This is a "
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize(
    "continuation",
    [{"continue_final_message": True, "add_generation_prompt": False}, {}],
    ids=["vllm", "mistral-prefix"],
)
async def test_a_continued_answer_is_the_rest_after_its_beginning(
    fake: FakeOpenAI, session: aiohttp.ClientSession, continuation: dict[str, Any]
) -> None:
    beginning: dict[str, Any] = {"role": "assistant", "content": "This is a re"}
    if not continuation:
        beginning["prefix"] = True
    body = {**CHAT, **continuation, "messages": [*CHAT["messages"], beginning]}
    status, completion = await post(session, fake, "/chat/completions", body)
    assert status == 200
    assert completion["choices"][0]["message"]["content"] == "ply from "
    # The prompt counts the beginning (words + 3 a message); the answer only what was added.
    assert completion["usage"]["prompt_tokens"] == (2 + 3) + (2 + 3) + (4 + 3)
    assert completion["usage"]["completion_tokens"] == 2


async def test_continuing_with_a_generation_prompt_is_refused_as_vllm_does(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    body = {**CHAT, "continue_final_message": True, "messages": [USER, {"role": "assistant", "content": "This"}]}
    status, error = await post(session, fake, "/chat/completions", body)
    assert status == 400 and "add_generation_prompt" in error["error"]["message"]
    body = {**CHAT, "continue_final_message": True, "add_generation_prompt": False}
    status, error = await post(session, fake, "/chat/completions", body)
    assert status == 400 and error["error"]["message"] == "Only an assistant message can be continued."


async def test_the_command_line_cuts_every_stream(session: aiohttp.ClientSession) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.testing.fake_openai", "--port", "0", "--chunks", "6", "--cut", "error",
        "--cut-after", "2", stdout=asyncio.subprocess.PIPE, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        base_url = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().split()[-1]
        for _ in range(2):
            async with session.post(f"{base_url}/chat/completions", json={**CHAT, "stream": True}) as resp:
                events = [e for e in (await resp.read()).split(b"\n\n") if e]
            assert len(events) == 1 + 2 + 1 and b'"error"' in events[-1], "opening, two words, the error event"
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()
