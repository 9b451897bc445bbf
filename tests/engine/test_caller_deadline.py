"""A gRPC caller's own deadline bounds the engine's attempts, but its expiry is the caller's, not the target's: the
target is not blamed (unlike the failover's own attempt timeout), the caller gets DEADLINE_EXCEEDED, and the usage
record says `deadline_exceeded` rather than a client cancel."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from gateway.call import CallContext, new_request_id
from gateway.config import parse_config
from gateway.engine.core import EngineCore, EngineParts
from gateway.engine.server import start_engine_server
from gateway.errors import DeadlineExceededError
from gateway.providers.registry import build_providers
from gateway.testing.fake_openai import FakeOpenAI
from tests.usage_sink import RecordingSink
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc
from tollgate.stats.v1 import stats_pb2

PARAMS = pb.ChatCompletionParams(model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hi")])


def engine_for(slow: str, fast: str, retry: str = "{}") -> tuple[EngineCore, RecordingSink]:
    config = parse_config(
        f"""
routing: {{health: {{consecutive_failures: 1}}, retry: {retry}}}
backends:
  - {{name: slow, provider: openai, base_url: "{slow}"}}
  - {{name: fast, provider: openai, base_url: "{fast}"}}
models:
  - {{name: m, targets: [{{backend: slow, priority: 0}}, {{backend: fast, priority: 1}}]}}
""",
        os.environ,
    )
    sink = RecordingSink()
    return EngineCore(config, EngineParts(build_providers(config), usage=sink)), sink


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[FakeOpenAI, FakeOpenAI]]:
    async with FakeOpenAI(latency=2.0) as slow, FakeOpenAI() as fast:
        yield slow, fast


def slow_state(engine: EngineCore) -> tuple[str, int]:
    (target,) = [t for t in engine.health_snapshot() if t.backend == "slow"]
    return target.state, target.ejections_total  # one failure ejects (consecutive_failures: 1)


async def test_the_callers_deadline_is_not_the_targets_failure(upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    slow, fast = upstreams
    engine, sink = engine_for(slow.base_url, fast.base_url)
    try:
        began = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            await engine.create_chat_completion(PARAMS, CallContext(request_id=new_request_id(), deadline=0.3))
        assert time.monotonic() - began < 1.5, "stopped at the caller's deadline, not the upstream's latency"
        assert slow_state(engine) == ("closed", 0), "the slow target is not blamed for the caller's deadline"
        assert fast.requests == [], "no attempt starts once the caller's deadline is gone"
        (record,) = sink.records
        assert (record.error_type, record.http_status, record.outcome) == (
            "deadline_exceeded",
            504,
            stats_pb2.OUTCOME_FAILED,
        )
        assert record.grpc_status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    finally:
        await engine.close()


async def test_the_failovers_own_timeout_still_blames_the_target(upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    slow, fast = upstreams
    engine, _ = engine_for(slow.base_url, fast.base_url, retry="{attempt_timeout: 300ms}")
    try:
        answer = await engine.create_chat_completion(PARAMS, CallContext(request_id=new_request_id(), deadline=5.0))
        assert answer.choices, "the fast target answered after the slow one timed out"
        assert slow_state(engine) == ("open", 1), "the failover's own timeout is the target's failure"
    finally:
        await engine.close()


async def test_a_grpc_caller_with_a_short_deadline(upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    slow, fast = upstreams
    engine, sink = engine_for(slow.base_url, fast.base_url)
    server = await start_engine_server(engine, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = pb_grpc.GatewayServiceStub(channel)
        for call in (
            stub.CreateChatCompletion(pb.CreateChatCompletionRequest(params=PARAMS), timeout=0.3),
            stub.StreamChatCompletion(pb.StreamChatCompletionRequest(params=PARAMS), timeout=0.3),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                if isinstance(call, grpc.aio.UnaryStreamCall):
                    async for _ in call:
                        pass
                else:
                    await call
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        async with asyncio.timeout(5):
            while len(sink.records) < 2:  # noqa: ASYNC110  # records land as the engine's calls end
                await asyncio.sleep(0.01)
        assert [r.error_type for r in sink.records] == ["deadline_exceeded", "deadline_exceeded"]
        assert slow_state(engine) == ("closed", 0)
    finally:
        await channel.close(None)
        await server.stop(0)
        await engine.close()
