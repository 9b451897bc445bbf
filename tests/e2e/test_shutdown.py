"""SIGTERM as a load balancer sees it, with the real `tollgate` command: readiness and gRPC health say NOT_SERVING at
once, the HTTP listener keeps accepting (answers carry `Connection: close`) for `server.drain_delay` and then closes,
and an idle process exits as soon as that is done. Streams cut at the grace are in `test_chaos.py`."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.conftest import UPSTREAM_KEY
from tests.e2e.test_cli import tollgate

CONFIG = """
listen: {http: "127.0.0.1:0", grpc: "127.0.0.1:0"}
auth: none
server: {shutdown_grace: 3s, drain_delay: 1s}
backends: [{name: demo, provider: mock, options: {chunks: 2}}]
models: [{name: demo, targets: [{backend: demo, model: tollgate-demo}]}]
"""
BODY = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


async def health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    return int(response.status)


@pytest.mark.parametrize("command", ["serve", "engine"])
async def test_sigterm_drains_then_closes(tmp_path: Path, command: str) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(CONFIG)
    async with tollgate(command, "--config", str(path)) as gateway:
        kinds = ("http", "grpc") if command == "serve" else ("grpc",)
        await gateway.wait_listening(*kinds)
        grpc_port = gateway.ports["grpc"]
        assert await health(grpc_port) == health_pb2.HealthCheckResponse.SERVING
        gateway.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.sleep(0.2)  # the signal's way to the process
        assert await health(grpc_port) == health_pb2.HealthCheckResponse.NOT_SERVING
        if command == "serve":
            base = f"http://127.0.0.1:{gateway.ports['http']}"
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/readyz") as ready:
                    assert ready.status == 503
                    assert ready.headers["Retry-After"] == "1"
                    assert (await ready.json())["status"] == "draining"
                # Still accepting within drain_delay, each answer telling the client to go elsewhere next time.
                async with session.post(f"{base}/v1/chat/completions", json=BODY) as answer:
                    assert answer.status == 200
                    assert answer.headers["Connection"] == "close"
            await asyncio.sleep(max(0.0, signalled + 1.3 - time.monotonic()))
            with pytest.raises(OSError):  # past drain_delay: the listener is closed
                await asyncio.open_connection("127.0.0.1", gateway.ports["http"])
        code = await asyncio.wait_for(gateway.process.wait(), 5)
        took = time.monotonic() - signalled
        assert code == 0, gateway.output()
        assert 1.0 <= took < 2.0  # the drain delay, then nothing in flight: no waiting for the grace
        assert "drained: every request finished within the grace" in gateway.output()


# Starting embeds the semantic route's examples (`EngineCore.start`), after the event loop runs, before listening.
STARTING = """
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: none
server: {{shutdown_grace: 3s, drain_delay: 100ms}}
backends: [{{name: up, provider: openai, base_url: "{base_url}", api_key: {key}}}]
routes:
  - name: by-topic
    match: {{model: auto}}
    semantic:
      embedding_model: embed
      choices: [{{to: demo, examples: ["say hello"]}}]
      default: demo
models:
  - {{name: demo, targets: [{{backend: up, model: gpt-4o-mini}}]}}
  - {{name: embed, targets: [{{backend: up, model: text-embedding-3-small}}]}}
"""


@pytest.mark.parametrize("command", ["serve", "engine"])
async def test_a_sigterm_while_starting_stops_it_cleanly_once_it_is_up(tmp_path: Path, command: str) -> None:
    path = tmp_path / "tollgate.yaml"
    async with FakeOpenAI(api_key=UPSTREAM_KEY) as upstream:
        upstream.word_embeddings = True
        # The examples' embeddings are answered a second late: the signal below comes while the process starts. The
        # fake answers in this test's event loop, so the poll that sees the request signals before the answer goes.
        upstream.add_fault(Fault(hang=1.0, path="/v1/embeddings"))
        path.write_text(STARTING.format(base_url=upstream.base_url, key=UPSTREAM_KEY))
        async with tollgate(command, "--config", str(path)) as gateway:
            async with asyncio.timeout(30):
                while not any(r.path == "/v1/embeddings" for r in upstream.requests):  # noqa: ASYNC110  # the fake records; nothing to wait on
                    await asyncio.sleep(0.005)
            gateway.process.send_signal(signal.SIGTERM)
            await gateway.wait_listening(*(("http", "grpc") if command == "serve" else ("grpc",)))
            code = await asyncio.wait_for(gateway.process.wait(), 10)
            assert code == 0, gateway.output()
            assert "shutting down (SIGTERM)" in gateway.output()
