"""tollgate started in-process with telemetry, in one process or split over gRPC, and a real Prometheus parser."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.assemble import assemble
from gateway.config import GatewayConfig, parse_config
from gateway.engine.core import EngineCore
from gateway.engine.remote import RemoteEngine
from gateway.engine.server import start_engine_server
from gateway.frontdoor.app import create_app, start_http_server
from gateway.telemetry.http import metrics_app
from gateway.telemetry.observer import Telemetry
from gateway.telemetry.tracing import Tracing


@dataclass
class Instrumented:
    """A running gateway: where to send requests, and where its engine's metrics are scraped."""

    http_url: str
    metrics_url: str  # the front door's /metrics in one process; the engine's own listener when split
    grpc_address: str
    engine: EngineCore
    config: GatewayConfig

    @property
    def base_url(self) -> str:
        return f"{self.http_url}/v1"


@contextlib.asynccontextmanager
async def instrumented(
    mode: str, text: str, *, engine_tracing: Tracing | None = None, front_tracing: Tracing | None = None
) -> AsyncIterator[Instrumented]:
    """Start tollgate from config text with its telemetry; `*_tracing` replace the configured exporters."""
    config = parse_config(text, os.environ)
    # As the composition root builds it, with the test's tracer in place of an OTLP exporter.
    assembly = assemble(config, engine_tracing)
    engine, telemetry = assembly.engine, assembly.telemetry
    await engine.start()
    grpc_server = await start_engine_server(engine, "127.0.0.1:0")
    grpc_address = f"127.0.0.1:{grpc_server.port}"
    metrics_server = None
    remote = None
    try:
        if mode == "split":
            assert telemetry.metrics is not None
            metrics_server = await start_http_server(metrics_app(telemetry.metrics), "127.0.0.1:0")
            remote = RemoteEngine.for_config(grpc_address, config)
            front_telemetry = Telemetry.from_config(config, front_tracing)
            http = await start_http_server(
                create_app(remote, config.server, front_telemetry), "127.0.0.1:0", config.server
            )
            metrics_url = f"http://127.0.0.1:{metrics_server.port}/metrics"
        else:
            http = await start_http_server(create_app(engine, config.server, telemetry), "127.0.0.1:0", config.server)
            metrics_url = f"http://127.0.0.1:{http.port}/metrics"
        try:
            yield Instrumented(f"http://127.0.0.1:{http.port}", metrics_url, grpc_address, engine, config)
        finally:
            await http.stop()
    finally:
        if remote is not None:
            await remote.close()
        if metrics_server is not None:
            await metrics_server.stop()
        await grpc_server.stop(0)
        await engine.close()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    """Every sample of a /metrics page, parsed by prometheus_client's own parser, keyed by name and labels."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)
