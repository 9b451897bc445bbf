"""Mid-stream failover: a stream whose target fails after its first byte is continued by another target, so the
caller gets one whole answer; where it cannot be continued, the caller gets the in-band error as before."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from gateway.call import CallContext, new_request_id
from gateway.config import ConfigError, parse_config
from gateway.engine.core import EngineCore, EngineParts
from gateway.engine.metering import estimate_prompt_tokens
from gateway.engine.record import CallRecord, Spent
from gateway.errors import GatewayError
from gateway.providers.base import collect
from gateway.providers.registry import build_providers
from gateway.telemetry.observer import Telemetry
from gateway.testing.fake_anthropic import AnthropicFault, FakeAnthropic
from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.usage_sink import RecordingSink
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.stats.v1 import stats_pb2

CHUNKS = 8
REPLY_WORDS = ("This", "is", "a", "reply", "from", "the", "fake", "OpenAI", "server", "to:")


def config(faulty: str, sound: str, *, failover: bool = True, sound_provider: str = "vllm") -> str:
    return f"""
routing: {{health: {{consecutive_failures: 3, ejection_base: 60s}}}}
backends:
  - {{name: faulty, provider: vllm, base_url: "{faulty}", read_timeout: 300ms}}
  - {{name: sound, provider: {sound_provider}, base_url: "{sound}"}}
models:
  - name: m
    stream_failover: {str(failover).lower()}
    targets: [{{backend: faulty, model: qwen, priority: 0}}, {{backend: sound, model: qwen, priority: 1}}]
