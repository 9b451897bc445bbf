"""`ResponseCache` on its own, with the real Redis where a tier is involved: the cases the end-to-end tests cannot
stage (an auth server's odd decisions, damaged stored values)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest
import redis

from gateway.auth.principal import ANONYMOUS, Principal
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
