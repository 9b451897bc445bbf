"""The Anthropic adapter's own behaviour against the fake Anthropic server: options, headers, thinking, faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest

from gateway.codec.openai_decode import decode_chat_params
from gateway.config import BackendConfig, ConfigError, Secret, parse_config
from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamConnectionError,
    UpstreamError,
)
from gateway.providers.anthropic import AnthropicOptions, AnthropicProvider, build_anthropic
from gateway.providers.anthropic_decode import StreamTranslator, anthropic_error
from gateway.providers.anthropic_encode import encode_messages_request
from gateway.providers.base import collect
from gateway.providers.registry import build_providers
from gateway.testing.fake_anthropic import AnthropicFault, FakeAnthropic
from tollgate.gateway.v1 import gateway_pb2 as pb

KEY = "sk-ant-key"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=KEY, chunks=4) as server:
        yield server


def provider(base_url: str, **options: Any) -> AnthropicProvider:
    backend = BackendConfig(
        name="claude", provider="anthropic", base_url=base_url, api_key=Secret(KEY), options=options, read_timeout=5
    )
    return build_anthropic(backend, "backends[0]")


def params(body: dict[str, Any]) -> pb.ChatCompletionParams:
    return decode_chat_params({"model": "claude", **body})[0]


HELLO = {"messages": [{"role": "user", "content": "hello there"}]}
AUDIO = {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}


async def test_options_and_headers(fake: FakeAnthropic) -> None:
    claude = provider(fake.base_url, version="2024-01-01", default_max_tokens=77, beta=["prompt-caching-2024-07-31"])
    request = params(HELLO)
    request.anthropic_beta.extend(["prompt-caching-2024-07-31", "output-128k-2025-02-19"])
    try:
        await claude.complete("claude-x", request)
    finally:
        await claude.close()
    sent = fake.requests[-1]
    assert sent.headers["anthropic-version"] == "2024-01-01"
    assert sent.headers["anthropic-beta"] == "prompt-caching-2024-07-31,output-128k-2025-02-19"
    assert sent.headers["x-api-key"] == KEY
    assert sent.json["max_tokens"] == 77


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"versoin": "x"}, "backends[0].options.versoin: unknown option"),
        ({"version": ""}, "backends[0].options.version"),
        ({"default_max_tokens": 0}, "backends[0].options.default_max_tokens"),
        ({"default_max_tokens": True}, "backends[0].options.default_max_tokens"),
        ({"beta": [1]}, "backends[0].options.beta"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        AnthropicOptions.parse(options, "backends[0]")


def test_registered_with_default_base_url() -> None:
    config = parse_config(
        """
