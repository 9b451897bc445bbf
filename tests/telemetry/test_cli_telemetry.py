"""The commands with telemetry: `tollgate engine` serving its own /metrics, `serve` with an OTLP collector that is
not there (requests unharmed, the process still stops), and the access log on stderr."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import orjson

from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import config_for
from tests.e2e.test_cli import complete_and_stream, tollgate
from tests.telemetry.helpers import scrape, value

METRICS_AT = re.compile(r"metrics on (http://127\.0\.0\.1:\d+/metrics)")


async def _metrics_url(process_output: list[str]) -> str:
    async with asyncio.timeout(10):
        while True:
            for line in process_output:
                if match := METRICS_AT.search(line):
                    return match.group(1)
            await asyncio.sleep(0.05)


async def test_engine_serves_its_own_metrics(tmp_path: Path, upstream: FakeOpenAI) -> None:
    config = tmp_path / "tollgate.yaml"
    config.write_text(config_for(upstream.base_url, extra='telemetry: {metrics: {listen: "127.0.0.1:0"}}'))
    async with tollgate("engine", "--config", str(config)) as engine:
        await engine.wait_listening("grpc")
        metrics_url = await _metrics_url(engine.stderr)
        address = f"127.0.0.1:{engine.ports['grpc']}"
        async with tollgate("frontdoor", "--config", str(config), "--engine", address, "--http", "127.0.0.1:0") as door:
            await door.wait_listening("http")
            await complete_and_stream(door.base_url, upstream)
            front = await scrape(f"http://127.0.0.1:{door.ports['http']}/metrics")
            assert value(front, "tollgate_requests_total") == 0  # the engine counts calls; the front door translates
            assert value(front, "tollgate_http_responses_total", route="/v1/chat/completions", status="200") == 2
            assert await door.terminate() == 0
        samples = await scrape(metrics_url)
        assert value(samples, "tollgate_requests_total", model="gpt-4o-mini", status="200") == 2
        assert value(samples, "gen_ai_server_time_to_first_token_seconds_count") == 1
        assert await engine.terminate() == 0
    access = [orjson.loads(line) for line in engine.stderr if '"tollgate.access"' in line]
    assert [(line["model"], line["stream"], line["status"]) for line in access] == [
        ("gpt-4o-mini", False, 200),
        ("gpt-4o-mini", True, 200),
    ]


async def test_an_unreachable_collector_harms_no_request(tmp_path: Path, upstream: FakeOpenAI) -> None:
    config = tmp_path / "tollgate.yaml"
    tracing = "telemetry: {tracing: {otlp_endpoint: 'http://127.0.0.1:1', sample_ratio: 1}}"
    config.write_text(config_for(upstream.base_url, extra=tracing))
    async with tollgate("serve", "--config", str(config)) as gateway:
        await gateway.wait_listening("http")
        await complete_and_stream(gateway.base_url, upstream)
        assert await gateway.terminate() == 0, gateway.output()


async def test_the_front_door_counts_the_connections_it_closes(tmp_path: Path, upstream: FakeOpenAI) -> None:
    config = tmp_path / "tollgate.yaml"
    text = config_for(upstream.base_url).replace("shutdown_grace: 1s", "shutdown_grace: 1s, header_timeout: 200ms")
    config.write_text(text)
    async with tollgate("serve", "--config", str(config)) as gateway:
        await gateway.wait_listening("http")
        port = gateway.ports["http"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # headers that never end
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 408")
        writer.close()
        samples = await scrape(f"http://127.0.0.1:{port}/metrics")
        assert value(samples, "tollgate_http_connections_closed_total", reason="header_timeout") == 1
        assert value(samples, "tollgate_http_connections_closed_total", reason="max_connections") == 0
        assert await gateway.terminate() == 0
