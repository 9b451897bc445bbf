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
