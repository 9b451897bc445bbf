"""`ResponseCache` on its own, with the real Redis where a tier is involved: the cases the end-to-end tests cannot
stage (an auth server's odd decisions, damaged stored values)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator

import pytest
import redis

from gateway.auth.principal import ANONYMOUS, ModelAccess, Principal
from gateway.cache.keys import cache_key, model_fingerprint
from gateway.cache.memory import MemoryStore
from gateway.cache.redis_store import RedisStore
from gateway.cache.response_cache import ResponseCache
from gateway.cache.tiered import TieredStore
from gateway.config import AuthConfig, GatewayConfig, ModelCacheConfig, ModelConfig, TargetConfig
from tollgate.gateway.v1 import gateway_pb2 as pb

MODEL = ModelConfig("gpt-4o-mini", (TargetConfig("primary", "gpt-4o-mini"),), cache=ModelCacheConfig())
PARAMS = pb.ChatCompletionParams(
    model="gpt-4o-mini", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="Say hello.")], temperature=0
)


def answer(text: str) -> pb.CreateChatCompletionResponse:
    made = pb.CreateChatCompletionResponse(id="chatcmpl-1", model="gpt-4o-mini")
    made.choices.add(index=0, finish_reason=pb.FINISH_REASON_STOP).message.content = text
    return made


async def ask(cache: ResponseCache, principal: Principal, text: str) -> tuple[str, str]:
    """The answer's text (`text` when it went upstream) and the cache status."""
    found = await cache.lookup(PARAMS, {}, principal)
    try:
        if found.answer is not None:
            result = await found.answer.as_completion()
        else:
            result = answer(text)
            found.store(result, (MODEL.name,))
    finally:
        found.release()
    return result.choices[0].message.content, found.status


async def test_an_authenticated_caller_with_no_id_shares_nothing() -> None:
    # An auth server may allow a key without naming it (key_id, user and team all empty): such callers cannot be
    # told apart, so they must not share one partition (which would be the anonymous, global one).
    config = GatewayConfig(auth=AuthConfig(server="127.0.0.1:1"), models=(MODEL,))
    cache = ResponseCache.from_config(config)
    assert await ask(cache, Principal(key_id=""), "for the first caller") == ("for the first caller", "bypass")
    assert await ask(cache, Principal(key_id=""), "for the second caller") == ("for the second caller", "bypass")


async def test_anonymous_callers_share_the_global_scope_under_auth_none() -> None:
    cache = ResponseCache.from_config(GatewayConfig(models=(MODEL,)))
    assert await ask(cache, ANONYMOUS, "first") == ("first", "miss")
    assert await ask(cache, ANONYMOUS, "second") == ("first", "hit")


def _chunk(text: str, *, finish: bool = False) -> pb.StreamChatCompletionResponse:
    made = pb.StreamChatCompletionResponse(id="chatcmpl-1", model="gpt-4o-mini")
    choice = made.choices.add(index=0)
    choice.delta.content = text
    if finish:
        choice.finish_reason = pb.FINISH_REASON_STOP
    return made


async def _stream_rest() -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
    yield _chunk("", finish=True)


# Damaged values as Redis may hold them (another version's format, a stray write): one kind byte and framed messages
# that parse but hold no answer at all.
@pytest.mark.parametrize("stored", [b"c\x00\x00\x00\x00", b"s\x00\x00\x00\x00", b"c"])
async def test_a_stored_value_without_an_answer_is_a_miss(redis_url: str, redis_namespace: str, stored: bytes) -> None:
    config = GatewayConfig(models=(MODEL,))
    l2 = RedisStore(redis_url, prefix=redis_namespace, timeout=1.0, compress_over=1 << 20)
    cache = ResponseCache(config, TieredStore(MemoryStore(1 << 20), l2))
    client = redis.Redis.from_url(redis_url)
    client.set(
        f"{redis_namespace}:{cache_key('global', model_fingerprint(MODEL, config), PARAMS)}", b"\x00" + stored, ex=60
    )
    try:
        found = await cache.lookup(PARAMS, {}, ANONYMOUS)
        assert found.answer is None
        first = _chunk("fresh")
        rest = found.record(first, _stream_rest(), (MODEL.name,))
        assert found.status == "miss" and cache.counters.corrupt == 1
        assert first.choices[0].delta.content == "fresh" and [c async for c in rest]
        assert await ask(cache, ANONYMOUS, "unused") == ("fresh", "hit")  # the good answer replaced the damaged one
    finally:
        await cache.close()
        client.close()


RESTRICTED = ModelAccess(("gpt-4o*",), ("forbidden",))
TEAM = ModelCacheConfig(scope="team")


async def fetch(cache: ResponseCache, principal: Principal, text: str, served_by: tuple[str, ...]) -> tuple[str, str]:
    """Like `ask`, with the answer stored as produced by `served_by` when it went upstream."""
    found = await cache.lookup(PARAMS, {}, principal)
    try:
        if found.answer is not None:
            result = await found.answer.as_completion()
        else:
            result = answer(text)
            found.store(result, served_by)
    finally:
        found.release()
    return result.choices[0].message.content, found.status


async def test_an_answer_is_a_hit_only_for_a_key_that_may_use_the_models_that_produced_it() -> None:
    config = GatewayConfig(auth=AuthConfig(server="127.0.0.1:1"), models=(dataclasses.replace(MODEL, cache=TEAM),))
    cache = ResponseCache.from_config(config)
    boss = Principal(key_id="k1", team="ml")
    intern = Principal(key_id="k2", team="ml", access=RESTRICTED)
    # The boss's request was answered by a fallback the intern may not use: a miss for the intern, whose own answer
    # then takes the key's place, and is a hit for the boss (who may use it).
    assert await fetch(cache, boss, "from the fallback", ("forbidden",)) == ("from the fallback", "miss")
    assert await fetch(cache, boss, "unused", ("gpt-4o-mini",)) == ("from the fallback", "hit")
    assert await fetch(cache, intern, "from its own model", ("gpt-4o-mini",)) == ("from its own model", "miss")
    assert await fetch(cache, intern, "unused", ("gpt-4o-mini",)) == ("from its own model", "hit")
    assert await fetch(cache, boss, "unused", ("gpt-4o-mini",)) == ("from its own model", "hit")
    # An experiment's target names its own model as well: each must be allowed.
    assert await fetch(cache, boss, "from the trial", ("gpt-4o-mini", "forbidden")) == ("from its own model", "hit")


async def test_an_entry_that_names_no_producer_is_served_only_to_keys_that_may_use_every_model() -> None:
    config = GatewayConfig(auth=AuthConfig(server="127.0.0.1:1"), models=(dataclasses.replace(MODEL, cache=TEAM),))
    cache = ResponseCache.from_config(config)
    key = cache_key("team:ml", model_fingerprint(MODEL, config), PARAMS)
    cache.store.put(key, b"c" + _framed(answer("written by an earlier version")), 60)
    intern = Principal(key_id="k2", team="ml", access=RESTRICTED)
    assert await fetch(cache, Principal(key_id="k1", team="ml"), "x", ()) == ("written by an earlier version", "hit")
    assert await fetch(cache, intern, "fresh", ("gpt-4o-mini",)) == ("fresh", "miss")


def _framed(message: pb.CreateChatCompletionResponse) -> bytes:
    raw = message.SerializeToString()
    return len(raw).to_bytes(4, "little") + raw
