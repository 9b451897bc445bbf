"""The official `anthropic` SDK against tollgate's /v1/messages, and the `openai` SDK against an Anthropic backend.

Three paths, each in one process and split over gRPC: anthropic SDK → tollgate → fake OpenAI-compatible backend
(translation), anthropic SDK → tollgate → fake Anthropic (passthrough: thinking, signatures, cache_control and tool
ids survive both ways), openai SDK → tollgate → fake Anthropic. One test runs the same through a real `tollgate
serve` process.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from gateway.testing.fake_anthropic import AnthropicFault, FakeAnthropic
from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.conftest import UPSTREAM_KEY, RunningGateway, StartGateway
from tests.e2e.test_auth_stats import Stack, eventually, secured, stack  # noqa: F401 - fixtures
from tests.e2e.test_cli import tollgate

ANTHROPIC_KEY = "sk-ant-upstream"
TOOLS: list[Any] = [
    {"name": "lookup", "description": "Look something up", "input_schema": {"type": "object", "properties": {}}}
]
HELLO: list[Any] = [{"role": "user", "content": "hello there"}]


def config(openai_url: str, anthropic_url: str) -> str:
    return f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: none
server: {{max_body: 64KiB, shutdown_grace: 1s}}
backends:
  - {{name: primary, provider: openai, base_url: "{openai_url}", api_key: {UPSTREAM_KEY}, read_timeout: 5s}}
  - {{name: claude, provider: anthropic, base_url: "{anthropic_url}", api_key: {ANTHROPIC_KEY}, read_timeout: 5s,
      options: {{default_max_tokens: 1000}}}}
models:
  - {{name: gpt-4o-mini, targets: [{{backend: primary, model: gpt-4o-mini}}]}}
  - {{name: claude, targets: [{{backend: claude, model: claude-sonnet-4-5}}]}}
"""


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=ANTHROPIC_KEY, chunks=8) as fake:
        yield fake


@pytest.fixture
async def claude(gateway: RunningGateway) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with claude_client(gateway.http_url) as client:
        yield client


@pytest.fixture
async def gateway(start_gateway: StartGateway, upstream: FakeOpenAI, fake_anthropic: FakeAnthropic) -> RunningGateway:
    return await start_gateway(config(upstream.base_url, fake_anthropic.base_url))


def claude_client(http_url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=http_url, api_key="sk-client", max_retries=0, timeout=10)


async def _streamed_tool_use(http_url: str, model: str) -> anthropic.types.Message:
    async with (
        claude_client(http_url) as client,
        client.messages.stream(
            model=model, max_tokens=200, messages=HELLO, tools=TOOLS, tool_choice={"type": "any"}
        ) as stream,
    ):
        partial = "".join([e.partial_json async for e in stream if e.type == "input_json"])
        final = await stream.get_final_message()
    assert json.loads(partial) == {"echo": "hello there"}
    return final


# ---------------------------------------------------------------------------------------------------- translation


async def test_anthropic_sdk_to_openai_backend_streams_tool_use(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    final = await _streamed_tool_use(gateway.http_url, "gpt-4o-mini")
    assert final.stop_reason == "tool_use"
    tool = next(b for b in final.content if b.type == "tool_use")
    assert (tool.name, tool.input) == ("lookup", {"echo": "hello there"})
    assert final.usage.output_tokens > 0
    sent = upstream.requests[-1].json
    assert sent["tool_choice"] == "required"
    assert sent["tools"][0]["function"]["name"] == "lookup"
    assert sent["stream_options"] == {"include_usage": True}


async def test_anthropic_sdk_to_openai_backend_whole(claude: anthropic.AsyncAnthropic, upstream: FakeOpenAI) -> None:
    raw = await claude.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=50, system="Be brief.", messages=HELLO, stop_sequences=["zzz"]
    )
    message = await raw.parse()
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith("This is a reply")
    assert message.stop_reason == "end_turn"
    assert raw.headers["request-id"].startswith("req_")
    sent = upstream.requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (sent["max_tokens"], sent["stop"]) == (50, ["zzz"])


