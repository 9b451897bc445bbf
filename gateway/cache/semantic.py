"""`SemanticCache`: answers for prompts that mean the same, found by the similarity of their embeddings.

What is embedded: the whole conversation (every message's role and text, the system prompt included), not only the
last user message: the same question after a different system prompt or history is a different request. Everything
else that changes an answer (model, sampling parameters, tools, response_format…) must match exactly, and so must
the scope: those make the *partition*, a hash searched within, so a semantic hit never crosses a scope either.

A match names the exact key of the earlier request, whose answer is read from the tiers (an expired one is a miss).
Each replica holds its own `VectorIndex` per model and shares new rows through a Redis stream per model (XADD,
capped at `max_entries`); a replica reads what the others added at most every `sync_interval`. Embedding or Redis
failures make a miss, never a failed request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np

from gateway.cache.vectors import VectorIndex
from gateway.config import GatewayConfig, ModelCacheConfig, ModelConfig
from gateway.redis_client import connect, redis_errors
from tollgate.gateway.v1 import gateway_pb2 as pb

if TYPE_CHECKING:
    from gateway.redis_client import RedisClient

log = logging.getLogger("tollgate.cache")

_SYNC_BATCH = 1000
_MAX_CONNECTIONS = 16  # per Redis node; a call past it fails (a miss), it never waits
_Field = bytes | bytearray | memoryview | str | int | float  # what redis-py takes in a stream entry


def conversation_text(params: pb.ChatCompletionParams) -> str:
    """The text that is embedded: each message as `role: text`, one a line."""
    lines = []
    for message in params.messages:
        text = message.content if message.HasField("content") else " ".join(p.text for p in message.content_parts)
        lines.append(f"{pb.Role.Name(message.role)}: {text}")
    return "\n".join(lines)


def partition_of(scope: str, fingerprint: bytes, params: pb.ChatCompletionParams) -> str:
    """Everything but the conversation's text that decides the answer: requests may only match within one
    partition."""
    rest = pb.ChatCompletionParams()
    rest.CopyFrom(params)
    # Only the text is embedded: the rest of each message (images, audio, files, tool calls, names) must match.
    for message in rest.messages:
        message.ClearField("content")
        for piece in message.content_parts:
            if piece.WhichOneof("part") == "text":
                piece.text = ""
    rest.ClearField("user")
    rest.ClearField("metadata")
    rest.ClearField("store")
    rest.ClearField("stream_options")
    digest = hashlib.blake2b(digest_size=16)
    for part in (scope.encode(), fingerprint, rest.SerializeToString(deterministic=True)):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


@dataclass(slots=True)
class SemanticCounters:
    """What the semantic cache did, for metrics."""

    lookups: int = 0
    hits: int = 0
    errors: int = 0  # embeddings or Redis calls that failed (each a miss)
    synced: int = 0  # rows read from other replicas


@dataclass(frozen=True, slots=True)
class Probe:
    """One request's place in the semantic cache: its partition and its embedding."""

    model: str
    partition: str
    vector: list[float]


