"""Scrape-time metrics: auth decisions and cache hits with the real auth server, the usage reporter with the real
stats server, the limiter's failover state with a Redis that is not there, and a source of one's own."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from gateway.config import parse_config
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.sources import ScrapeMetric
from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import MODES, config_for
from tests.e2e.test_auth_stats import Stack, eventually, stack
from tests.telemetry.helpers import instrumented, scrape, value

__all__ = ["stack"]  # the fixture, imported for pytest
MESSAGES: Any = [{"role": "user", "content": "Count me."}]


@pytest.mark.parametrize("mode", MODES)
async def test_auth_and_stats_readings(mode: str, upstream: FakeOpenAI, stack: Stack) -> None:
    async with instrumented(mode, stack.config(upstream)) as gw:
        alice = openai.AsyncOpenAI(base_url=gw.base_url, api_key=stack.keys["alice"], max_retries=0)
        for _ in range(3):
            await alice.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        stranger = openai.AsyncOpenAI(base_url=gw.base_url, api_key="sk-not-a-key-at-all", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await stranger.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        await eventually(lambda: len(stack.rows()) == 3)
        samples = await scrape(gw.metrics_url)
        for _ in range(50):  # the server stores a batch a moment before the gateway reads its answer and counts it
            if value(samples, "tollgate_stats_records_total", outcome="delivered") == 3:
                break
            await asyncio.sleep(0.02)
            samples = await scrape(gw.metrics_url)
    assert value(samples, "tollgate_auth_checks_total", result="allow") == 1
    assert value(samples, "tollgate_auth_checks_total", result="deny") == 1
    assert value(samples, "tollgate_auth_checks_total", result="unavailable") == 0
    assert value(samples, "tollgate_auth_cache_hits_total") == 2
    assert value(samples, "tollgate_requests_total", status="401", error_type="invalid_api_key") == 1
    assert value(samples, "tollgate_stats_records_total", outcome="submitted") == 3
    assert value(samples, "tollgate_stats_records_total", outcome="delivered") == 3
    assert value(samples, "tollgate_stats_records_total", outcome="dropped") == 0
    assert value(samples, "tollgate_stats_queue_depth") == 0
    assert ("tollgate_stats_spool_bytes", frozenset()) in samples


async def test_limiter_failover_state(upstream: FakeOpenAI) -> None:
    extra = """redis: redis://127.0.0.1:1/0
limits: {backend: redis, redis_timeout: 200ms, rules: [{per: global, requests: 1000}]}"""
    async with instrumented("one-process", config_for(upstream.base_url, extra=extra)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        for _ in range(4):  # the limiter counts Redis as down after 3 failures in a row, and answers locally
            await client.chat.completions.create(model="demo", messages=MESSAGES)
        samples = await scrape(gw.metrics_url)
    assert value(samples, "tollgate_ratelimit_backend_down") == 1
    assert value(samples, "tollgate_ratelimit_backend_failures_total") >= 3
    assert value(samples, "tollgate_ratelimit_fallback_acquires_total") == 4


def test_a_source_of_ones_own_and_a_broken_one(upstream: FakeOpenAI) -> None:
    metrics = Metrics(parse_config(config_for(upstream.base_url or "http://127.0.0.1:9"), {}), multiproc_dir="")
    states = {"a": 0.0, "b": 2.0}
    metrics.sources.watch(
        ScrapeMetric(
            "tollgate_backend_circuit_open",
            "1 while the backend's circuit is open.",
            "gauge",
            lambda: [((name,), state) for name, state in states.items()],
            ("backend",),
            mode="livemax",
        )
    )

    def broken() -> list[tuple[tuple[str, ...], float]]:
        raise RuntimeError("a source that fails")

    metrics.sources.watch(ScrapeMetric("tollgate_broken", "Fails.", "counter", broken))
    text = metrics.exposition().decode()
    assert 'tollgate_backend_circuit_open{backend="b"} 2.0' in text
    assert "# TYPE tollgate_broken_total counter" in text  # the family is there; the scrape did not fail
