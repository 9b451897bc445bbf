"""The endpoints beside chat with the real auth and stats servers, in both modes: model access and limits from the
key, and one usage record per request with the upstream's exact usage and its cost (per token, and per image)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from authsvc.keyfile import KeyFile, Limits, save_key_file
from authsvc.server import AuthServer, start_auth_server
from gateway.testing.fake_openai import FakeOpenAI
from statssvc.server import StatsServer, start_stats_server
from tests.conftest import RunningGateway, StartGateway
from tests.e2e.test_auth_stats import _key, eventually
from tests.e2e.test_endpoints_sdk import endpoints_config

PRICES = """prices:
  gpt-3.5-turbo-instruct: {input: 1.5, output: 2.0}
  dall-e-3: {per_image: 0.04}
  gpt-image-1: {input: 5.0, output: 40.0, per_image: 0.01}
  gpt-4o-transcribe: {input: 2.5, output: 10.0}
  BAAI/bge-reranker-base: {input: 0.02, output: 0}
"""


@dataclass
class Servers:
    auth: AuthServer
    stats: StatsServer
    keys: dict[str, str]
    db: Path

    def rows(self) -> dict[str, dict[str, Any]]:
        """The stored usage rows by the client's x-request-id."""
        with sqlite3.connect(self.db) as db:
            db.row_factory = sqlite3.Row
            rows = [dict(row) for row in db.execute("SELECT * FROM usage")]
        return {orjson.loads(row["labels"])["client_request_id"]: row for row in rows}


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    made = {
        "all": _key("erin", models=("*",)),
        "instruct-only": _key("frank", models=("instruct",)),
        "two-a-minute": _key("grace", models=("*",), limits=Limits(requests_per_minute=2)),
    }
    keys_path = tmp_path / "keys.yaml"
    save_key_file(keys_path, KeyFile(tuple(record for _, record in made.values())))
    auth = await start_auth_server(keys_path, "127.0.0.1:0", cache_ttl=60.0)
    stats = await start_stats_server(tmp_path / "usage.db", "127.0.0.1:0")
    yield Servers(auth, stats, {name: raw for name, (raw, _) in made.items()}, tmp_path / "usage.db")
    await stats.stop(0)
    await auth.stop(0)


@pytest.fixture
async def gateway(start_gateway: StartGateway, upstream: FakeOpenAI, servers: Servers) -> RunningGateway:
    extra = f"""auth: {{server: "127.0.0.1:{servers.auth.port}", timeout: 500ms, cache_ttl: 60s}}
stats: {{server: "127.0.0.1:{servers.stats.port}", flush_interval: 20ms, retry_max: 200ms, timeout: 1s,
        spool_dir: "{servers.db.parent / "spool"}"}}
limits: {{}}
{PRICES}"""
    return await start_gateway(endpoints_config(upstream.base_url).replace("auth: none\n", extra))


def client(gateway: RunningGateway, key: str, request_id: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key=key, max_retries=0, default_headers={"x-request-id": request_id}
    )


