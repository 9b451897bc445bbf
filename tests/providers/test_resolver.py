"""`Resolver`: a host's addresses looked up once per ttl, one look-up shared by concurrent connections, forgotten when
a connection to them fails; and the upstream client connecting through it to a name."""

from __future__ import annotations

import asyncio
import socket

import orjson
import pytest
from aiohttp import web

from gateway.providers.answer import ConnectFailed
from gateway.providers.resolver import Address, Resolver
from gateway.providers.transport import UpstreamClient
from tests.providers.serving import served


class CountingLookup:
    def __init__(self, answer: list[Address], delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.calls = 0

    async def __call__(self, host: str, port: int) -> list[Address]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return [(address, port) for address, _ in self.answer]


async def test_concurrent_look_ups_of_a_name_share_one_and_its_answer_is_kept() -> None:
    lookup = CountingLookup([("127.0.0.1", 0)], delay=0.02)
    resolver = Resolver(ttl=60, lookup=lookup)
    found = await asyncio.gather(*(resolver.addresses("backend.internal", 443) for _ in range(20)))
    assert found == [[("127.0.0.1", 443)]] * 20
    assert await resolver.addresses("backend.internal", 443) == [("127.0.0.1", 443)]
    assert lookup.calls == 1
    resolver.forget("backend.internal", 443)
    await resolver.addresses("backend.internal", 443)
    assert lookup.calls == 2


async def test_an_ip_literal_is_not_looked_up_and_an_expired_answer_is() -> None:
    lookup = CountingLookup([("10.0.0.7", 0)])
    resolver = Resolver(ttl=0.01, lookup=lookup)
    assert await resolver.addresses("::1", 8000) == [("::1", 8000)]
    assert lookup.calls == 0
    await resolver.addresses("a.internal", 80)
    await asyncio.sleep(0.02)
    await resolver.addresses("a.internal", 80)
    assert lookup.calls == 2


async def test_a_name_without_addresses_is_an_os_error_and_a_caller_giving_up_spares_the_others() -> None:
    resolver = Resolver(lookup=CountingLookup([]))
    with pytest.raises(socket.gaierror):
        await resolver.addresses("nowhere.internal", 80)
    slow = Resolver(lookup=CountingLookup([("127.0.0.1", 0)], delay=0.05))
    impatient = asyncio.create_task(slow.addresses("b.internal", 80))
    patient = asyncio.create_task(slow.addresses("b.internal", 80))
    await asyncio.sleep(0.01)
    impatient.cancel()
    assert await patient == [("127.0.0.1", 80)]


async def test_the_client_connects_to_a_name_through_the_next_address_and_forgets_a_dead_one() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"host": request.host})

    app = web.Application()
    app.router.add_get("/", hello)
    async with served(app) as port:
        # The name's first address refuses (a port nothing listens on); its second answers.
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()
        closed.close()
        lookup = CountingLookup([])

        async def two(host: str, wanted: int) -> list[Address]:
            lookup.calls += 1
            return [("127.0.0.1", dead[1]), ("127.0.0.1", wanted)]

        client = UpstreamClient(limit=2, connect_timeout=2, read_timeout=2, headers={}, resolver=Resolver(lookup=two))
        try:
            async with client.get(f"http://gateway-test.internal:{port}/") as answer:
                assert orjson.loads(await answer.read()) == {"host": f"gateway-test.internal:{port}"}
            assert lookup.calls == 1

            async def nothing(host: str, wanted: int) -> list[Address]:
                lookup.calls += 1
                return [("127.0.0.1", dead[1])]

            nowhere = UpstreamClient(
                limit=1, connect_timeout=2, read_timeout=2, headers={}, resolver=Resolver(lookup=nothing)
            )
            for _ in range(2):  # each failure forgets the name: looked up again
                with pytest.raises(ConnectFailed):
                    await nowhere.send(b"GET", f"http://gone.internal:{dead[1]}/", None)
            assert lookup.calls == 3
            await nowhere.close()
        finally:
            await client.close()
