"""Fixtures for the limiter backends: a real Redis (tests/redis_support.py), and each backend behind one harness."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.ratelimit.memory import MemoryBackend
from gateway.ratelimit.redis_backend import RedisBackend
from tests.ratelimit.harness import Harness, ManualClock
from tests.redis_support import redis_namespace, redis_url

__all__ = ["harness", "redis_namespace", "redis_url"]


@pytest.fixture(params=["memory", "redis"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """Each shared behaviour test runs against both backends."""
    if request.param == "memory":
        clock = ManualClock()
        yield Harness("memory", MemoryBackend(clock=clock), clock)
        return
    url: str = request.getfixturevalue("redis_url")
    namespace: str = request.getfixturevalue("redis_namespace")
    # A generous timeout: these tests are about behaviour, not latency, on a busy CI machine.
    backend = RedisBackend(url, namespace=namespace, timeout=2.0)
    try:
        yield Harness("redis", backend, None, namespace)
    finally:
        await backend.close()
