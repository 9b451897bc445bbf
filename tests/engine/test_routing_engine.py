"""The engine with real provider adapters against fake OpenAI servers: what routing puts in usage records, usage
reported for a stream that fails after its first byte, and context-window fallback."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from gateway.call import CallContext
from gateway.config import parse_config
from gateway.engine.core import EngineCore, EngineParts
from gateway.engine.routes import Caller
from gateway.errors import UpstreamTimeoutError
from gateway.providers.registry import build_providers
from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.engine.test_metering import Calls
from tests.usage_sink import RecordingSink
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.stats.v1 import stats_pb2

CONFIG = """
routing: {{retry: {{attempt_timeout: 1s}}}}
backends:
  - {{name: a, provider: openai, base_url: "{first}", read_timeout: 300ms}}
  - {{name: b, provider: openai, base_url: "{second}", read_timeout: 300ms}}
routes:
  - {{name: vip, to: small, match: {{headers: {{x-vip: "1"}}}}}}
models:
  - name: small
    context_fallback: [long]
    targets: [{{backend: a, model: gpt-4o-mini}}]
    experiment: {{name: try-b, share: 0.5, key: "header:x-session", targets: [{{backend: b, model: gpt-4o-mini}}]}}
  - {{name: long, targets: [{{backend: b, model: gpt-4o-mini-128k}}]}}
"""


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeOpenAI]]:
    async with FakeOpenAI(chunks=6) as first, FakeOpenAI(chunks=6, model_ids=("gpt-4o-mini-128k",)) as second:
        yield first, second


@pytest.fixture
async def engine(fakes: tuple[FakeOpenAI, FakeOpenAI]) -> AsyncIterator[tuple[EngineCore, RecordingSink]]:
    config = parse_config(CONFIG.format(first=fakes[0].base_url, second=fakes[1].base_url), os.environ)
    sink = RecordingSink()
    core = EngineCore(config, EngineParts(build_providers(config), usage=sink, observer=CALLS))
    yield core, sink
    await core.close()


CALLS = Calls()


def chat(model: str = "small") -> pb.ChatCompletionParams:
    return pb.ChatCompletionParams(model=model, messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hello there")])


def session_ctx(session: str, **headers: str) -> CallContext:
    return CallContext(request_id=f"req_{session}", headers={"x-session": session, **headers})


async def test_the_record_names_the_rule_the_experiment_and_the_arm(engine: tuple[EngineCore, RecordingSink]) -> None:
    core, sink = engine
    arms = {}
    for i in range(20):
        ctx = session_ctx(f"s{i}", **{"x-vip": "1"})
        await core.create_chat_completion(chat(), ctx)
        arms[CALLS.of(ctx).arm] = CALLS.of(ctx).backend
    assert arms == {"control": "a", "treatment": "b"}, "both arms seen over 20 sessions, each on its own targets"
    for record in sink.records:
        assert record.labels["tollgate.route_rule"] == "vip"
        assert record.experiment == "try-b"
        assert record.experiment_arm in ("control", "treatment")
        assert record.backend == ("b" if record.experiment_arm == "treatment" else "a")


async def test_a_failing_treatment_falls_back_to_the_control_targets(
    engine: tuple[EngineCore, RecordingSink], fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    core, _ = engine
    treated = next(s for s in (f"s{i}" for i in range(50)) if _arm(core, s) == "treatment")
    fakes[1].add_fault(Fault(status=500))
    ctx = session_ctx(treated)
    await core.create_chat_completion(chat(), ctx)
    call = CALLS.of(ctx)
    assert (call.arm, call.backend, call.attempts) == ("treatment", "a", 2)


def _arm(core: EngineCore, session: str) -> str:
    return core._router.route("small", Caller(session_ctx(session).headers)).arm


async def test_a_stream_stalling_after_its_first_byte_reports_the_usage_so_far(
    engine: tuple[EngineCore, RecordingSink], fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    core, sink = engine
    control = next(s for s in (f"s{i}" for i in range(50)) if _arm(core, s) == "control")
    fakes[0].add_fault(Fault(stall_after_chunks=3))
    received = 0
    with pytest.raises(UpstreamTimeoutError):
        async for _ in core.stream_chat_completion(chat(), session_ctx(control)):
            received += 1
    assert received >= 3
    (record,) = sink.records
    assert record.outcome == stats_pb2.OUTCOME_FAILED and record.http_status == 200, "the client had its 200"
    assert record.usage_estimated and record.output_tokens == received and record.input_tokens > 0
    assert record.attempts == 1, "no failing over after the first byte"


async def test_a_context_length_error_moves_to_the_larger_model(
    engine: tuple[EngineCore, RecordingSink], fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    core, _ = engine
    control = next(s for s in (f"s{i}" for i in range(50)) if _arm(core, s) == "control")
    # OpenAI's documented 400 for a prompt over the window.
    fakes[0].add_fault(
        Fault(status=400, error_type="invalid_request_error", code="context_length_exceeded", message="too long")
    )
    ctx = session_ctx(control)
    answer = await core.create_chat_completion(chat(), ctx)
    assert answer.model == "gpt-4o-mini-128k"
    call = CALLS.of(ctx)
    assert call.route == "long>b" and call.attempts == 2


async def test_the_health_snapshot_lists_every_target_once(
    engine: tuple[EngineCore, RecordingSink], fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    core, _ = engine
    control = next(s for s in (f"s{i}" for i in range(50)) if _arm(core, s) == "control")
    await core.create_chat_completion(chat(), session_ctx(control))
    snapshot = {(s.backend, s.model): s for s in core.health_snapshot()}
    # small's own target, its experiment arm, and long's target.
    assert set(snapshot) == {("a", "gpt-4o-mini"), ("b", "gpt-4o-mini"), ("b", "gpt-4o-mini-128k")}
    assert snapshot[("a", "gpt-4o-mini")].window_requests == 1
    assert snapshot[("a", "gpt-4o-mini")].latency_ms > 0
