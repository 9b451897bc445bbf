"""Active health checks against fake OpenAI servers: a backend whose probe fails takes its targets out of every plan
until it answers again; the engine runs the checks between `start` and `close`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from gateway.call import CallContext
from gateway.config import BackendConfig, TargetConfig, parse_config
from gateway.config.routing import ActiveCheckConfig, HealthConfig
from gateway.engine.core import EngineCore, EngineParts
from gateway.engine.health import HealthBoard
from gateway.engine.probes import ActiveChecker
from gateway.providers.mock import MockProvider
from gateway.providers.openai_compat import OpenAICompatibleProvider
from gateway.providers.registry import build_providers
from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.engine.test_metering import Calls
from tollgate.gateway.v1 import gateway_pb2 as pb

MODELS = "/v1/models"
A = TargetConfig(backend="a", model="m")


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key="sk-up") as server:
        yield server


@pytest.fixture
async def provider(fake: FakeOpenAI) -> AsyncIterator[OpenAICompatibleProvider]:
    adapter = OpenAICompatibleProvider(BackendConfig(name="a", provider="openai", base_url=fake.base_url, api_key=None))
    yield adapter
    await adapter.close()


def checker(provider: object, health: HealthBoard, **config: object) -> ActiveChecker:
    active = ActiveCheckConfig(**{"unhealthy_after": 2, "healthy_after": 1, "timeout": 0.3, **config})  # type: ignore[arg-type]
    return ActiveChecker(active, {"a": provider, "demo": MockProvider(BackendConfig("demo", "mock"))}, health)  # type: ignore[dict-item]


async def test_failed_probes_take_the_backend_out_and_a_good_one_brings_it_back(
    fake: FakeOpenAI, provider: OpenAICompatibleProvider
) -> None:
    health = HealthBoard(HealthConfig(), asyncio.get_running_loop().time)
    checks = checker(provider, health)
    fake.api_key = None
    await checks.check_all()
    assert health.available(A)
    fake.add_fault(Fault(status=503, path=MODELS, times=2))
    await checks.check_all()
    assert health.available(A), "one failed probe is not enough"
    await checks.check_all()
    assert not health.available(A) and not health.snapshot([A])[0].backend_up
    await checks.check_all()
    assert health.available(A)
    assert [r.path for r in fake.requests] == [MODELS] * 4


async def test_a_hanging_probe_and_a_refused_key_both_count_as_failures(
    fake: FakeOpenAI, provider: OpenAICompatibleProvider
) -> None:
    health = HealthBoard(HealthConfig(), asyncio.get_running_loop().time)
    checks = checker(provider, health, unhealthy_after=2)
    fake.add_fault(Fault(hang=5, path=MODELS))
    await checks.check_all()  # times out after 0.3 s
    await checks.check_all()  # 401: the provider has no key, the fake wants one
    assert not health.available(A)


async def test_the_engine_probes_while_it_runs(fake: FakeOpenAI) -> None:
    text = f"""
routing: {{health: {{active: {{interval: 50ms, timeout: 200ms, unhealthy_after: 1}}}}}}
backends:
  - {{name: a, provider: openai, base_url: "{fake.base_url}", api_key: sk-up}}
  - {{name: demo, provider: mock}}
models: [{{name: m, targets: [{{backend: a, model: gpt-4o-mini, priority: 0}}, {{backend: demo, priority: 1}}]}}]
"""
    config = parse_config(text, os.environ)
    calls = Calls()
    engine = EngineCore(config, EngineParts(build_providers(config), observer=calls))
    fake.add_fault(Fault(status=500, path=MODELS, times=1000))
    await engine.start()
    try:
        await asyncio.sleep(0.2)
        params = pb.ChatCompletionParams(model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hi")])
        ctx = CallContext(request_id="r1")
        await engine.create_chat_completion(params, ctx)
        assert calls.of(ctx).backend == "demo", "the probed-down backend is skipped"
        assert not any(r.path.endswith("/chat/completions") for r in fake.requests)
        fake.faults.clear()
        await asyncio.sleep(0.2)
        ctx = CallContext(request_id="r2")
        await engine.create_chat_completion(params, ctx)
        assert calls.of(ctx).backend == "a"
    finally:
        await engine.close()
    probes = sum(r.path == MODELS for r in fake.requests)
    await asyncio.sleep(0.15)
    assert sum(r.path == MODELS for r in fake.requests) == probes, "close stops the probes"
