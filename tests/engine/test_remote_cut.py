"""A split front door cutting its calls at its shutdown deadline has its engine cut them first (`CutCalls`), so the
usage records say shutdown rather than client cancel; only that front door's calls are cut, and a call it simply
abandons is still a cancel. A real engine gRPC server with a `Drain`, a real fake upstream."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from gateway.call import CallContext, new_request_id
from gateway.config import parse_config
from gateway.drain import Drain
from gateway.engine.core import EngineCore, EngineParts
from gateway.engine.remote import RemoteEngine
from gateway.engine.server import start_engine_server
from gateway.errors import GatewayError, ShuttingDownError
from gateway.providers.registry import build_providers
from gateway.testing.fake_openai import FakeOpenAI
from tests.polling import until
from tests.usage_sink import RecordingSink
from tollgate.gateway.v1 import endpoints_pb2 as ep
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.stats.v1 import stats_pb2

PARAMS = pb.ChatCompletionParams(model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hi")])


@dataclass
class Split:
    doors: tuple[RemoteEngine, RemoteEngine]  # two front doors on one engine
    drain: Drain  # the engine's
    sink: RecordingSink
    upstream: FakeOpenAI


@pytest.fixture
async def split() -> AsyncIterator[Split]:
    async with FakeOpenAI(chunks=50, chunk_delay=0.05) as upstream:
        config = parse_config(
            f'backends: [{{name: up, provider: openai, base_url: "{upstream.base_url}"}}]\n'
            "models: [{name: m, targets: [{backend: up}]}]\n",
            os.environ,
        )
        sink = RecordingSink()
        engine = EngineCore(config, EngineParts(build_providers(config), usage=sink))
        drain = Drain()
        server = await start_engine_server(engine, "127.0.0.1:0", drain=drain)
        doors = (RemoteEngine(f"127.0.0.1:{server.port}"), RemoteEngine(f"127.0.0.1:{server.port}"))
        try:
            yield Split(doors, drain, sink, upstream)
        finally:
            for door in doors:
                await door.close()
            await server.stop(0)
            await engine.close()


async def read(door: RemoteEngine, started: asyncio.Event) -> GatewayError | None:
    try:
        async for _ in door.stream_chat_completion(PARAMS, CallContext(request_id=new_request_id())):
            started.set()
    except GatewayError as exc:
        return exc
    return None


async def test_the_engine_cuts_a_front_doors_calls_as_a_shutdown(split: Split) -> None:
    mine, other = split.doors
    started = [asyncio.Event(), asyncio.Event(), asyncio.Event()]
    readers = [
        asyncio.create_task(read(mine, started[0])),
        asyncio.create_task(read(mine, started[1])),
        asyncio.create_task(read(other, started[2])),
    ]
    await asyncio.gather(*(e.wait() for e in started))
    assert await mine.cut_calls() == 2, "the two calls of this front door, not the other's"
    results = await asyncio.gather(*readers[:2])
    assert all(isinstance(r, ShuttingDownError) for r in results), "the client's in-band error comes from the engine"
    await until(lambda: len(split.sink.records) == 2)
    assert {(r.error_type, r.http_status) for r in split.sink.records} == {("shutting_down", 200)}
    assert not readers[2].done(), "the other front door's call goes on"
    readers[2].cancel()
    await until(lambda: len(split.sink.records) == 3)
    assert split.sink.records[-1].outcome == stats_pb2.OUTCOME_CANCELLED, "a call abandoned is still a cancel"
    assert await mine.cut_calls() == 0, "nothing left in flight"


async def test_a_unary_call_of_any_endpoint_is_cut_as_a_shutdown_too(split: Split) -> None:
    # Every call a front door makes is named, not only chat's: a legacy completion waiting on its upstream here.
    split.upstream.latency = 5.0
    mine = split.doors[0]
    params = ep.CompletionParams(model="m", prompt=["hi"], single_prompt=True)
    call = asyncio.create_task(mine.create_completion(params, CallContext(request_id=new_request_id())))
    await until(lambda: split.drain.in_flight == 1)
    assert await mine.cut_calls() == 1
    with pytest.raises(ShuttingDownError):
        await call
    await until(lambda: len(split.sink.records) == 1)
    assert split.sink.records[0].error_type == "shutting_down"
