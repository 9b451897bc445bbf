"""Before the first byte, a failing target gives way to the next one, then to the model's fallbacks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.conftest import UPSTREAM_KEY, RunningGateway, StartGateway

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def second() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=UPSTREAM_KEY, chunks=4) as fake:
        yield fake


def two_backend_config(first: str, second: str) -> str:
    return f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
backends:
  - {{name: a, provider: openai, base_url: "{first}", api_key: {UPSTREAM_KEY}, read_timeout: 500ms}}
  - {{name: b, provider: vllm, base_url: "{second}", api_key: {UPSTREAM_KEY}, read_timeout: 500ms}}
models:
  # All the weight on `a`: it is always tried first, so a failure there must move on to `b`.
  - {{name: balanced, targets: [{{backend: a, model: gpt-4o-mini, weight: 1000000}}, {{backend: b, model: qwen}}]}}
  - {{name: primary, targets: [{{backend: a, model: gpt-4o-mini}}], fallback: [backup]}}
  - {{name: backup, targets: [{{backend: b, model: qwen}}]}}
  - {{name: lonely, targets: [{{backend: a, model: gpt-4o-mini}}]}}
"""


@pytest.fixture
async def gateway2(start_gateway: StartGateway, upstream: FakeOpenAI, second: FakeOpenAI) -> RunningGateway:
    return await start_gateway(two_backend_config(upstream.base_url, second.base_url))


def client(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, timeout=10)


@pytest.mark.parametrize(
    "fault",
    [Fault(status=503), Fault(status=500), Fault(status=429, retry_after="1"), Fault(reset=True), Fault(hang=2)],
    ids=["503", "500", "429", "reset", "timeout"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_next_target_answers(
    gateway2: RunningGateway, upstream: FakeOpenAI, second: FakeOpenAI, fault: Fault, stream: bool
) -> None:
    upstream.add_fault(fault)
    api = client(gateway2)
    if stream:
        chunks = [c async for c in await api.chat.completions.create(model="balanced", messages=MESSAGES, stream=True)]  # type: ignore[arg-type]
        model = chunks[0].model
    else:
        model = (await api.chat.completions.create(model="balanced", messages=MESSAGES)).model  # type: ignore[arg-type]
    assert model == "qwen", "the second target answered"
    assert len(upstream.requests) == 1
    assert len(second.requests) == 1


async def test_fallback_model(gateway2: RunningGateway, upstream: FakeOpenAI, second: FakeOpenAI) -> None:
    upstream.add_fault(Fault(status=502))
    completion = await client(gateway2).chat.completions.create(model="primary", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.model == "qwen"
    assert second.requests[-1].json["model"] == "qwen"


async def test_client_errors_do_not_fail_over(
    gateway2: RunningGateway, upstream: FakeOpenAI, second: FakeOpenAI
) -> None:
    upstream.add_fault(Fault(status=400, error_type="invalid_request_error", message="bad tool schema"))
    with pytest.raises(openai.BadRequestError):
        await client(gateway2).chat.completions.create(model="balanced", messages=MESSAGES)  # type: ignore[arg-type]
    assert second.requests == [], "a request the provider rejects would be rejected anywhere"


async def test_every_target_failing(gateway2: RunningGateway, upstream: FakeOpenAI, second: FakeOpenAI) -> None:
    upstream.add_fault(Fault(status=503))
    second.add_fault(Fault(status=503, retry_after="5"))
    with pytest.raises(openai.InternalServerError) as info:
        await client(gateway2).chat.completions.create(model="primary", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.status_code == 503
    assert "All 2 attempts for model 'primary' failed" in info.value.message
    assert info.value.response.headers["retry-after"] == "5"


async def test_single_target_error_is_passed_through(gateway2: RunningGateway, upstream: FakeOpenAI) -> None:
    upstream.add_fault(Fault(status=429, retry_after="2"))
    with pytest.raises(openai.RateLimitError) as info:
        await client(gateway2).chat.completions.create(model="lonely", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.response.headers["retry-after"] == "2"