async def test_openai_sdk_to_anthropic_backend_streams_tool_calls(
    gateway: RunningGateway, fake_anthropic: FakeAnthropic
) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, timeout=10)
    tools: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    stream = await client.chat.completions.create(
        model="claude", messages=HELLO, tools=tools, stream=True, stream_options={"include_usage": True}
    )
    name, arguments, finish, usage, pieces = "", "", None, None, 0
    async for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                name += (call.function.name or "") if call.function else ""
                if call.function and call.function.arguments:
                    arguments += call.function.arguments
                    pieces += 1
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert (name, json.loads(arguments), finish) == ("lookup", {"echo": "hello there"}, "tool_calls")
    assert pieces > 1, "the arguments arrived in several deltas"
    assert usage is not None and usage.completion_tokens == 12
    sent = fake_anthropic.requests[-1]
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY
    assert sent.json["max_tokens"] == 1000  # the backend's default_max_tokens
    assert sent.json["tools"] == [{"name": "lookup", "input_schema": {"type": "object"}}]


async def test_openai_sdk_to_anthropic_backend_tool_round_trip(
    gateway: RunningGateway, fake_anthropic: FakeAnthropic
) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, timeout=10)
    tools: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    first = await client.chat.completions.create(model="claude", messages=HELLO, tools=tools)
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    history: Any = [
        *HELLO,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "found it"},
    ]
    second = await client.chat.completions.create(model="claude", messages=history, tools=tools)
    assert second.choices[0].finish_reason == "stop"
    sent = fake_anthropic.requests[-1].json["messages"]
    assert sent[1]["content"][0] == {
        "type": "tool_use",
        "id": call.id,
        "name": "lookup",
        "input": {"echo": "hello there"},
    }
    assert sent[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "found it"}],
    }


# ---------------------------------------------------------------------------------------------------- passthrough


async def test_passthrough_keeps_thinking_cache_control_and_tool_ids(
    claude: anthropic.AsyncAnthropic, fake_anthropic: FakeAnthropic
) -> None:
    client = claude
    system: Any = [{"type": "text", "text": "A long, cacheable prompt.", "cache_control": {"type": "ephemeral"}}]
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    first = await client.messages.create(
        model="claude", max_tokens=2000, system=system, messages=HELLO, tools=TOOLS, thinking=thinking
    )
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    assert first.content[0].signature.startswith("sig_")  # type: ignore[union-attr]
    assert first.usage.cache_creation_input_tokens and first.usage.cache_creation_input_tokens > 0
    # The next turn sends the thinking block (with its signature) and the tool_use back, as Anthropic requires.
    tool_id = first.content[1].id  # type: ignore[union-attr]
    history: Any = [
        *HELLO,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "42"}]},
    ]
    async with client.messages.stream(
        model="claude", max_tokens=2000, system=system, messages=history, tools=TOOLS, thinking=thinking,
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
    ) as stream:  # fmt: skip
        second = await stream.get_final_message()
    sent = fake_anthropic.requests[-1]
    assert sent.json["system"] == system
    assert sent.json["thinking"] == thinking
    assert sent.json["messages"][1] == history[1]
    assert sent.json["messages"][2] == history[2]
    assert sent.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert second.content[0].type == "thinking"
    assert second.content[0].signature.startswith("sig_")
    assert second.usage.cache_read_input_tokens and second.usage.cache_read_input_tokens > 0


async def test_count_tokens(claude: anthropic.AsyncAnthropic) -> None:
    client = claude
    counted = await client.messages.count_tokens(model="claude", messages=HELLO)
    assert counted.input_tokens == 3  # the fake: a token per word and one per message
    with pytest.raises(anthropic.BadRequestError, match="count_tokens needs an Anthropic backend"):
        await client.messages.count_tokens(model="gpt-4o-mini", messages=HELLO)


# ---------------------------------------------------------------------------------------------------- errors


