"""`RedisStore`: the shared tier (L2), every replica's answers in one Redis, values zlib-compressed when large.

Each call gives up after `timeout`; a Redis that is down or slow raises `CacheUnavailable`, and what to do then
(answer from L1 alone) is `TieredStore`'s business. Values carry a one-byte header: raw or zlib. On a Redis Cluster
every key is its own slot (each call touches one key), so the answers spread over the primaries.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from gateway.redis_client import connect, redis_errors

if TYPE_CHECKING:
    from gateway.redis_client import RedisClient

T = TypeVar("T")
_RAW, _ZLIB = b"\x00", b"\x01"
# A burst queues here in order (FIFO) rather than failing on an exhausted pool, as the limiter's Redis backend does.
_MAX_CONNECTIONS = 16


class CacheUnavailable(Exception):
    """Redis could not answer in time."""


class RedisStore:
    """Values under `prefix:` in the Redis (or Redis Cluster) at `url`."""

    def __init__(self, url: str, *, prefix: str, timeout: float, compress_over: int) -> None:
        self._url = url
        self._prefix = prefix + ":"
        self._timeout = timeout
        self._compress_over = compress_over
        self._client: RedisClient | None = None
        self._slots = asyncio.Semaphore(_MAX_CONNECTIONS)

    async def get(self, key: str) -> tuple[bytes, float] | None:
        """The value and the seconds it has left, or None."""

        async def run() -> tuple[bytes, float] | None:
            async with self._connect().pipeline(transaction=False) as pipe:
                pipe.get(self._prefix + key)
                pipe.pttl(self._prefix + key)
                stored, ttl_ms = await pipe.execute()
            if stored is None or ttl_ms <= 0:
                return None
            return _unpack(stored), ttl_ms / 1000

        return await self._call(run)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Keep `value` for `ttl` seconds (at least one millisecond)."""
        packed = _ZLIB + zlib.compress(value, 1) if len(value) > self._compress_over else _RAW + value
        await self._call(lambda: self._connect().set(self._prefix + key, packed, px=max(1, int(ttl * 1000))))

    async def close(self) -> None:
        """Close the connection pool."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _call(self, step: Callable[[], Awaitable[T]]) -> T:
        """Await one Redis step; any failure to answer in time becomes `CacheUnavailable` (the one place)."""
        try:
            async with asyncio.timeout(self._timeout), self._slots:
                return await step()
        except _errors() as exc:
            raise CacheUnavailable(f"redis cache: {type(exc).__name__}: {exc}") from exc

    def _connect(self) -> RedisClient:
        # Made on first use, inside the running loop the pool's connections will belong to.
        if self._client is None:
            self._client = connect(self._url, timeout=self._timeout, max_connections=_MAX_CONNECTIONS)
        return self._client


def _errors() -> tuple[type[Exception], ...]:
    return (*redis_errors(), zlib.error)  # a damaged value is as good as none


def _unpack(stored: bytes) -> bytes:
    head, body = stored[:1], stored[1:]
    if head == _ZLIB:
        return zlib.decompress(body)
    return body
