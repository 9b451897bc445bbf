"""Responses API calls in the metrics, as the `responses` operation, on both paths, in one process and split."""

from __future__ import annotations

import openai
import pytest

from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import MODES, config_for
from tests.telemetry.helpers import instrumented, scrape, value


@pytest.mark.parametrize("mode", MODES)
async def test_responses_calls_are_counted(mode: str, upstream: FakeOpenAI) -> None:
    async with instrumented(mode, config_for(upstream.base_url)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        await client.responses.create(model="gpt-4o-mini", input="hi")  # the Responses API upstream
        async for _ in await client.responses.create(model="demo", input="hi", stream=True):  # the chat flow
            pass
        samples = await scrape(gw.metrics_url)
    for model, backend in (("gpt-4o-mini", "primary"), ("demo", "demo")):
        counted = value(samples, "tollgate_requests_total", operation="responses", model=model, status="200")
        assert counted == 1, model
        assert value(samples, "tollgate_requests_total", operation="responses", backend=backend) == 1
    assert value(samples, "tollgate_requests_total", operation="chat") == 0