class SemanticCache:
    """Per model with `cache.semantic`: an index, shared through Redis when one is given."""

    def __init__(
        self,
        models: Mapping[str, ModelCacheConfig],
        *,
        redis: RedisClient | None = None,
        prefix: str = "tollgate:cache",
        sync_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = {name: c.semantic for name, c in models.items() if c.semantic is not None}
        self._ttl = {name: c.ttl for name, c in models.items()}
        self._redis = redis
        self._prefix = prefix
        self._sync_interval = sync_interval
        self._clock = clock
        self.indexes = {name: VectorIndex(s.max_entries) for name, s in self._settings.items()}
        self._synced_to: dict[str, str] = dict.fromkeys(self._settings, "0-0")  # the last stream id read, per model
        self._sync_at: dict[str, float] = dict.fromkeys(self._settings, 0.0)
        self._writes: set[asyncio.Task[None]] = set()
        self.counters = SemanticCounters()

    @classmethod
    def from_config(cls, config: GatewayConfig) -> SemanticCache | None:
        """None when no model asks for a semantic cache; shared through Redis when `cache.redis` is on."""
        models = {m.name: m.cache for m in config.models if m.cache is not None and m.cache.semantic is not None}
        if not models:
            return None
        settings, client = config.cache, None
        if settings.redis and config.redis_url is not None:
            client = connect(config.redis_url, timeout=settings.redis_timeout, max_connections=_MAX_CONNECTIONS)
        return cls(models, redis=client, prefix=settings.key_prefix)

    async def close(self) -> None:
        """Finish sharing pending vectors, then close the Redis connections."""
        await self.drain()
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    def covers(self, model: str) -> bool:
        """Whether `model` has a semantic cache."""
        return model in self._settings

    def wants(self, model: str, params: pb.ChatCompletionParams) -> tuple[str, str]:
        """What to embed for a request to `model`: (the embedding model, the conversation's text). The engine embeds
        it through the gateway's own providers (the gateway's cost, not a caller's)."""
        return self._settings[model].embedding_model, conversation_text(params)

    def probe(
        self,
        model: ModelConfig,
        fingerprint: bytes,
        scope: str,
        params: pb.ChatCompletionParams,
        vector: list[float] | None,
    ) -> Probe | None:
        """The request's embedding and partition; None when the embedding failed (a miss, never a failed request)."""
        if vector is None:
            self.counters.errors += 1
            return None
        return Probe(model.name, partition_of(scope, fingerprint, params), vector)

    async def nearest(self, probe: Probe) -> str | None:
        """The exact key of the most similar earlier request at or above the threshold, if any."""
        self.counters.lookups += 1
        await self._sync(probe.model)
        found = self.indexes[probe.model].nearest(probe.partition, probe.vector, self._settings[probe.model].threshold)
        if found is None:
            return None
        self.counters.hits += 1
        return found[0]

    def add(self, probe: Probe, key: str) -> None:
        """Hold the request's vector for `key`, here now and for the other replicas through Redis."""
        if self.indexes[probe.model].add(probe.partition, probe.vector, key) and self._redis is not None:
            task = asyncio.ensure_future(self._publish(self._redis, probe, key))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def drain(self) -> None:
        """Wait for the background writes to Redis."""
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def _stream(self, model: str) -> str:
        # One key a model: on a Redis Cluster each model's stream is one slot, and the models spread over the slots.
        return f"{self._prefix}:semantic:{hashlib.blake2b(model.encode(), digest_size=8).hexdigest()}"

    async def _publish(self, client: RedisClient, probe: Probe, key: str) -> None:
        stream = self._stream(probe.model)
        fields: dict[
            bytes | bytearray | memoryview | str | int | float, bytes | bytearray | memoryview | str | int | float
        ] = {
            "p": probe.partition,
            "k": key,
            "v": np.asarray(probe.vector, dtype="<f4").tobytes(),
        }
        try:
            async with client.pipeline(transaction=False) as pipe:
                pipe.xadd(stream, fields, maxlen=self._settings[probe.model].max_entries, approximate=True)
                pipe.expire(stream, max(1, int(self._ttl[probe.model])))
                await pipe.execute()
        except redis_errors() as exc:
            self.counters.errors += 1
            log.warning("semantic cache: could not share a vector through Redis: %r", exc)

    async def _sync(self, model: str) -> None:
        """Read the rows other replicas added since the last read, at most every `sync_interval`."""
        now = self._clock()
        if self._redis is None or now < self._sync_at[model]:
            return
        self._sync_at[model] = now + self._sync_interval
        try:
            replies = await self._redis.xrange(self._stream(model), min=f"({self._synced_to[model]}", count=_SYNC_BATCH)
        except redis_errors() as exc:
            self.counters.errors += 1
            log.warning("semantic cache: could not read shared vectors from Redis: %r", exc)
            return
        index = self.indexes[model]
        rows = cast(list[tuple[bytes, dict[bytes, bytes]]], replies)  # redis-py's reply without decode_responses
        for entry_id, fields in rows:
            self._synced_to[model] = entry_id.decode()
            try:
                vector = np.frombuffer(fields[b"v"], dtype="<f4")
                partition, key = fields[b"p"].decode(), fields[b"k"].decode()
            except (KeyError, ValueError) as exc:  # another version's row, or damage: skipped, never a failed request
                self.counters.errors += 1
                log.warning("semantic cache: skipped an unreadable shared vector %s: %r", entry_id, exc)
                continue
            if index.add(partition, vector, key):
                self.counters.synced += 1
