"""`ResponseCache`: what the engine asks of the cache, and the claim it hands back.

For a model that caches (`cache:` in its config), a request that may be answered again (see `control`) gets a key
(see `keys`). `lookup` serves a stored answer from the tiers (see `tiered`), else gives the caller the key's claim:
one caller per key and process goes upstream while identical callers wait (see `flight`). The engine runs the
attempts itself and hands the outcome to the claim, which stores a completed answer and releases the waiters; the
cache never calls back into the engine. A model with a semantic cache asks the engine, through the claim, for the
embedding of the conversation (`wants`), and may still turn into a hit with it (`similar`).

An answer is stored with the names of the models that produced it (a fallback's, say), and a stored answer is a hit
only for a caller that may use them all: for any other it is a miss, and its own answer then takes the key's place.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.cache.control import CACHE_STATUS_HEADER, deterministic, read_control
from gateway.cache.entry import CachedAnswer, CorruptEntry, encode_chunks
from gateway.cache.flight import Flight, Flights
from gateway.cache.keys import cache_key, model_fingerprint, scope_of
from gateway.cache.memory import MemoryStore
from gateway.cache.recorder import RecordingStream
from gateway.cache.redis_store import RedisStore
from gateway.cache.tiered import TieredStore
from gateway.config import GatewayConfig, ModelConfig
from tollgate.gateway.v1 import gateway_pb2 as pb

if TYPE_CHECKING:  # numpy comes with the semantic cache: imported only when a model has one
    from gateway.auth.principal import ModelAccess, Principal
    from gateway.cache.semantic import Probe, SemanticCache

__all__ = ["BYPASS", "CACHE_STATUS_HEADER", "HIT", "MISS", "NO_CACHE", "CacheLookup", "ResponseCache"]

log = logging.getLogger("tollgate.cache")

Completion = pb.CreateChatCompletionResponse
Chunk = pb.StreamChatCompletionResponse
Chunks = AsyncGenerator[Chunk, None]
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
    access: ModelAccess | None  # the caller's, when it restricts models: which stored answers it may be served
    probe: Probe | None = None  # the request's embedding, once the semantic cache made one

    def serves(self, answer: CachedAnswer) -> bool:
        """Whether the caller may be served `answer`: it may use every model that produced it (with a restricted
        access, an answer that does not say what produced it is never served)."""
        access = self.access
        return access is None or (bool(answer.served_by) and all(access.permits(m) for m in answer.served_by))

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
    def from_config(cls, config: GatewayConfig) -> ResponseCache:
        """L1 always; L2 in the configured Redis when `cache.redis` is on; semantic for the models that ask."""
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
        if any(m.cache is not None and m.cache.semantic is not None for m in config.models):
            from gateway.cache.semantic import SemanticCache  # noqa: PLC0415  # numpy: only for a semantic cache

            semantic = SemanticCache.from_config(config)
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

    async def lookup(
        self,
        params: pb.ChatCompletionParams,
        headers: Mapping[str, str],
        principal: Principal | None,
        *,
        served_by: str = "",
        arm: str = "",
    ) -> CacheLookup:
        """A stored answer (a hit), or the claim to fetch it (a miss), or a pass for a call the cache stays out of.

        `served_by` is the configured model the request was routed to (an alias or a route rule may name another)
        and `arm` its experiment arm: answers are filed under what serves them, never under the name asked for.
        """
        name = served_by or params.model
        plan = self._plan(params, headers, principal, name, arm)
        if plan is None:
            return CacheLookup(self, None, BYPASS if name in self._models else "")
        if not plan.lookup:  # a refresh: no lookup, and it claims nothing
            self.counters.misses += 1
            return CacheLookup(self, plan, MISS)
        while True:
            answer = await self._get(plan.key)
            if answer is not None and plan.serves(answer):
                return self._hit(CacheLookup(self, plan, MISS), answer)
            flight = await self.flights.claim(plan.key)
            if flight is not None:
                break  # else another caller fetched it: look again
        claim = CacheLookup(self, plan, MISS, flight)
        if self.semantic is not None and self.semantic.covers(plan.model.name):
            claim.wants = self.semantic.wants(plan.model.name, params)
        else:
            self.counters.misses += 1
        return claim

    def _plan(
        self,
        params: pb.ChatCompletionParams,
        headers: Mapping[str, str],
        principal: Principal | None,
        served_by: str,
        arm: str,
    ) -> _Plan | None:
        """None when the cache stays out of this call; else its key, and whether to look it up."""
        model = self._models.get(served_by)
        if model is None:
            return None
        control = read_control(headers)
        scope = scope_of(principal, model.cache.scope if model.cache else "") or self._anonymous_scope
        if not scope or control.no_store or not (control.force or deterministic(params)):
            self.counters.bypasses += 1
            return None
        fingerprint = self._fingerprints[model.name] + (b"\narm=" + arm.encode() if arm else b"")
        key = cache_key(scope, fingerprint, params)
        access = principal.access if principal is not None and not principal.access.unrestricted else None
        return _Plan(model, fingerprint, params, scope, key, lookup=not control.no_cache, access=access)

    def _hit(self, claim: CacheLookup, answer: CachedAnswer) -> CacheLookup:
        self.counters.hits += 1
        claim.status, claim.answer = HIT, answer
        claim.release()
        return claim

    async def _similar(self, plan: _Plan, vector: list[float] | None) -> CachedAnswer | None:
        """The answer to an earlier request that means the same, copied under this request's own key (so that
        identical requests waiting on this one find it)."""
        semantic = self.semantic
        assert semantic is not None  # only a claim that `wants` an embedding gets here
        plan.probe = semantic.probe(plan.model, plan.fingerprint, plan.scope, plan.params, vector)
        if plan.probe is None:
            return None
        similar = await semantic.nearest(plan.probe)
        value = await self.store.get(similar) if similar is not None else None
        if value is None:
            return None
        answer = _decode(value, self.counters)
        if answer is None or not plan.serves(answer):
            return None
        self.store.put(plan.key, value, plan.ttl)
        return answer

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


class CacheLookup:
    """One request's turn at the cache: a hit (`answer`), or the claim to answer it. The engine runs the attempts,
    hands the outcome over (`store`, or `record` for a stream) and always `release`s the claim, so that identical
    requests waiting on it look again."""

    __slots__ = ("_cache", "_flight", "_plan", "answer", "status", "wants")

    def __init__(
        self, cache: ResponseCache | None, plan: _Plan | None, status: str, flight: Flight | None = None
    ) -> None:
        self._cache = cache
        self._plan = plan
        self._flight = flight
        self.status = status  # HIT, MISS or BYPASS when the model caches, "" when it does not
        self.answer: CachedAnswer | None = None
        # (embedding model, text): what the semantic cache needs embedded before `similar`; None: nothing.
        self.wants: tuple[str, str] | None = None

    async def similar(self, vector: list[float] | None) -> None:
        """The semantic step, with the embedding the engine made of `wants` (None: it failed, which is a miss)."""
        self.wants = None
        cache = self._cache
        assert cache is not None and self._plan is not None  # only a claim of a caching model wants an embedding
        try:
            answer = await cache._similar(self._plan, vector)
        except BaseException:
            self.release()
            raise
        if answer is not None:
            cache._hit(self, answer)
        else:
            cache.counters.misses += 1

    def store(self, completion: Completion, served_by: tuple[str, ...]) -> None:
        """Keep a whole answer (one with choices), produced by the models `served_by`, for the next identical
        request."""
        if self._cache is not None and self._plan is not None and completion.choices:
            self._cache._put(self._plan, CachedAnswer(completion=completion, served_by=served_by).encode())

    def record(self, first: Chunk, rest: Chunks, served_by: tuple[str, ...]) -> Chunks:
        """The stream (produced by the models `served_by`), recorded: stored once it completes, and the claim
        released however it ends."""
        cache, plan = self._cache, self._plan
        if cache is None or plan is None:
            return rest
        return RecordingStream(first, rest, lambda raw: cache._put(plan, encode_chunks(raw, served_by)), self.release)

    def release(self) -> None:
        """Let the requests waiting on this one look again; a second call does nothing."""
        flight, self._flight = self._flight, None
        if flight is not None:
            flight.land()


NO_CACHE = CacheLookup(None, None, "")  # what an engine without a cache looks up: nothing, and nothing to store


async def replay(chunks: Sequence[Chunk]) -> Chunks:
    """A stored stream's chunks, as a stream."""
    for chunk in chunks:
        yield chunk


async def _replay(chunks: Sequence[Chunk]) -> Chunks:
    for chunk in chunks:
        yield chunk
