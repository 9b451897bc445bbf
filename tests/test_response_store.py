"""Stored responses: in memory (TTL on an injected clock, the newest `max_items`) and in a real Redis (TTL as the
key's expiry, shared by two gateways: a response made on one replica continues and is fetched on another)."""

from __future__ import annotations

import asyncio
import os

import openai
import pytest
import redis.asyncio as aioredis

from gateway.assemble import assemble
from gateway.config import ResponsesConfig, parse_config
from gateway.errors import ServiceUnavailableError
from gateway.frontdoor.app import create_app, start_http_server
from gateway.response_store import MemoryResponseStore, RedisResponseStore
from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import config_for
from tests.redis_support import free_port
from tollgate.gateway.v1 import responses_pb2 as rpb


def stored(owner: str, text: str) -> rpb.StoredResponse:
    response = rpb.Response(id="resp_1", status="completed", model="m")
    response.output.add(type="message", role="assistant").content.add(type="output_text", text=text)
    return rpb.StoredResponse(owner=owner, response=response, input=[rpb.ResponseItem(type="message", role="user")])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_store_expires_and_keeps_the_newest() -> None:
    clock = Clock()
    store = MemoryResponseStore(ResponsesConfig(ttl=60, max_items=2), clock)
    await store.put("a", stored("k", "first"))
    assert await store.get("a") == stored("k", "first")
    clock.now += 61
    assert await store.get("a") is None and len(store) == 0
    for name in ("b", "c", "d"):
        await store.put(name, stored("k", name))
    assert await store.get("b") is None  # the oldest went
    assert (await store.get("d")) == stored("k", "d")
    assert await store.delete("c") and not await store.delete("c")
    assert len(store) == 1


async def test_redis_store_round_trips_and_expires(redis_url: str, redis_namespace: str) -> None:
    store = RedisResponseStore(redis_url, ResponsesConfig(ttl=1, key_prefix=redis_namespace))
    try:
        await store.put("resp_x", stored("k", "hello"))
        assert await store.get("resp_x") == stored("k", "hello")
        client = aioredis.Redis.from_url(redis_url)
        assert 0 < await client.ttl(f"{redis_namespace}:resp_x") <= 1
        await client.aclose()
        assert await store.delete("resp_x") and await store.get("resp_x") is None
        await store.put("resp_y", stored("k", "soon gone"))
        await asyncio.sleep(1.2)
        assert await store.get("resp_y") is None
    finally:
        await store.close()


async def test_redis_down_is_a_503() -> None:
    store = RedisResponseStore(f"redis://127.0.0.1:{free_port()}/0", ResponsesConfig())
    try:
        with pytest.raises(ServiceUnavailableError):
            await store.get("resp_x")
        with pytest.raises(ServiceUnavailableError):
            await store.put("resp_x", stored("k", "x"))
    finally:
        await store.close()


async def test_replicas_share_stored_responses_through_redis(redis_url: str, redis_namespace: str) -> None:
    async with FakeOpenAI(chunks=8) as upstream:
        extra = f'redis: "{redis_url}"\nresponses: {{key_prefix: "{redis_namespace}"}}\n'
        config = parse_config(config_for(upstream.base_url).replace("auth: none", f"auth: none\n{extra}"), os.environ)
        replicas = [assemble(config) for _ in range(2)]
        servers = []
        for replica in replicas:
            await replica.start()
            app = create_app(replica.engine, config.server)
            servers.append(await start_http_server(app, config.listen.http, config.server))
        try:
            one, two = (
                openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{s.port}/v1", api_key="sk-a", max_retries=0)
                for s in servers
            )
            made = await one.responses.create(model="gpt-4o-mini", input="hello there")
            assert (await two.responses.retrieve(made.id)).output_text == made.output_text
            following = await two.responses.create(model="demo", input="and again", previous_response_id=made.id)
            assert following.status == "completed"  # a chat backend continues an OpenAI backend's conversation
            await two.responses.delete(made.id)
            with pytest.raises(openai.NotFoundError):
                await one.responses.retrieve(made.id)
        finally:
            for server in servers:
                await server.stop()
            for replica in replicas:
                await replica.close()
