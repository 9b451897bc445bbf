"""`tollgate serve --workers N`: several processes on one port, sharing their limits through a real Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import config_for
from tests.e2e.test_cli import run, tollgate

MESSAGES = [{"role": "user", "content": "hello there"}]


async def _hammer(url: str, count: int, concurrency: int) -> list[int]:
    """`count` requests, `concurrency` at a time, each on a new connection so the kernel spreads them."""
    limit = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:

        async def one() -> int:
            async with limit, session.post(url, json={"model": "demo", "messages": MESSAGES}) as resp:
                await resp.read()
                return resp.status

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def test_three_workers_admit_exactly_the_limit(
    tmp_path: Path, upstream: FakeOpenAI, redis_url: str, redis_namespace: str
) -> None:
    prefix = redis_namespace
    config = tmp_path / "tollgate.yaml"
    config.write_text(
        f"redis: {redis_url}\n"
        + config_for(upstream.base_url)
        + f"""
limits:
  backend: redis
  on_redis_error: closed
  redis_timeout: 2s  # exactness is under test here, not speed: a busy machine must not turn checks into 503s
  redis_prefix: "{prefix}"
  rules: [{{per: model, match: {{model: demo}}, requests: 40, window: 1h}}]
"""
    )
    async with tollgate("serve", "--config", str(config), "--workers", "3") as gateway:
        await gateway.wait_listening("http")
        statuses = await _hammer(f"{gateway.base_url}/chat/completions", 150, 30)
        assert statuses.count(200) == 40
        assert statuses.count(429) == 110
        assert len(set(re_pids(gateway.output()))) == 3
        assert await gateway.terminate() == 0


def re_pids(output: str) -> list[str]:
    """The pids the supervisor says it started."""
    for line in output.splitlines():
        if "started 3 workers: pids" in line:
            return line.rsplit("pids", 1)[1].replace(",", " ").split()
    return []


async def test_workers_refuse_in_memory_limits(tmp_path: Path, upstream: FakeOpenAI) -> None:
    config = tmp_path / "tollgate.yaml"
    config.write_text(config_for(upstream.base_url) + "\nlimits: {rules: [{per: global, requests: 10}]}\n")
    code, _, err = await run("serve", "--config", str(config), "--workers", "2")
    assert code == 2
    assert "multiply every limit" in err
