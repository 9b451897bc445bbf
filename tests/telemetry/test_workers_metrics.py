"""`serve --workers 2`: a scrape lands on one worker but shows every worker's requests (multiprocess mode)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp

from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import config_for
from tests.e2e.test_cli import tollgate
from tests.e2e.test_workers import re_pids
from tests.telemetry.helpers import scrape, value

MESSAGES = [{"role": "user", "content": "spread me"}]


async def _requests(url: str, count: int) -> list[int]:
    """`count` requests, each on a new connection so the kernel spreads them over the workers."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:

        async def one() -> int:
            async with session.post(url, json={"model": "demo", "messages": MESSAGES}) as resp:
                await resp.read()
                return resp.status

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def test_a_scrape_of_any_worker_sums_all_workers(tmp_path: Path, upstream: FakeOpenAI) -> None:
    config = tmp_path / "tollgate.yaml"
    config.write_text(config_for(upstream.base_url))
    async with tollgate("serve", "--config", str(config), "--workers", "2") as gateway:
        await gateway.wait_listening("http")
        statuses = await _requests(f"{gateway.base_url}/chat/completions", 40)
        assert statuses == [200] * 40
        metrics_url = f"http://127.0.0.1:{gateway.ports['http']}/metrics"
        for _ in range(6):  # scrapes on new connections land on either worker; every one sees both
            samples = await scrape(metrics_url)
            assert value(samples, "tollgate_requests_total", model="demo", status="200") == 40
            assert value(samples, "gen_ai_server_request_duration_seconds_count", gen_ai_request_model="demo") == 40
            assert value(samples, "tollgate_upstream_attempts_total", backend="demo") == 40
        output = gateway.output()
        assert len(set(re_pids(output.replace("started 2 workers", "started 3 workers")))) == 2
        shared = re.search(r"workers share their metrics through (/[^\s\"]+)", output)
        assert shared is not None, output
        directory = Path(shared.group(1))
        written = await asyncio.to_thread(lambda: list(directory.glob("counter_*.db")))
        assert written, "the workers write their values to the shared directory"
        assert await gateway.terminate() == 0
    assert not await asyncio.to_thread(directory.exists), "the supervisor removes the directory when it stops"
