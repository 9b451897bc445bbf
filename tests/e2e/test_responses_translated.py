"""The Responses API through the chat path to Anthropic and Gemini backends (the in-repo fakes), with the official
`openai` SDK, in one process and split over gRPC: text, streams, and a function tool round trip whose second turn
is built from the stored first one (Gemini's thought signature and Anthropic's tool-use id come back as sent)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from gateway.testing.fake_anthropic import FakeAnthropic
from gateway.testing.fake_gemini import FakeGemini
from tests.conftest import RunningGateway, StartGateway

ANTHROPIC_KEY = "sk-ant-upstream"
GEMINI_KEY = "gemini-upstream-key"
TOOLS: Any = [
    {
        "type": "function",
        "name": "search",
        "description": "Search the docs",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    }
]


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeAnthropic, FakeGemini]]:
    async with FakeAnthropic(api_key=ANTHROPIC_KEY) as claude, FakeGemini(api_key=GEMINI_KEY).running() as gemini:
        yield claude, gemini


@pytest.fixture
async def gateway(start_gateway: StartGateway, fakes: tuple[FakeAnthropic, FakeGemini]) -> RunningGateway:
    claude, gemini = fakes
    return await start_gateway(f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: none
backends:
  - {{name: claude, provider: anthropic, base_url: "{claude.base_url}", api_key: {ANTHROPIC_KEY}, read_timeout: 5s}}
  - {{name: google, provider: gemini, base_url: "{gemini.base_url}", api_key: {GEMINI_KEY}, read_timeout: 5s}}
models:
  - {{name: claude, targets: [{{backend: claude, model: claude-sonnet-4-5}}]}}
  - {{name: flash, targets: [{{backend: google, model: gemini-2.0-flash}}]}}
""")


def client(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, timeout=10)


@pytest.mark.parametrize("model", ["claude", "flash"])
async def test_text_whole_and_streamed(gateway: RunningGateway, model: str) -> None:
    api = client(gateway)
    whole = await api.responses.create(model=model, input="hello there", instructions="Be brief.", max_output_tokens=50)
    assert whole.status == "completed" and whole.output_text
    assert whole.usage is not None and whole.usage.output_tokens > 0
    events = [e async for e in await api.responses.create(model=model, input="hello there", stream=True)]
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text == whole.output_text  # type: ignore[union-attr]


@pytest.mark.parametrize("model", ["claude", "flash"])
@pytest.mark.parametrize("stream", [False, True])
async def test_function_tool_round_trip(gateway: RunningGateway, model: str, stream: bool) -> None:
    api = client(gateway)
    if stream:
        events = [e async for e in await api.responses.create(model=model, input="find x", tools=TOOLS, stream=True)]
        first = events[-1].response  # type: ignore[union-attr]
    else:
        first = await api.responses.create(model=model, input="find x", tools=TOOLS)
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "search"
    output = {"type": "function_call_output", "call_id": call.call_id, "output": '{"hits": 3}'}
    second = await api.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[output],  # type: ignore[list-item]
        tools=TOOLS,
    )
    assert second.status == "completed" and second.output_text
