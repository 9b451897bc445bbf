"""Shared fixtures: fake providers, and tollgate started for real on loopback, in one process or split over gRPC."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from gateway.assemble import assemble
from gateway.config import GatewayConfig, parse_config
from gateway.engine.core import EngineCore
from gateway.engine.remote import RemoteEngine
from gateway.engine.server import start_engine_server
from gateway.frontdoor.app import create_app, start_http_server
from gateway.testing.fake_openai import FakeOpenAI

# `redis_url` (and a per-test namespace) for every test that needs a real Redis.
pytest_plugins = ["tests.redis_support", "tests.redis_cluster_support"]

UPSTREAM_KEY = "sk-upstream-secret"
MODES = ["one-process", "split"]


@dataclass
class RunningGateway:
    """A tollgate started by a test."""

    mode: str
    http_url: str  # http://127.0.0.1:PORT
    grpc_address: str  # 127.0.0.1:PORT, the engine's gRPC
    config: GatewayConfig

    @property
    def base_url(self) -> str:
        """What an OpenAI SDK client takes as base_url."""
        return f"{self.http_url}/v1"


StartGateway = Callable[[str], Awaitable[RunningGateway]]


def config_for(upstream_url: str, *, read_timeout: str = "5s", extra: str = "") -> str:
    """A config with one fake OpenAI upstream (`primary`) and the built-in mock (`demo`)."""
    return f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: none
server: {{max_body: 64KiB, shutdown_grace: 1s, drain_delay: 0s}}
backends:
  - {{name: primary, provider: openai, base_url: "{upstream_url}", api_key: {UPSTREAM_KEY},
      read_timeout: {read_timeout}, connect_timeout: 1s}}
  - {{name: demo, provider: mock, options: {{chunks: 5}}}}
{extra}
models:
  - {{name: gpt-4o-mini, targets: [{{backend: primary, model: gpt-4o-mini}}]}}
  - {{name: text-embedding-3-small, targets: [{{backend: primary}}]}}
  - {{name: demo, targets: [{{backend: demo, model: tollgate-demo}}]}}
"""


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    """A fake OpenAI server that requires the gateway's upstream key."""
    async with FakeOpenAI(api_key=UPSTREAM_KEY, chunks=8) as fake:
        yield fake


@pytest.fixture(params=MODES)
async def start_gateway(request: pytest.FixtureRequest) -> AsyncIterator[StartGateway]:
    """Start tollgate from config text, in the mode of the parameter; everything stops at teardown."""
    mode: str = request.param
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start(text: str) -> RunningGateway:
        config = parse_config(text, os.environ)
        assembly = assemble(config)
        engine = assembly.engine
        await assembly.start()
        cleanups.append(assembly.close)
        grpc_server = await start_engine_server(engine, config.listen.grpc)
        cleanups.append(lambda: grpc_server.stop(0))
        grpc_address = f"127.0.0.1:{grpc_server.port}"
        front_engine: EngineCore | RemoteEngine = engine
        if mode == "split":
            remote = RemoteEngine.for_config(grpc_address, config)
            cleanups.append(remote.close)
            front_engine = remote
        http = await start_http_server(create_app(front_engine, config.server), config.listen.http, config.server)
        cleanups.append(http.stop)
        return RunningGateway(mode, f"http://127.0.0.1:{http.port}", grpc_address, config)

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


@pytest.fixture
async def gateway(start_gateway: StartGateway, upstream: FakeOpenAI) -> RunningGateway:
    """tollgate in front of the fake OpenAI upstream."""
    return await start_gateway(config_for(upstream.base_url))
