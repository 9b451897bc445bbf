"""`bench.upstream_client`: both clients make real calls (a whole answer, a stream's events) and each is timed."""

from __future__ import annotations

from bench.upstream_client import measure
from gateway.testing.fake_openai import FakeOpenAI


async def test_both_clients_are_timed_on_plain_calls_and_streams() -> None:
    fake = FakeOpenAI(chunks=3, record_requests=False)
    base_url = await fake.start()
    try:
        figures = await measure(base_url, calls=40, rounds=1)
    finally:
        await fake.stop()
    assert set(figures) == {"aiohttp", "tollgate"}
    for client in figures.values():
        assert client["plain"] > 0 and client["stream"] > 0
