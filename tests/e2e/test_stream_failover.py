"""Mid-stream failover through the front door, as the official openai SDK streams it, in one process and split: a
target that breaks its stream after the first words is continued by the next, and the client reads one answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import openai
import pytest

from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.conftest import UPSTREAM_KEY, RunningGateway, StartGateway

WORDS = ("This", "is", "a", "reply", "from", "the", "fake", "OpenAI", "server", "to:", "hello")


def config(faulty: str, sound: str) -> str:
    return f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
backends:
  - {{name: faulty, provider: vllm, base_url: "{faulty}", api_key: {UPSTREAM_KEY}, read_timeout: 300ms}}
  - {{name: sound, provider: vllm, base_url: "{sound}", api_key: {UPSTREAM_KEY}}}
models:
  - name: qwen
    stream_failover: true
    targets: [{{backend: faulty, model: qwen-a, priority: 0}}, {{backend: sound, model: qwen-b, priority: 1}}]
"""


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeOpenAI]]:
    async with (
        FakeOpenAI(api_key=UPSTREAM_KEY, chunks=12) as faulty,
        FakeOpenAI(api_key=UPSTREAM_KEY, chunks=12) as sound,
    ):
        yield faulty, sound


@pytest.mark.parametrize("how", ["reset", "stall", "malformed", "error"])
async def test_the_sdk_reads_one_whole_answer(
    start_gateway: StartGateway, fakes: tuple[FakeOpenAI, FakeOpenAI], how: str
) -> None:
    faulty, sound = fakes
    gateway: RunningGateway = await start_gateway(config(faulty.base_url, sound.base_url))
    faulty.add_fault(Fault(stall_after_chunks=4) if how == "stall" else Fault(fail_after_chunks=4, fail_with=how))
    api = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, timeout=10)
    stream = await api.chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices)
    assert text == "".join(WORDS[i % len(WORDS)] + " " for i in range(12))
    assert sum(1 for chunk in chunks for c in chunk.choices if c.delta.role) == 1
    assert {(c.id, c.created, c.model) for c in chunks} == {(chunks[0].id, chunks[0].created, "qwen-a")}
    finishes = [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]
    assert finishes == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None, "the usage chunk the client asked for"
    # What the gateway had read of the first target when it broke: a reset may lose what the socket still held.
    (continued,) = sound.requests
    said = continued.json["messages"][-1]["content"] if len(continued.json["messages"]) == 2 else ""
    assert text.startswith(said) and (continued.json.get("continue_final_message") is True) == bool(said)
    words = len(said.split())
    if how != "reset":
        assert words == 4, "the four words before the cut"
    # Both attempts: the cut one's estimate (the role chunk and its words; the prompt's 5 characters / 4, at least
    # 1) and the continuation's own count (the words left; its prompt, the words said as the assistant's message).
    prompt = 1 + (1 + 3) + (words + 3 if words else 0)
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, (1 + words) + (12 - words))


async def test_the_anthropic_sdk_reads_one_whole_message(
    start_gateway: StartGateway, fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    faulty, sound = fakes
    gateway = await start_gateway(config(faulty.base_url, sound.base_url))
    faulty.add_fault(Fault(fail_after_chunks=4, fail_with="malformed"))
    client = anthropic.AsyncAnthropic(base_url=gateway.http_url, api_key="sk-client", max_retries=0, timeout=10)
    async with client.messages.stream(
        model="qwen", max_tokens=100, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        events = [event async for event in stream]
        message = await stream.get_final_message()
    assert [e.type for e in events].count("message_start") == 1
    assert [block.type for block in message.content] == ["text"], "one text block: no second start"
    assert message.content[0].text == "".join(WORDS[i % len(WORDS)] + " " for i in range(12))  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