"""


def params(text: str = "hello there", *, tools: tuple[pb.Tool, ...] = (), n: int = 1) -> pb.ChatCompletionParams:
    request = pb.ChatCompletionParams(model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content=text)])
    request.tools.extend(tools)
    if n != 1:
        request.n = n
    return request


@dataclass
class Answer:
    chunks: list[pb.StreamChatCompletionResponse]
    error: GatewayError | None

    @property
    def text(self) -> str:
        return "".join(c.delta.content for chunk in self.chunks for c in chunk.choices)

    @property
    def roles(self) -> int:
        return sum(1 for chunk in self.chunks for c in chunk.choices if c.delta.role)


async def answer(engine: EngineCore, request: pb.ChatCompletionParams) -> Answer:
    chunks: list[pb.StreamChatCompletionResponse] = []
    try:
        async for chunk in engine.stream_chat_completion(request, CallContext(request_id=new_request_id())):
            chunks.append(chunk)
    except GatewayError as exc:
        return Answer(chunks, exc)
    return Answer(chunks, None)


Engine = tuple[EngineCore, FakeOpenAI, FakeOpenAI, RecordingSink]


async def started(text: str) -> tuple[EngineCore, RecordingSink]:
    conf = parse_config(text, os.environ)
    records = RecordingSink()
    return EngineCore(conf, EngineParts(build_providers(conf), usage=records)), records


@pytest.fixture
async def pair() -> AsyncIterator[Engine]:
    async with FakeOpenAI(chunks=CHUNKS) as faulty, FakeOpenAI(chunks=CHUNKS) as sound:
        engine, records = await started(config(faulty.base_url, sound.base_url))
        try:
            yield engine, faulty, sound, records
        finally:
            await engine.close()


def cut(how: str, after: int = 3) -> Fault:
    """A stream broken after `after` chunks. A reset may lose what the socket still held (the gateway then saw
    fewer chunks): tests that need exactly `after` use another fault."""
    return Fault(stall_after_chunks=after) if how == "stall" else Fault(fail_after_chunks=after, fail_with=how)


def whole_text() -> str:
    """What the fake answers "hello there" with, uncut."""
    words = (*REPLY_WORDS, "hello", "there")
    return "".join(words[i % len(words)] + " " for i in range(CHUNKS))


@pytest.mark.parametrize("how", ["reset", "error", "malformed", "stall"])
async def test_a_stream_cut_mid_way_is_continued_by_the_next_target(pair: Engine, how: str) -> None:
    engine, faulty, sound, records = pair
    faulty.add_fault(cut(how))
    got = await answer(engine, params())
    assert got.error is None, "the caller never sees the failure"
    assert got.text == whole_text(), "one answer, seamless"
    assert got.roles == 1, "no second role delta"
    assert {(c.id, c.created, c.model) for c in got.chunks} == {(got.chunks[0].id, got.chunks[0].created, "qwen")}
    assert got.chunks[-1].choices[0].finish_reason == pb.FINISH_REASON_STOP
    # The second target was asked to continue the first one's text, vLLM's way: the three words it sent (a reset
    # may lose what the socket still held, and with nothing said the second target starts afresh).
    asked = sound.requests[-1].json
    said = asked["messages"][-1]["content"] if asked["messages"][-1]["role"] == "assistant" else ""
    words = len(said.split())
    assert said == "This is a " if how != "reset" else "This is a ".startswith(said)
    if said:
        assert asked["continue_final_message"] is True and asked["add_generation_prompt"] is False
    # Usage: both attempts, once; the cut one estimated (its provider never said), and the record says so.
    (record,) = records.records
    prompt_first = estimate_prompt_tokens(params())
    prompt_second = 2 + 3 + (words + 3 if words else 0)  # the fake's count: words and 3 a message, the prefix's too
    assert record.resumed == 1 and record.attempts == 2 and record.usage_estimated
    assert record.input_tokens == prompt_first + prompt_second
    assert record.output_tokens == (1 + words) + (CHUNKS - words), "the role chunk and the words, then the rest"
    assert record.outcome == stats_pb2.OUTCOME_COMPLETED and record.http_status == 200
    assert record.backend == "sound" and record.route == "m>sound"


async def test_the_cut_target_counts_a_failure_and_is_ejected(pair: Engine) -> None:
    engine, faulty, _, _ = pair
    fault = cut("reset")
    fault.times = 3
    faulty.add_fault(fault)
    for _ in range(3):
        assert (await answer(engine, params())).error is None
    (target,) = [t for t in engine.health_snapshot() if t.backend == "faulty"]
    assert (target.state, target.ejections_total) == ("open", 1)


async def test_failover_is_off_unless_the_model_asks_for_it() -> None:
    async with FakeOpenAI(chunks=CHUNKS) as faulty, FakeOpenAI(chunks=CHUNKS) as sound:
        engine, records = await started(config(faulty.base_url, sound.base_url, failover=False))
        try:
            faulty.add_fault(cut("malformed"))
            got = await answer(engine, params())
            assert got.error is not None and got.text, "the in-band error, after what was sent"
            assert sound.requests == []
            assert records.records[0].resumed == 0
        finally:
            await engine.close()


async def test_a_tool_call_half_sent_is_not_continued(pair: Engine) -> None:
    engine, faulty, sound, records = pair
    faulty.add_fault(cut("malformed", after=1))
    tool = pb.Tool(type="function", function=pb.FunctionDefinition(name="lookup", parameters_json='{"type":"object"}'))
    got = await answer(engine, params(tools=(tool,)))
    assert got.error is not None, "half a tool call cannot be continued: the caller gets the in-band error"
    assert sound.requests == []
    assert records.records[0].resumed == 0


async def test_more_than_one_choice_is_not_continued(pair: Engine) -> None:
    engine, faulty, sound, _ = pair
    faulty.add_fault(cut("malformed"))
    got = await answer(engine, params(n=2))
    assert got.error is not None and sound.requests == []


async def test_a_target_that_cannot_continue_is_not_asked() -> None:
    async with FakeOpenAI(chunks=CHUNKS) as faulty, FakeOpenAI(chunks=CHUNKS) as sound:
        engine, _ = await started(config(faulty.base_url, sound.base_url, sound_provider="openai"))
        try:
            faulty.add_fault(cut("malformed"))
            got = await answer(engine, params())
            assert got.error is not None, "OpenAI's API cannot continue a prefix: no target is left"
            assert sound.requests == []
        finally:
            await engine.close()


async def test_with_nothing_said_yet_any_target_starts_the_answer_afresh() -> None:
    async with FakeOpenAI(chunks=CHUNKS) as faulty, FakeOpenAI(chunks=CHUNKS) as sound:
        engine, records = await started(config(faulty.base_url, sound.base_url, sound_provider="openai"))
        try:
            faulty.add_fault(cut("malformed", after=0))  # only the opening role delta went out
            got = await answer(engine, params())
            assert got.error is None and got.text == whole_text() and got.roles == 1
            assert sound.requests[-1].json["messages"][-1]["role"] == "user", "a plain request: nothing to continue"
            assert records.records[0].resumed == 1
        finally:
            await engine.close()


async def test_a_continuation_cut_again_is_continued_again() -> None:
    async with (
        FakeOpenAI(chunks=CHUNKS) as faulty,
        FakeOpenAI(chunks=CHUNKS) as sound,
        FakeOpenAI(chunks=CHUNKS) as third,
    ):
        text = config(faulty.base_url, sound.base_url).replace(
            "priority: 1}]", "priority: 1}, {backend: third, model: qwen, priority: 2}]"
        )
        text = text.replace("models:", f'  - {{name: third, provider: vllm, base_url: "{third.base_url}"}}\nmodels:')
        engine2, records2 = await started(text)
        try:
            faulty.add_fault(cut("malformed", after=2))
            sound.add_fault(cut("error", after=2))
            got = await answer(engine2, params())
            assert got.error is None and got.text == whole_text() and got.roles == 1
            assert third.requests[-1].json["messages"][-1]["content"] == "This is a reply "  # each cut after two words
            assert records2.records[0].resumed == 2 and records2.records[0].attempts == 3
        finally:
            await engine2.close()


async def test_a_stream_whose_continuation_fails_everywhere_ends_with_the_in_band_error(pair: Engine) -> None:
    engine, faulty, sound, records = pair
    faulty.add_fault(cut("malformed"))
    sound.add_fault(Fault(status=503))
    got = await answer(engine, params())
    assert got.error is not None and got.text == whole_text()[: len("This is a ")]
    (record,) = records.records
    assert record.resumed == 0 and record.attempts == 2 and record.outcome == stats_pb2.OUTCOME_FAILED


async def test_claude_continues_a_prefill_without_a_seam() -> None:
    async with FakeAnthropic(chunks=CHUNKS) as faulty, FakeAnthropic(chunks=CHUNKS) as sound:
        text = f"""
