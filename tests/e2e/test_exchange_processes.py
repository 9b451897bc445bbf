"""A split front door's exchange with a real `tollgate engine` process: SIGKILLed mid-stream (every call on the
exchange ends as an unavailable engine, the next call opens a new exchange on the restarted engine) and SIGTERMed
(calls in flight cut as a shutdown at the grace's end, new calls refused)."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest

from gateway.call import CallContext, new_request_id
from gateway.engine.remote import RemoteEngine
from gateway.errors import GatewayError, ServiceUnavailableError, ShuttingDownError
from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import config_for
from tests.e2e.test_cli import tollgate
from tollgate.gateway.v1 import gateway_pb2 as pb

PARAMS = pb.ChatCompletionParams(model="gpt-4o-mini", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hi")])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def slow_upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key="sk-upstream-secret", chunks=100, chunk_delay=0.05) as fake:
        yield fake


def engine_config(tmp_path: Path, upstream: FakeOpenAI, port: int) -> str:
    path = tmp_path / "engine.yaml"
    path.write_text(config_for(upstream.base_url).replace('grpc: "127.0.0.1:0"', f'grpc: "127.0.0.1:{port}"'))
    return str(path)


async def read_all(door: RemoteEngine, started: asyncio.Event) -> BaseException | None:
    try:
        async with aclosing(door.stream_chat_completion(PARAMS, CallContext(request_id=new_request_id()))) as chunks:
            async for _ in chunks:
                started.set()
    except GatewayError as exc:
        return exc
    return None


async def until_ready(door: RemoteEngine) -> None:
    async with asyncio.timeout(15):
        while not await door.ready():  # noqa: ASYNC110  # the engine process is polled, as a load balancer does
            await asyncio.sleep(0.1)


async def test_an_engine_killed_mid_stream_and_restarted(tmp_path: Path, slow_upstream: FakeOpenAI) -> None:
    port = free_port()
    config = engine_config(tmp_path, slow_upstream, port)
    door = RemoteEngine(f"127.0.0.1:{port}")
    try:
        async with tollgate("engine", "--config", config) as engine:
            await engine.wait_listening("grpc")
            await until_ready(door)
            started = [asyncio.Event(), asyncio.Event()]
            readers = [asyncio.create_task(read_all(door, event)) for event in started]
            await asyncio.gather(*(event.wait() for event in started))
            engine.process.send_signal(signal.SIGKILL)
            results = await asyncio.wait_for(asyncio.gather(*readers), 10)
        for result in results:
            assert isinstance(result, ServiceUnavailableError), result
            assert result.message == "The routing engine is unavailable", "as a dead engine's RPC reads today"
        assert door.exchanges.counts.opened == 1
        async with tollgate("engine", "--config", config) as engine:
            await engine.wait_listening("grpc")
            await until_ready(door)
            answer = await door.create_chat_completion(PARAMS, CallContext(request_id=new_request_id()))
            assert answer.choices[0].message.content
            assert door.exchanges.counts.opened >= 2, "a new exchange on the restarted engine"
    finally:
        await door.close()


async def test_an_engine_stopping_with_calls_on_the_exchange(tmp_path: Path, slow_upstream: FakeOpenAI) -> None:
    port = free_port()
    config = engine_config(tmp_path, slow_upstream, port)  # shutdown_grace 1s, drain_delay 0s
    door = RemoteEngine(f"127.0.0.1:{port}")
    try:
        async with tollgate("engine", "--config", config) as engine:
            await engine.wait_listening("grpc")
            await until_ready(door)
            started = asyncio.Event()
            reader = asyncio.create_task(read_all(door, started))
            await started.wait()  # a 5 s stream: longer than the grace
            engine.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)  # the listeners have closed (no drain delay)
            with pytest.raises(ServiceUnavailableError):
                await door.create_chat_completion(PARAMS, CallContext(request_id=new_request_id()))
            result = await asyncio.wait_for(reader, 5)
            assert isinstance(result, ShuttingDownError), f"cut at the grace's end, in-band: {result!r}"
            assert await asyncio.wait_for(engine.process.wait(), 5) == 0, engine.output()
    finally:
        await door.close()