async def test_errors_are_anthropic_shaped(
    claude: anthropic.AsyncAnthropic, fake_anthropic: FakeAnthropic, upstream: FakeOpenAI
) -> None:
    client = claude
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(model="nope", max_tokens=5, messages=HELLO)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        await client.messages.create(model="claude", max_tokens=0, messages=HELLO)
    fake_anthropic.faults.append(AnthropicFault(error_type="overloaded_error", retry_after="2"))
    with pytest.raises(anthropic.InternalServerError) as busy:
        await client.messages.create(model="claude", max_tokens=5, messages=HELLO)
    assert busy.value.status_code == 503
    assert busy.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert busy.value.response.headers["retry-after"] == "2"
    upstream.add_fault(Fault(status=429, error_type="rate_limit_error", retry_after="7"))
    with pytest.raises(anthropic.RateLimitError):
        await client.messages.create(model="gpt-4o-mini", max_tokens=5, messages=HELLO)


async def test_error_mid_stream_is_an_error_event(
    claude: anthropic.AsyncAnthropic, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.faults.append(AnthropicFault(error_type="overloaded_error", after_events=4))
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        async with claude.messages.stream(model="claude", max_tokens=100, messages=HELLO) as stream:
            async for text in stream.text_stream:
                texts.append(text)
    assert texts, "text before the error reached the client"


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b'{"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": [{}]}]}'],
)
async def test_hostile_bodies_get_400s(gateway: RunningGateway, body: bytes) -> None:
    url = f"{gateway.http_url}/v1/messages"
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers={"x-api-key": "k"}) as reply:
        assert reply.status == 400
        error = await reply.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"


# ---------------------------------------------------------------------------------------------------- real process


async def test_through_a_real_tollgate_process(
    tmp_path: Path, upstream: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(config(upstream.base_url, fake_anthropic.base_url))
    async with tollgate("serve", "--config", str(path)) as process:
        await process.wait_listening("http", "grpc")
        http_url = f"http://127.0.0.1:{process.ports['http']}"
        final = await _streamed_tool_use(http_url, "gpt-4o-mini")
        assert final.stop_reason == "tool_use"
        client = openai.AsyncOpenAI(base_url=process.base_url, api_key="sk-client", max_retries=0, timeout=10)
        tools: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
        stream = await client.chat.completions.create(model="claude", messages=HELLO, tools=tools, stream=True)
        arguments = "".join(
            [c.function.arguments or "" async for chunk in stream for c in chunk.choices[0].delta.tool_calls or ()]  # type: ignore[union-attr]
        )
        assert json.loads(arguments) == {"echo": "hello there"}
        assert await process.terminate() == 0, process.output()


# ---------------------------------------------------------------------------------------------------- auth and usage


async def test_auth_and_usage_apply_to_messages(secured: RunningGateway, stack: Stack) -> None:  # noqa: F811 - fixtures
    """The same engine: keys from x-api-key, denials in Anthropic's shape, one usage record per request."""
    for key, error, kind in [
        ("sk-not-a-tollgate-key", anthropic.AuthenticationError, "authentication_error"),
        (stack.keys["bob"], anthropic.PermissionDeniedError, "permission_error"),
    ]:
        async with anthropic.AsyncAnthropic(base_url=secured.http_url, api_key=key, max_retries=0) as denied:
            with pytest.raises(error) as caught:
                await denied.messages.create(model="gpt-4o-mini", max_tokens=5, messages=HELLO)
        assert caught.value.body["error"]["type"] == kind  # type: ignore[index]
    async with anthropic.AsyncAnthropic(base_url=secured.http_url, api_key=stack.keys["alice"], max_retries=0) as alice:
        await alice.messages.create(
            model="gpt-4o-mini", max_tokens=50, messages=HELLO, extra_headers={"x-request-id": f"msg-{secured.mode}"}
        )
    await eventually(lambda: any(f"msg-{secured.mode}" in str(row["labels"]) for row in stack.rows()))
    row = next(row for row in stack.rows() if f"msg-{secured.mode}" in str(row["labels"]))
    assert (row["user"], row["outcome"], row["requested_model"]) == ("alice", "OUTCOME_COMPLETED", "gpt-4o-mini")
    assert row["input_tokens"] > 0 and row["output_tokens"] > 0
