"""Stored responses (the Responses API's `store`): kept in this process, or in Redis shared by every replica.

A stored response is a `StoredResponse` (its owner, the response, and the whole input it answered) serialised as
protobuf, kept for the configured TTL. Who may read it is the engine's decision (the owner must match); the store
only keeps bytes. `build_response_store` chooses the backend from the config, in one place.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from gateway.config import GatewayConfig, ResponsesConfig
from gateway.errors import ServiceUnavailableError
from gateway.redis_client import connect, redis_errors
from tollgate.gateway.v1 import responses_pb2 as rpb

if TYPE_CHECKING:
    from gateway.redis_client import RedisClient

log = logging.getLogger("tollgate.responses")

_REDIS_TIMEOUT = 1.0  # seconds a store call waits for Redis before the request is told it is unavailable


class ResponseStore(Protocol):
    """Where stored responses live, by response id."""

    async def put(self, response_id: str, stored: rpb.StoredResponse) -> None:
        """Keep `stored` under `response_id` for the TTL."""
        ...

    async def get(self, response_id: str) -> rpb.StoredResponse | None:
        """The stored response, or None when there is none (never stored, expired or deleted)."""
        ...

    async def delete(self, response_id: str) -> bool:
        """Forget the response; whether there was one."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryResponseStore:
    """Stored responses in this process: the newest `max_items`, each until its TTL runs out."""

    def __init__(self, config: ResponsesConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = config.ttl
        self._max_items = config.max_items
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def put(self, response_id: str, stored: rpb.StoredResponse) -> None:
        """Keep it; the oldest go when there are more than `max_items`."""
        self._items[response_id] = (self._clock() + self._ttl, stored.SerializeToString())
        self._items.move_to_end(response_id)
        while len(self._items) > self._max_items:
            self._items.popitem(last=False)

    async def get(self, response_id: str) -> rpb.StoredResponse | None:
        """The stored response, unless it expired."""
        found = self._items.get(response_id)
        if found is None:
            return None
        expires, data = found
        if expires <= self._clock():
            del self._items[response_id]
            return None
        return rpb.StoredResponse.FromString(data)

    async def delete(self, response_id: str) -> bool:
        """Forget it."""
        return self._items.pop(response_id, None) is not None

    async def close(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        return len(self._items)


class RedisResponseStore:
    """Stored responses in Redis (single or Cluster), one key each with the TTL as its expiry."""

    def __init__(self, url: str, config: ResponsesConfig) -> None:
        self._redis: RedisClient = connect(url, timeout=_REDIS_TIMEOUT, max_connections=64)
        self._ttl = max(1, int(config.ttl))
        self._prefix = config.key_prefix

    def _key(self, response_id: str) -> str:
        return f"{self._prefix}:{response_id}"

    async def put(self, response_id: str, stored: rpb.StoredResponse) -> None:
        """Keep it for the TTL."""
        try:
            await self._redis.set(self._key(response_id), stored.SerializeToString(), ex=self._ttl)
        except redis_errors() as exc:
            raise _unavailable(exc) from exc

    async def get(self, response_id: str) -> rpb.StoredResponse | None:
        """The stored response, if Redis has it."""
        try:
            data = await self._redis.get(self._key(response_id))
        except redis_errors() as exc:
            raise _unavailable(exc) from exc
        return (
            None if data is None else rpb.StoredResponse.FromString(data if isinstance(data, bytes) else data.encode())
        )

    async def delete(self, response_id: str) -> bool:
        """Forget it."""
        try:
            return bool(await self._redis.delete(self._key(response_id)))
        except redis_errors() as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def _unavailable(exc: Exception) -> ServiceUnavailableError:
    log.warning("response store: Redis failed: %r", exc)
    return ServiceUnavailableError("The response store is unavailable; try again")


def build_response_store(config: GatewayConfig) -> ResponseStore:
    """Redis when the config names one (replicas share stored responses), else this process's memory."""
    if config.redis_url is not None:
        return RedisResponseStore(config.redis_url, config.responses)
    return MemoryResponseStore(config.responses)
