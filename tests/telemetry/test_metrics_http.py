"""`GET /metrics` after known traffic, parsed with prometheus_client's own text parser, in one process and split."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.conftest import MODES, config_for
from tests.telemetry.helpers import instrumented, scrape, value

MESSAGES: Any = [{"role": "user", "content": "Say hello to the metrics."}]
PRICES = "prices: {gpt-4o-mini: {input: 0.15, output: 0.6}}"
# A model whose first target fails over to the built-in mock.
RESILIENT = "  - {name: resilient, targets: [{backend: primary, model: gpt-4o-mini}], fallback: [demo]}\n"


def _config(upstream: FakeOpenAI, extra: str = PRICES) -> str:
    return config_for(upstream.base_url, extra=extra).replace("models:\n", "models:\n" + RESILIENT)


@pytest.mark.parametrize("mode", MODES)
async def test_metrics_after_known_traffic(mode: str, upstream: FakeOpenAI) -> None:
    async with instrumented(mode, _config(upstream)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        prompt = completion = 0
        for _ in range(3):
            answer = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert answer.usage is not None
            prompt, completion = prompt + answer.usage.prompt_tokens, completion + answer.usage.completion_tokens
        for _ in range(2):
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            async for chunk in stream:
                if chunk.usage is not None:
                    prompt, completion = prompt + chunk.usage.prompt_tokens, completion + chunk.usage.completion_tokens
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="no-such-model", messages=MESSAGES)
        upstream.add_fault(Fault(status=500))
        assert (await client.chat.completions.create(model="resilient", messages=MESSAGES)).choices
        await client.embeddings.create(model="text-embedding-3-small", input="hello")
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{gw.base_url}/chat/completions", data=b"{not json") as response:
                assert response.status == 400
            async with session.get(f"{gw.http_url}/no/such/path") as response:
                assert response.status == 404

        samples = await scrape(gw.metrics_url)
        front = await scrape(f"{gw.http_url}/metrics")

    model = {"gen_ai_request_model": "gpt-4o-mini"}
    assert value(samples, "tollgate_requests_total", model="gpt-4o-mini", status="200", error_type="") == 5
    assert value(samples, "tollgate_requests_total", model="no-such-model", status="404") == 1
    assert value(samples, "tollgate_requests_total", error_type="model_not_found") == 1
    assert value(samples, "tollgate_requests_total", model="resilient", backend="demo", status="200") == 1
    assert value(samples, "tollgate_requests_total", operation="embeddings") == 1
    assert value(samples, "gen_ai_server_request_duration_seconds_count", **model) == 5
    assert value(samples, "gen_ai_server_request_duration_seconds_sum", **model) > 0
    assert value(samples, "gen_ai_server_time_to_first_token_seconds_count", **model) == 2
    assert value(samples, "gen_ai_server_time_per_output_token_seconds_count", **model) == 2
    tokens = "gen_ai_client_token_usage_sum"
    assert value(samples, tokens, gen_ai_token_type="input", gen_ai_provider_name="openai", **model) == prompt
    assert value(samples, tokens, gen_ai_token_type="output", **model) == completion
    assert value(samples, "gen_ai_client_token_usage_count", gen_ai_token_type="input", **model) == 5
    cost = (prompt * 0.15 + completion * 0.6) / 1e6
    assert value(samples, "tollgate_cost_usd_total", **model) == pytest.approx(cost)
    # 5 chats, the failed first attempt of `resilient` and the embeddings went to `primary`; the fallback to `demo`.
    assert value(samples, "tollgate_upstream_attempts_total", backend="primary", provider="openai") == 7
    assert value(samples, "tollgate_upstream_failures_total", backend="primary", error_type="upstream_error") == 1
    assert value(samples, "tollgate_upstream_attempts_total", backend="demo", provider="mock") == 1
    assert value(samples, "tollgate_upstream_failures_total", backend="demo") == 0
    assert value(samples, "tollgate_gateway_overhead_seconds_count") == 8
    assert value(samples, "tollgate_gateway_overhead_seconds_count", stream="true") == 2
    # The front door's own view counts what it answered without the engine too (its /metrics, in either mode).
    responses = "tollgate_http_responses_total"
    assert value(front, responses, route="/v1/chat/completions", status="200") == 6
    assert value(front, responses, route="/v1/chat/completions", status="404") == 1
    assert value(front, responses, route="/v1/chat/completions", status="400") == 1
    assert value(front, responses, route="/v1/embeddings", status="200") == 1
    assert value(front, responses, route="/{tail}", status="404") == 1
    assert value(samples, "tollgate_requests_total", status="400") == 0  # never reached the engine


@pytest.mark.parametrize("mode", MODES)
async def test_rate_limit_rejections_are_counted(mode: str, upstream: FakeOpenAI) -> None:
    rules = "limits: {rules: [{per: model, match: {model: demo}, requests: 2, window: 1h}]}"
    async with instrumented(mode, _config(upstream, rules)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        for _ in range(2):
            await client.chat.completions.create(model="demo", messages=MESSAGES)
        for _ in range(3):
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(model="demo", messages=MESSAGES)
        samples = await scrape(gw.metrics_url)
    assert value(samples, "tollgate_ratelimit_rejections_total", model="demo") == 3
    assert value(samples, "tollgate_requests_total", model="demo", status="429", error_type="rate_limit_exceeded") == 3
    assert value(samples, "tollgate_upstream_attempts_total", backend="demo") == 2


async def test_metrics_off_means_no_route(upstream: FakeOpenAI) -> None:
    text = _config(upstream, "telemetry: {metrics: {enabled: false}}")
    async with (
        instrumented("one-process", text) as gw,
        aiohttp.ClientSession() as session,
        session.get(gw.metrics_url) as response,
    ):
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "unknown_url"
