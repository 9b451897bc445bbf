"""The fake OpenAI server's `/v1/responses` answers as OpenAI documents it, checked with the official SDK against
the fake alone: whole and streamed (`event:` lines, sequence numbers, the events of each item), tool calls,
reasoning summaries, the length cut, and the 400s the real API gives."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest_asyncio

from gateway.testing.fake_openai import FakeOpenAI

TOOLS: Any = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(chunks=5) as server:
        yield server


def sdk(fake: FakeOpenAI) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)


async def test_whole_response(fake: FakeOpenAI) -> None:
    response = await sdk(fake).responses.create(model="gpt-4o-mini", input="hello world", instructions="Be brief.")
    assert response.status == "completed" and response.output_text == "This is a reply from "
    assert response.instructions == "Be brief." and response.object == "response"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (4, 5, 9)


async def test_stream_is_framed_with_event_lines(fake: FakeOpenAI) -> None:
    async with aiohttp.ClientSession() as session:
        body = {"model": "m", "input": "hello world", "stream": True}
        async with session.post(f"{fake.base_url}/responses", json=body) as resp:
            lines = [line.decode().rstrip("\n") async for line in resp.content]
    kinds = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    data = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert kinds == [event["type"] for event in data] and "[DONE]" not in lines
    assert [event["sequence_number"] for event in data] == list(range(len(data)))
    assert kinds.count("response.output_text.delta") == 5 and kinds[-1] == "response.completed"


async def test_tool_call_then_text_after_its_output(fake: FakeOpenAI) -> None:
    api = sdk(fake)
    first = await api.responses.create(model="m", input="hello world", tools=TOOLS)
    call = first.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"echo": "hello world"}
    back = [
        {"role": "user", "content": "hello world"},
        {"type": "function_call", "call_id": call.call_id, "name": "lookup", "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "42"},
    ]
    second = await api.responses.create(model="m", input=back, tools=TOOLS)  # type: ignore[arg-type]
    assert second.output_text.startswith("This is a reply")


async def test_reasoning_summary_and_length_cut(fake: FakeOpenAI) -> None:
    events = [
        e
        async for e in await sdk(fake).responses.create(
            model="m", input="hi", reasoning={"summary": "auto"}, max_output_tokens=16, stream=True
        )
    ]
    assert "response.reasoning_summary_text.delta" in {e.type for e in events}
    fake.chunks = 20
    cut = await sdk(fake).responses.create(model="m", input="hi", max_output_tokens=16)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens" and cut.usage is not None
    assert cut.usage.output_tokens == 16


async def test_bad_requests_are_400s_naming_the_field(fake: FakeOpenAI) -> None:
    api = sdk(fake)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"input": 3}, "input"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": "hi", "max_output_tokens": 3}, "max_output_tokens"),
        ({"input": "hi", "previous_response_id": "resp_x"}, "previous_response_id"),
    ]
    for body, param in cases:
        try:
            await api.responses.create(model="m", **body)
        except openai.BadRequestError as exc:
            assert exc.body["param"] == param  # type: ignore[index]
        else:
            raise AssertionError(f"{body} was accepted")