auth: none
backends: [{name: claude, provider: anthropic, api_key: k, options: {default_max_tokens: 1000}}]
models: [{name: c, targets: [{backend: claude, model: claude-3-5-haiku-latest}]}]
""",
        {},
    )
    built = build_providers(config)["claude"]
    assert isinstance(built, AnthropicProvider)
    assert built._chat_url == "https://api.anthropic.com/v1/messages"
    assert built.options.default_max_tokens == 1000


async def test_thinking_round_trip_whole_and_streamed(fake: FakeAnthropic) -> None:
    claude = provider(fake.base_url)
    request = params({**HELLO, "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 1024}})
    try:
        whole = await claude.complete("claude-x", request)
        async with aclosing(claude.stream("claude-x", request)) as chunks:
            folded = await collect(chunks)
    finally:
        await claude.close()
    for completion in (whole, folded):
        message = completion.choices[0].message
        assert message.reasoning_content.startswith("The user said: hello there")
    # Folding the stream rebuilds the thinking block, signature and all, exactly as the whole answer has it.
    assert folded.choices[0].message.thinking_blocks == whole.choices[0].message.thinking_blocks
    assert whole.choices[0].message.thinking_blocks[0].signature.startswith("sig_")
    assert folded.choices[0].native_finish_reason == whole.choices[0].native_finish_reason == "end_turn"
    assert fake.requests[-1].json["thinking"] == {"type": "enabled", "budget_tokens": 1024}


async def test_assistant_thinking_blocks_go_back_first() -> None:
    request = params({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    request.messages[1].thinking_blocks.add(thinking="hm", signature="sig")
    request.messages[1].thinking_blocks.add(redacted_data="opaque")
    body = encode_messages_request(request, "m", stream=False, default_max_tokens=10)
    assert body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "hm", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "hello"},
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**HELLO, "n": 2}, "n"),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{x"}}],
                    },
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}],
                    }
                ]
            },
            "messages[0].content[0].type",
        ),
    ],
)
async def test_what_anthropic_cannot_take_is_a_clear_400(fake: FakeAnthropic, body: dict[str, Any], param: str) -> None:
    claude = provider(fake.base_url)
    try:
        with pytest.raises(InvalidRequestError) as caught:
            await claude.complete("claude-x", params(body))
    finally:
        await claude.close()
    assert caught.value.param == param
    assert not fake.requests, "nothing is sent upstream"


async def test_no_embeddings(fake: FakeAnthropic) -> None:
    claude = provider(fake.base_url)
    with pytest.raises(InvalidRequestError, match="no embeddings"):
        await claude.embed("m", pb.CreateEmbeddingsRequest(model="m", input=["x"]))


async def test_error_before_the_stream_and_inside_it(fake: FakeAnthropic) -> None:
    claude = provider(fake.base_url)
    fake.faults.append(AnthropicFault(error_type="rate_limit_error", message="slow down", retry_after="9"))
    fake.faults.append(AnthropicFault(error_type="overloaded_error", after_events=4))
    got: list[pb.StreamChatCompletionResponse] = []
    try:
        with pytest.raises(RateLimitError) as limited:
            async with aclosing(claude.stream("claude-x", params(HELLO))) as chunks:
                got.extend([c async for c in chunks])
        with pytest.raises(ServiceUnavailableError):
            async with aclosing(claude.stream("claude-x", params(HELLO))) as chunks:
                async for chunk in chunks:
                    got.append(chunk)
    finally:
        await claude.close()
    assert limited.value.retry_after == 9.0
    assert any(c.choices and c.choices[0].delta.content for c in got), "chunks before the error went out"


async def test_stream_cut_short_is_an_upstream_error(fake: FakeAnthropic) -> None:
    claude = provider(fake.base_url)
    fake.faults.append(AnthropicFault(cut_after_events=5))
    try:
        with pytest.raises(UpstreamError, match="closed the stream before it finished"):
            async with aclosing(claude.stream("claude-x", params(HELLO))) as chunks:
                async for _ in chunks:
                    pass
    finally:
        await claude.close()


async def test_unreachable_backend() -> None:
    claude = provider("http://127.0.0.1:9")
    try:
        with pytest.raises(UpstreamConnectionError):
            await claude.complete("claude-x", params(HELLO))
    finally:
        await claude.close()


def test_malformed_events_and_bodies() -> None:
    translator = StreamTranslator(0)
    with pytest.raises(KeyError):  # the provider turns this into one UpstreamError
        translator.feed({"type": "content_block_delta", "index": 3}, "b")
    server_tool = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
    assert translator.feed({"type": "content_block_start", "index": 0, "content_block": server_tool}, "b") is None
    query = {"type": "input_json_delta", "partial_json": '{"query": "x"}'}
    assert translator.feed({"type": "content_block_delta", "index": 0, "delta": query}, "b") is None
    assert translator.feed({"type": "ping"}, "b") is None
    assert translator.feed({"type": "some_future_event"}, "b") is None
    error = anthropic_error(0, {"type": "error", "error": {"type": "brand_new_error"}}, None, "b")
    assert isinstance(error, UpstreamError)
    error = anthropic_error(418, "not json", None, "b")
    assert isinstance(error, GatewayError) and error.http_status == 418


async def test_redacted_thinking_and_interleaved_blocks_in_a_stream() -> None:
    translator = StreamTranslator(0)
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 3}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "redacted_thinking", "data": "xyz"}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "a", "name": "f"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "b", "name": "g"}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "citations_delta", "citation": {}}},
        {"type": "message_delta", "delta": {"stop_reason": "pause_turn"}, "usage": {"output_tokens": 4}},
        {"type": "message_stop"},
    ]
    chunks = [c for e in events if (c := translator.feed(e, "b")) is not None]
    assert chunks[1].choices[0].delta.redacted_thinking == "xyz"
    assert [c.choices[0].delta.tool_calls[0].index for c in chunks[2:5]] == [0, 0, 1]
    assert chunks[-2].choices[0].native_finish_reason == "pause_turn"
    assert chunks[-1].usage.total_tokens == 7
    assert translator.done

    async def replay() -> AsyncIterator[pb.StreamChatCompletionResponse]:
        for chunk in chunks:
            yield chunk

    folded = (await collect(replay())).choices[0]
    assert [b.redacted_data for b in folded.message.thinking_blocks] == ["xyz"]
    assert [c.id for c in folded.message.tool_calls] == ["a", "b"]
    assert (folded.finish_reason, folded.native_finish_reason) == (pb.FINISH_REASON_STOP, "pause_turn")


def test_system_messages_anywhere_join_system_and_a_later_image_part_names_its_path() -> None:
    request = params(
        {
            "messages": [
                {"role": "system", "content": "First."},
                {"role": "user", "content": "hi"},
                {"role": "developer", "content": [{"type": "text", "text": "Later.", "cache_control": {"type": "x"}}]},
            ]
        }
    )
    body = encode_messages_request(request, "m", stream=False, default_max_tokens=10)
    assert body["system"] == [
        {"type": "text", "text": "First."},
        {"type": "text", "text": "Later.", "cache_control": {"type": "x"}},
    ]
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    bad = params({"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": [AUDIO]}]})
    with pytest.raises(InvalidRequestError) as caught:
        encode_messages_request(bad, "m", stream=False, default_max_tokens=10)
    assert caught.value.param == "messages[1].content[0].type"
