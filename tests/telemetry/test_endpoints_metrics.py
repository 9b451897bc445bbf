"""Metrics of the endpoints beside chat: each counted under its own operation, with its tokens and cost, in one
process and split (the engine counts; the front door only translates)."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import MODES
from tests.e2e.test_endpoints_sdk import endpoints_config
from tests.telemetry.helpers import instrumented, scrape, value

PRICES = "prices: {dall-e-3: {per_image: 0.04}}\n"


@pytest.mark.parametrize("mode", MODES)
async def test_each_endpoint_is_counted_under_its_operation(mode: str, upstream: FakeOpenAI) -> None:
    async with instrumented(mode, endpoints_config(upstream.base_url, PRICES)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        await client.completions.create(model="instruct", prompt="hello there")
        async for _ in await client.completions.create(model="instruct", prompt="hello", stream=True):
            pass
        await client.images.generate(model="dall-e-3", prompt="a fox", n=2)
        await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF"))
        (await client.audio.speech.create(model="tts-1", input="hi", voice="nova")).read()
        await client.moderations.create(input="hello")
        with pytest.raises(openai.BadRequestError):
            await client.completions.create(model="demo-instruct", prompt="x")
        async with aiohttp.ClientSession() as session:
            body = {"model": "reranker", "query": "q", "documents": ["q"]}
            async with session.post(f"{gw.base_url}/rerank", json=body) as response:
                assert response.status == 200
        samples = await scrape(gw.metrics_url)

    counted = {
        operation: value(samples, "tollgate_requests_total", operation=operation, status="200")
        for operation in ("completions", "images", "transcriptions", "speech", "moderations", "rerank")
    }
    assert counted == {
        "completions": 2,
        "images": 1,
        "transcriptions": 1,
        "speech": 1,
        "moderations": 1,
        "rerank": 1,
    }
    assert value(samples, "tollgate_requests_total", operation="completions", model="demo-instruct", status="400") == 1
    assert value(samples, "tollgate_cost_usd_total", gen_ai_request_model="dall-e-3") == pytest.approx(0.08)