async def test_one_exact_record_per_request(gateway: RunningGateway, servers: Servers) -> None:
    key = servers.keys["all"]
    mode = gateway.mode
    await client(gateway, key, f"cmpl-{mode}").completions.create(model="instruct", prompt="one two three")
    async for _ in await client(gateway, key, f"cmpl-stream-{mode}").completions.create(
        model="instruct", prompt="one two three", stream=True
    ):
        pass
    await client(gateway, key, f"dalle-{mode}").images.generate(model="dall-e-3", prompt="a fox", n=2)
    await client(gateway, key, f"gpt-image-{mode}").images.generate(model="gpt-image-1", prompt="a red fox")
    await client(gateway, key, f"transcribe-{mode}").audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", b"RIFF0000")
    )
    speech = await client(gateway, key, f"speech-{mode}").audio.speech.create(model="tts-1", input="Hi", voice="nova")
    assert speech.read()
    await client(gateway, key, f"moderation-{mode}").moderations.create(input="hello")
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            gateway.base_url + "/rerank",
            json={"model": "reranker", "query": "a fox", "documents": ["fox", "dog"]},
            headers={"Authorization": f"Bearer {key}", "x-request-id": f"rerank-{mode}"},
        ) as resp,
    ):
        assert resp.status == 200

    names = ("cmpl", "cmpl-stream", "dalle", "gpt-image", "transcribe", "speech", "moderation", "rerank")
    await eventually(lambda: len(servers.rows()) == len(names))
    rows = {name: servers.rows()[f"{name}-{mode}"] for name in names}
    for row in rows.values():
        assert (row["outcome"], row["http_status"], row["usage_estimated"], row["user"]) == (
            "OUTCOME_COMPLETED",
            200,
            0,
            "erin",
        )
        assert row["backend"] == "primary" and row["provider"] == "openai"
    expected = {  # name: (operation, input tokens, output tokens, stream, cost)
        "cmpl": ("completions", 3, 8, 0, (3 * 1.5 + 8 * 2.0) / 1e6),
        "cmpl-stream": ("completions", 3, 8, 1, (3 * 1.5 + 8 * 2.0) / 1e6),
        "dalle": ("images", 0, 0, 0, 2 * 0.04),
        "gpt-image": ("images", 3, 272, 0, (3 * 5.0 + 272 * 40.0) / 1e6 + 0.01),
        "transcribe": ("transcriptions", 100, 5, 0, (100 * 2.5 + 5 * 10.0) / 1e6),  # "Heard 8 bytes of a.wav"
        "speech": ("speech", 0, 0, 1, 0.0),
        "moderation": ("moderations", 0, 0, 0, 0.0),
        "rerank": ("rerank", 6, 0, 0, 6 * 0.02 / 1e6),
    }
    for name, (operation, tokens_in, tokens_out, stream, cost) in expected.items():
        row = rows[name]
        assert (row["operation"], row["input_tokens"], row["output_tokens"], row["stream"]) == (
            operation,
            tokens_in,
            tokens_out,
            stream,
        ), name
        assert row["cost_usd"] == pytest.approx(cost), name
    assert rows["speech"]["ttft_ms"] is not None and rows["cmpl-stream"]["ttft_ms"] is not None


async def test_a_stream_cut_short_is_billed_an_estimate(
    gateway: RunningGateway, servers: Servers, upstream: FakeOpenAI
) -> None:
    upstream.chunks, upstream.chunk_delay = 200, 0.02
    request_id = f"cut-{gateway.mode}"
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            gateway.base_url + "/completions",
            json={"model": "instruct", "prompt": "one two three four", "max_tokens": 200, "stream": True},
            headers={"Authorization": f"Bearer {servers.keys['all']}", "x-request-id": request_id},
        )
        for _ in range(3):
            await resp.content.readline()
        resp.close()  # the client goes away mid-stream
    await eventually(lambda: request_id in servers.rows())
    row = servers.rows()[request_id]
    assert (row["outcome"], row["http_status"], row["usage_estimated"]) == ("OUTCOME_CANCELLED", 499, 1)
    assert row["input_tokens"] == 4 and 0 < row["output_tokens"] < 200
    assert row["cost_usd"] == pytest.approx((4 * 1.5 + row["output_tokens"] * 2.0) / 1e6)


async def test_model_access_and_limits_apply(gateway: RunningGateway, servers: Servers) -> None:
    only = client(gateway, servers.keys["instruct-only"], "denied")
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await only.images.generate(model="dall-e-3", prompt="x")
    assert caught.value.code == "model_not_allowed"
    with pytest.raises(openai.AuthenticationError):
        await client(gateway, "sk-not-a-key", "anon").moderations.create(input="x")
    limited = client(gateway, servers.keys["two-a-minute"], "limited")
    await limited.moderations.create(input="x")
    await limited.completions.create(model="instruct", prompt="x")
    with pytest.raises(openai.RateLimitError):
        await limited.images.generate(model="dall-e-3", prompt="x")
    await asyncio.sleep(0)
