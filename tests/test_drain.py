"""`Drain`: tracking requests, waiting for them, cutting the rest; and what a cut looks like to the client and in
the usage record when it lands before the answer began (a 503 with Retry-After) or in a stream (in-band)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.config import parse_config
from gateway.drain import Drain, as_shutdown, cut_by_shutdown
from gateway.engine.core import EngineCore, EngineParts
from gateway.errors import ShuttingDownError
from gateway.frontdoor.app import create_app, start_http_server
from gateway.providers.registry import build_providers
from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import UPSTREAM_KEY, config_for
from tests.usage_sink import RecordingSink
from tollgate.stats.v1 import stats_pb2

MESSAGES = [{"role": "user", "content": "hi"}]


async def test_track_wait_and_cut() -> None:
    drain = Drain()
    seen: list[BaseException] = []

    async def request(seconds: float) -> None:
        with drain.track():
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError as exc:
                seen.append(as_shutdown(exc) or exc)
                raise

    quick, slow = asyncio.create_task(request(0.01)), asyncio.create_task(request(10))
    await asyncio.sleep(0)
    assert drain.in_flight == 2
    loop = asyncio.get_running_loop()
    assert not await drain.wait_idle(loop.time() + 0.1)  # the slow one is still running
    assert quick.done()
    assert drain.cut() == 1
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert await drain.wait_idle(loop.time() + 0.1)
    assert isinstance(seen[0], ShuttingDownError)


async def test_a_client_cancel_is_not_a_shutdown() -> None:
    drain = Drain()
    caught: list[bool] = []

    async def request() -> None:
        with drain.track():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError as exc:
                caught.append(cut_by_shutdown(exc))
                raise

    task = asyncio.create_task(request())
    await asyncio.sleep(0)
    task.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await task
    assert caught == [False]


@pytest.fixture
async def slow_upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=UPSTREAM_KEY, chunks=20, chunk_delay=0.3, latency=0.0) as fake:
        yield fake


async def test_cut_before_and_after_the_first_byte(slow_upstream: FakeOpenAI) -> None:
    config = parse_config(config_for(slow_upstream.base_url), os.environ)
    sink = RecordingSink()
    engine = EngineCore(config, EngineParts(build_providers(config), usage=sink))
    drain = Drain()
    http = await start_http_server(create_app(engine, config.server), "127.0.0.1:0", config.server, drain=drain)
    base = f"http://127.0.0.1:{http.port}/v1"
    slow_upstream.latency = 5.0  # whole answers wait upstream: cut before their first byte
    try:
        async with aiohttp.ClientSession() as session:

            async def whole() -> tuple[int, str, dict[str, object]]:
                async with session.post(
                    f"{base}/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}
                ) as r:
                    return r.status, r.headers.get("Retry-After", ""), await r.json()

            async def stream() -> list[bytes]:
                body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
                async with session.post(f"{base}/chat/completions", json=body) as r:
                    return [line for line in (await r.read()).split(b"\n\n") if line]

            answer = asyncio.create_task(whole())
            await asyncio.sleep(0.3)
            slow_upstream.latency = 0.0
            events = asyncio.create_task(stream())
            await asyncio.sleep(0.5)  # a chunk or two in
            assert drain.in_flight == 2
            assert drain.cut() == 2
            status, retry_after, body = await answer
            sse = await events
    finally:
        await http.close()
        await engine.close()
    assert (status, retry_after) == (503, "1")
    assert body["error"]["code"] == "shutting_down"  # type: ignore[index]
    assert b'"shutting_down"' in sse[-2] and sse[-1] == b"data: [DONE]"
    by_status = sorted((r.http_status, r.error_type, r.outcome) for r in sink.records)
    assert by_status == [
        (200, "shutting_down", stats_pb2.OUTCOME_FAILED),
        (503, "shutting_down", stats_pb2.OUTCOME_FAILED),
    ]
