"""`ResponseCache`: what the engine asks of the cache, around its non-streaming and streaming paths.

For a model that caches (`cache:` in its config), a request that may be answered again (see `control`) gets a key
(see `keys`); a stored answer is served from the tiers (see `tiered`), else one caller per key and process calls
upstream while identical callers wait (see `flight`), and a completed answer is stored. A hit is marked on the call
context (`cache_status`), from which the usage record and the response header take it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.cache.control import deterministic, read_control
from gateway.cache.entry import CachedAnswer, CorruptEntry, encode_chunks
from gateway.cache.flight import Flight, Flights
from gateway.cache.keys import cache_key, model_fingerprint, scope_of
from gateway.cache.memory import MemoryStore
from gateway.cache.recorder import RecordingStream
from gateway.cache.redis_store import RedisStore
from gateway.cache.tiered import TieredStore
from gateway.config import GatewayConfig, ModelConfig
from gateway.engine.contract import CallContext
from tollgate.gateway.v1 import gateway_pb2 as pb

if TYPE_CHECKING:  # numpy comes with the semantic cache: imported only when a model has one
    from gateway.cache.semantic import Embed, Probe, SemanticCache

log = logging.getLogger("tollgate.cache")

Completion = pb.CreateChatCompletionResponse
Chunk = pb.StreamChatCompletionResponse
Chunks = AsyncGenerator[Chunk, None]
OpenedStream = tuple[Chunk, Chunks]
HIT, MISS, BYPASS = "hit", "miss", "bypass"


@dataclass(slots=True)
class CacheCounters:
    """What the cache decided, for metrics: counters that only grow."""

    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    stores: int = 0
    corrupt: int = 0  # stored values that could not be read (treated as misses)


@dataclass(slots=True)
class _Plan:
    model: ModelConfig
    fingerprint: bytes
    params: pb.ChatCompletionParams
    scope: str
    key: str
    lookup: bool  # False for `Cache-Control: no-cache`: fetch afresh, then store
    probe: Probe | None = None  # the request's embedding, once the semantic cache made one

    @property
    def ttl(self) -> float:
        return self.model.cache.ttl if self.model.cache is not None else 0.0


class ResponseCache:
    """The cache for one configuration; models without `cache:` pass straight through."""

    def __init__(self, config: GatewayConfig, store: TieredStore, semantic: SemanticCache | None = None) -> None:
        self._models = {m.name: m for m in config.models if m.cache is not None}
        self._fingerprints = {name: model_fingerprint(m, config) for name, m in self._models.items()}
        self._max_entry = config.cache.max_entry_bytes
        # Under `auth: none` nobody is kept apart; with auth, a caller the decision names no id for shares nothing.
        self._anonymous_scope = "global" if config.auth is None else ""
        self.store = store
        self.semantic = semantic
        self.flights = Flights()
        self.counters = CacheCounters()

    @classmethod
    def from_config(cls, config: GatewayConfig, embed: Embed | None = None) -> ResponseCache:
        """L1 always; L2 in the configured Redis when `cache.redis` is on; semantic for the models that ask, with
        `embed` reaching their embedding models."""
        settings = config.cache
        l2 = None
        if settings.redis and config.redis_url is not None:
            l2 = RedisStore(
                config.redis_url,
                prefix=settings.key_prefix,
                timeout=settings.redis_timeout,
                compress_over=settings.compress_over,
            )
        semantic = None
        if embed is not None and any(m.cache is not None and m.cache.semantic is not None for m in config.models):
            from gateway.cache.semantic import SemanticCache  # noqa: PLC0415  # numpy: only for a semantic cache

            semantic = SemanticCache.from_config(config, embed)
        return cls(config, TieredStore(MemoryStore(settings.l1_max_bytes), l2), semantic)

    @property
    def enabled(self) -> bool:
        """Whether any model caches."""
        return bool(self._models)

    def snapshot(self) -> dict[str, int | bool]:
        """Every counter and the L2 state, for metrics."""
        tiers = self.store.counters
        return {
            "hits": self.counters.hits,
            "misses": self.counters.misses,
            "bypasses": self.counters.bypasses,
            "stores": self.counters.stores,
            "corrupt": self.counters.corrupt,
            "coalesced": self.flights.waits,
            "l1_hits": tiers.l1_hits,
            "l2_hits": tiers.l2_hits,
            "l2_errors": tiers.l2_errors,
            "l2_skipped": tiers.l2_skipped,
            "l2_down": tiers.l2_down,
            "l1_bytes": self.store.l1.bytes,
            "l1_entries": len(self.store.l1),
            "l1_evictions": self.store.l1.evictions,
        }

    async def close(self) -> None:
        """Finish the pending writes to Redis and close its connections."""
        await self.store.close()
        if self.semantic is not None:
            await self.semantic.close()

    async def complete(
        self,
        params: pb.ChatCompletionParams,
        ctx: CallContext,
        upstream: Callable[[], Awaitable[Completion]],
        *,
        served_by: str = "",
        arm: str = "",
    ) -> Completion:
        """A stored answer, or `upstream`'s (stored when it may be)."""
        plan = self._plan(params, ctx, served_by or params.model, arm)
        if plan is None:
            return await upstream()
        found = await self._find(plan, ctx)
        if isinstance(found, CachedAnswer):
            return await found.as_completion()
        try:
            result = await upstream()
            if result.choices:
                self._put(plan, CachedAnswer(completion=result).encode())
            return result
        finally:
            if found is not None:
                found.land()

    async def open_stream(
        self,
        params: pb.ChatCompletionParams,
        ctx: CallContext,
        upstream: Callable[[], Awaitable[OpenedStream]],
        *,
        served_by: str = "",
        arm: str = "",
    ) -> OpenedStream:
        """The first chunk and the rest: replayed from the cache, or `upstream`'s, recorded to be stored once the
        stream completes."""
        plan = self._plan(params, ctx, served_by or params.model, arm)
        if plan is None:
            return await upstream()
        found = await self._find(plan, ctx)
        if isinstance(found, CachedAnswer):
            chunks = found.as_chunks()
            return chunks[0], _replay(chunks[1:])
        try:
            first, rest = await upstream()
        except BaseException:
            if found is not None:
                found.land()
            raise
        end = found.land if found is not None else _nothing
        return first, RecordingStream(first, rest, lambda raw: self._put(plan, encode_chunks(raw)), end)

    def _plan(self, params: pb.ChatCompletionParams, ctx: CallContext, served_by: str, arm: str) -> _Plan | None:
        """None when the cache stays out of this call; else its key, and whether to look it up.

        `served_by` is the configured model the request was routed to (an alias or a route rule may name another)
        and `arm` its experiment arm: answers are filed under what serves them, never under the name asked for.
        """
        model = self._models.get(served_by)
        if model is None:
            return None
        control = read_control(ctx.headers)
        scope = scope_of(ctx.principal, model.cache.scope if model.cache else "") or self._anonymous_scope
        if not scope or control.no_store or not (control.force or deterministic(params)):
            self.counters.bypasses += 1
            ctx.cache_status = BYPASS
            return None
        ctx.cache_status = MISS
        fingerprint = self._fingerprints[model.name] + (b"\narm=" + arm.encode() if arm else b"")
        key = cache_key(scope, fingerprint, params)
        return _Plan(model, fingerprint, params, scope, key, lookup=not control.no_cache)

    async def _find(self, plan: _Plan, ctx: CallContext) -> CachedAnswer | Flight | None:
        """A stored answer (a hit); else the claim to fetch it (a miss); None for a refresh, which claims nothing."""
        if not plan.lookup:
            self.counters.misses += 1
            return None
        while True:
            answer = await self._get(plan.key)
            if answer is not None:
                return self._hit(answer, ctx)
            flight = await self.flights.claim(plan.key)
            if flight is None:
                continue  # another caller fetched it: look again
            try:
                answer = await self._similar(plan)
            except BaseException:
                flight.land()
                raise
            if answer is not None:
                flight.land()
                return self._hit(answer, ctx)
            self.counters.misses += 1
            return flight

    def _hit(self, answer: CachedAnswer, ctx: CallContext) -> CachedAnswer:
        self.counters.hits += 1
        ctx.cache_status, ctx.route = HIT, "cache"
        return answer

    async def _similar(self, plan: _Plan) -> CachedAnswer | None:
        """The answer to an earlier request that means the same, copied under this request's own key (so that
        identical requests waiting on this one find it); None without a semantic cache for the model."""
        semantic = self.semantic
        if semantic is None or not semantic.covers(plan.model.name):
            return None
        plan.probe = await semantic.probe(plan.model, plan.fingerprint, plan.scope, plan.params)
        if plan.probe is None:
            return None
        similar = await semantic.nearest(plan.probe)
        value = await self.store.get(similar) if similar is not None else None
        if value is None:
            return None
        self.store.put(plan.key, value, plan.ttl)
        return _decode(value, self.counters)

    async def _get(self, key: str) -> CachedAnswer | None:
        value = await self.store.get(key)
        return _decode(value, self.counters) if value is not None else None

    def _put(self, plan: _Plan, value: bytes) -> None:
        if len(value) <= self._max_entry:
            self.counters.stores += 1
            self.store.put(plan.key, value, plan.ttl)
            if plan.probe is not None and self.semantic is not None:
                self.semantic.add(plan.probe, plan.key)


def _decode(value: bytes, counters: CacheCounters) -> CachedAnswer | None:
    try:
        return CachedAnswer.decode(value)
    except CorruptEntry as exc:
        counters.corrupt += 1
        log.warning("response cache: unreadable entry treated as a miss: %s", exc)
        return None


def _nothing() -> None:
    """No flight to land (a refresh claims none)."""


async def _replay(chunks: Sequence[Chunk]) -> Chunks:
    for chunk in chunks:
        yield chunk