backends:
  - {{name: faulty, provider: anthropic, base_url: "{faulty.base_url}"}}
  - {{name: sound, provider: anthropic, base_url: "{sound.base_url}"}}
models:
  - name: m
    stream_failover: true
    targets: [{{backend: faulty, model: claude, priority: 0}}, {{backend: sound, model: claude, priority: 1}}]
"""
        engine, records = await started(text)
        try:
            uncut = await answer(engine, params())
            # message_start, ping, content_block_start, then three text deltas: cut inside the text.
            faulty.faults.append(AnthropicFault(cut_after_events=6))
            got = await answer(engine, params())
            assert got.error is None and got.text == uncut.text and got.roles == 1
            prefill = sound.requests[-1].json["messages"][-1]
            assert prefill["role"] == "assistant" and prefill["content"] == prefill["content"].rstrip()
            assert uncut.text.startswith(prefill["content"])
            assert records.records[-1].resumed == 1
        finally:
            await engine.close()


async def test_the_mock_backend_continues_its_own_answer() -> None:
    conf = parse_config(
        "backends: [{name: demo, provider: mock, options: {text: 'one two three four five'}}]\n"
        "models: [{name: m, targets: [{backend: demo}]}]\n",
        os.environ,
    )
    (provider,) = build_providers(conf).values()
    assert provider.backend.continuation == "prefill"
    whole = await collect(provider.stream("demo", params()))
    rest = await collect(provider.continue_stream("demo", params(), "one two th"))  # type: ignore[attr-defined]
    assert whole.choices[0].message.content == "one two three four five"
    assert rest.choices[0].message.content == "ree four five"
    assert rest.usage.completion_tokens == 3 and rest.usage.prompt_tokens > whole.usage.prompt_tokens


@pytest.mark.parametrize(
    ("backend", "error"),
    [
        ("{name: b, provider: anthropic, continue: vllm}", "backends[name=b].continue: provider 'anthropic' cannot"),
        ("{name: b, provider: openai, continue: prefill}", "backends[name=b].continue: provider 'openai' cannot"),
    ],
)
def test_a_continuation_the_provider_does_not_have_is_refused(backend: str, error: str) -> None:
    conf = parse_config(f"backends: [{backend}]\nmodels: [{{name: m, targets: [{{backend: b}}]}}]\n", os.environ)
    with pytest.raises(ConfigError, match=re.escape(error)):
        build_providers(conf)


def test_stream_failover_is_a_boolean() -> None:
    with pytest.raises(ConfigError, match=r"models\[0\].stream_failover: expected true or false"):
        parse_config(
            "backends: [{name: b, provider: mock}]\n"
            "models: [{name: m, stream_failover: sometimes, targets: [{backend: b}]}]\n",
            os.environ,
        )


async def test_resumes_are_counted_and_logged() -> None:
    async with FakeOpenAI(chunks=CHUNKS) as faulty, FakeOpenAI(chunks=CHUNKS) as sound:
        conf = parse_config(config(faulty.base_url, sound.base_url), os.environ)
        telemetry = Telemetry.from_config(conf)
        finished: list[tuple[CallRecord, BaseException | None, Spent]] = []

        class Observer:
            def finished(self, call: CallRecord, failure: BaseException | None, spent: Spent) -> None:
                finished.append((call, failure, spent))
                telemetry.finished(call, failure, spent)

        engine = EngineCore(conf, EngineParts(build_providers(conf), observer=Observer()))
        try:
            faulty.add_fault(cut("malformed"))
            faulty.add_fault(cut("malformed", after=1))
            assert (await answer(engine, params())).error is None
            tool = pb.Tool(type="function", function=pb.FunctionDefinition(name="f", parameters_json="{}"))
            assert (await answer(engine, params(tools=(tool,)))).error is not None
            assert telemetry.metrics is not None
            sample = telemetry.metrics.registry.get_sample_value
            assert sample("tollgate_stream_resumes_total", {"model": "m", "result": "resumed"}) == 1
            assert sample("tollgate_stream_resumes_total", {"model": "m", "result": "not_continuable"}) == 1
            failed = {"backend": "faulty", "provider": "vllm", "error_type": "upstream_error"}
            assert sample("tollgate_upstream_failures_total", failed) == 2, "mid-stream failures count as failures"
            lines = [
                telemetry.access_fields(call, failure, spent, time.perf_counter()) for call, failure, spent in finished
            ]
            assert [line["resumed"] for line in lines] == [1, 0], "the access log line says it"
        finally:
            await engine.close()
