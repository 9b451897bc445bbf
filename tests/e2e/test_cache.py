"""The response cache through the whole gateway, in both modes (one process, and split over gRPC), driven by the
openai SDK and raw HTTP: hits and misses, the control headers, stream replay byte for byte, stampedes collapsed to
one upstream call, failures never stored or shared, hits metered as requests only."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest
import redis

from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.conftest import RunningGateway, StartGateway, config_for
from tests.redis_support import start_redis_server

MESSAGES: Any = [{"role": "user", "content": "Say hello."}]
_PLAIN = "{name: gpt-4o-mini, targets: [{backend: primary, model: gpt-4o-mini}]}"


def cached(upstream: FakeOpenAI, cache: str = "{ttl: 10m}", *, extra: str = "", read_timeout: str = "5s") -> str:
    """The test config with a cache on gpt-4o-mini."""
    text = config_for(upstream.base_url, extra=extra, read_timeout=read_timeout)
    return text.replace(_PLAIN, _PLAIN[:-1] + f", cache: {cache}}}")


def sdk(gateway: RunningGateway, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)


def upstream_chats(upstream: FakeOpenAI) -> int:
    return sum(1 for r in upstream.requests if r.path == "/v1/chat/completions")


async def ask(client: openai.AsyncOpenAI, **kwargs: Any) -> tuple[str, str]:
    """The answer's text and its cache status."""
    options: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0, **kwargs}
    raw = await client.chat.completions.with_raw_response.create(**options)
    return raw.parse().choices[0].message.content or "", raw.headers.get("x-tollgate-cache", "")


async def test_the_second_identical_request_is_a_hit(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    client = sdk(await start_gateway(cached(upstream)))
    first, status1 = await ask(client)
    second, status2 = await ask(client, user="someone-else")  # `user` does not change the answer
    assert (status1, status2) == ("miss", "hit")
    assert first == second and first
    assert upstream_chats(upstream) == 1
    _, other = await ask(client, messages=[{"role": "user", "content": "Say goodbye."}])
    assert other == "miss" and upstream_chats(upstream) == 2


async def test_only_requests_that_can_be_answered_again_are_cached_unless_forced(
    start_gateway: StartGateway, upstream: FakeOpenAI
) -> None:
    client = sdk(await start_gateway(cached(upstream)))
    options: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES}  # no temperature: OpenAI's 1
    for _ in range(2):
        raw = await client.chat.completions.with_raw_response.create(**options)
        assert raw.headers["x-tollgate-cache"] == "bypass"
    assert upstream_chats(upstream) == 2
    force = {"x-tollgate-cache": "force"}
    statuses = []
    for _ in range(2):
        raw = await client.chat.completions.with_raw_response.create(**options, extra_headers=force)
        statuses.append(raw.headers["x-tollgate-cache"])
    assert statuses == ["miss", "hit"] and upstream_chats(upstream) == 3


async def test_a_model_without_cache_says_nothing(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    client = sdk(await start_gateway(config_for(upstream.base_url)))
    for _ in range(2):
        _, status = await ask(client)
        assert status == ""
    assert upstream_chats(upstream) == 2


async def test_cache_control_no_cache_refreshes_and_no_store_bypasses(
    start_gateway: StartGateway, upstream: FakeOpenAI
) -> None:
    client = sdk(await start_gateway(cached(upstream)))
    await ask(client)
    _, status = await ask(client, extra_headers={"Cache-Control": "no-store"})
    assert status == "bypass" and upstream_chats(upstream) == 2
    _, status = await ask(client, extra_headers={"Cache-Control": "max-age=0, no-cache"})
    assert status == "miss" and upstream_chats(upstream) == 3
    _, status = await ask(client)
    assert status == "hit" and upstream_chats(upstream) == 3


async def sse(session: aiohttp.ClientSession, gateway: RunningGateway, body: dict[str, Any]) -> tuple[bytes, str]:
    async with session.post(f"{gateway.base_url}/chat/completions", json=body) as response:
        assert response.status == 200
        return await response.read(), response.headers.get("x-tollgate-cache", "")


async def test_a_stream_replays_byte_for_byte(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    gateway = await start_gateway(cached(upstream))
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0, "stream": True}
    async with aiohttp.ClientSession() as session:
        first, status1 = await sse(session, gateway, body)
        second, status2 = await sse(session, gateway, body)
        # The usage chunk is stored too, and reaches only a client that asks for it.
        with_usage, status3 = await sse(session, gateway, {**body, "stream_options": {"include_usage": True}})
    assert (status1, status2, status3) == ("miss", "hit", "hit")
    # The replay keeps the original id and created: it is the same answer, and the bytes are the same.
    assert second == first
    assert first.count(b"data: ") == 8 + 2 + 1  # role, 8 pieces, finish, [DONE]
    assert first.endswith(b"data: [DONE]\n\n") and b'"usage"' not in first
    assert with_usage.startswith(first[: first.rindex(b"data: [DONE]")]) and b'"usage":{' in with_usage
    assert upstream_chats(upstream) == 1


async def test_a_stored_stream_answers_a_plain_request_and_the_other_way_round(
    start_gateway: StartGateway, upstream: FakeOpenAI
) -> None:
    client = sdk(await start_gateway(cached(upstream)))
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0, stream=True)
    streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    folded, status = await ask(client)
    assert status == "hit" and folded == streamed
    other: Any = [{"role": "user", "content": "Another question."}]
    plain, _ = await ask(client, messages=other)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=other, temperature=0, stream=True
    )
    assert raw.headers["x-tollgate-cache"] == "hit"
    chunks = [c async for c in raw.parse()]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert upstream_chats(upstream) == 2


async def test_a_hundred_concurrent_identical_requests_make_one_upstream_call(
    start_gateway: StartGateway, upstream: FakeOpenAI
) -> None:
    client = sdk(await start_gateway(cached(upstream)))
    upstream.latency = 0.2  # the first is still upstream while the others arrive
    streams = {"stream": True}
    results = await asyncio.gather(
        *(ask(client) for _ in range(80)),
        *(_streamed(client, **streams) for _ in range(20)),
    )
    assert upstream_chats(upstream) == 1
    assert len({text for text, _ in results}) == 1
    statuses = [status for _, status in results]
    assert statuses.count("miss") == 1 and statuses.count("hit") == 99


async def _streamed(client: openai.AsyncOpenAI, **_: Any) -> tuple[str, str]:
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, temperature=0, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    return text, raw.headers["x-tollgate-cache"]


async def test_a_failed_leader_shares_its_error_with_nobody(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    client = sdk(await start_gateway(cached(upstream)))
    upstream.latency = 0.2
    upstream.add_fault(Fault(status=400, error_type="invalid_request_error", message="the leader's own failure"))
    results = await asyncio.gather(*(ask(client) for _ in range(5)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], openai.BadRequestError)
    statuses = sorted(status for r in results if not isinstance(r, BaseException) for _, status in [r])
    assert statuses == ["hit", "hit", "hit", "miss"]  # the next waiter led, the others waited for it
    assert upstream_chats(upstream) == 2


async def test_a_stream_cut_short_is_not_stored(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    gateway = await start_gateway(cached(upstream, read_timeout="300ms"))
    upstream.add_fault(Fault(stall_after_chunks=3))
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0, "stream": True}
    async with aiohttp.ClientSession() as session:
        cut, status = await sse(session, gateway, body)
        assert status == "miss" and b'"error"' in cut  # the in-band error event
        whole, status = await sse(session, gateway, body)
        assert status == "miss" and b'"error"' not in whole
        _, status = await sse(session, gateway, body)
        assert status == "hit"
    assert upstream_chats(upstream) == 2


async def test_an_upstream_error_is_not_stored(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    client = sdk(await start_gateway(cached(upstream)))
    upstream.add_fault(Fault(status=400, error_type="invalid_request_error"))
    with pytest.raises(openai.BadRequestError):
        await ask(client)
    _, status = await ask(client)
    assert status == "miss" and upstream_chats(upstream) == 2


async def test_a_hit_counts_as_a_request_and_no_tokens(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    rules = "limits:\n  rules:\n    - {per: global, requests: 100, tokens: 100000, window: 24h}"
    client = sdk(await start_gateway(cached(upstream, extra=rules)))
    remaining: list[tuple[int, int]] = []
    for _ in range(4):
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, temperature=0
        )
        headers = raw.headers
        remaining.append((int(headers["x-ratelimit-remaining-requests"]), int(headers["x-ratelimit-remaining-tokens"])))
        await asyncio.sleep(0.05)  # settlement runs in the background once a request ends
    requests, tokens = zip(*remaining, strict=True)
    assert requests == (99, 98, 97, 96)
    # Each figure is taken after the request's own estimate (about 260 tokens here) was charged; a hit gives its
    # estimate back in full, so after the miss the figure moves only by the window's refill (a token or two).
    assert abs(tokens[2] - tokens[1]) <= 2 and abs(tokens[3] - tokens[2]) <= 2
    assert 0 < tokens[0] - tokens[1] < 100  # the miss was trued up to its real usage: a dozen tokens


async def _stored_in(url: str, prefix: str, count: int) -> None:
    """Wait for the background writes to Redis."""
    client = redis.Redis.from_url(url)
    try:
        async with asyncio.timeout(5):
            while len(list(client.scan_iter(match=f"{prefix}:*"))) < count:  # noqa: ASYNC110  # polling is the point
                await asyncio.sleep(0.02)
    finally:
        client.close()


async def test_replicas_share_answers_through_redis(
    start_gateway: StartGateway, upstream: FakeOpenAI, redis_url: str, redis_namespace: str
) -> None:
    shared = f"redis: {redis_url}\ncache: {{redis: true, key_prefix: {redis_namespace}, compress_over: 64}}"
    one = sdk(await start_gateway(cached(upstream, extra=shared)))
    two = sdk(await start_gateway(cached(upstream, extra=shared)))
    text, status = await ask(one)
    assert status == "miss"
    await _stored_in(redis_url, redis_namespace, 1)
    assert await ask(two) == (text, "hit")
    assert upstream_chats(upstream) == 1


async def test_redis_down_leaves_the_in_process_tier_and_fails_nothing(
    start_gateway: StartGateway, upstream: FakeOpenAI
) -> None:
    server = start_redis_server()
    try:
        extra = f"redis: {server.url}\ncache: {{redis: true, redis_timeout: 200ms, key_prefix: tollgate-test:down}}"
        client = sdk(await start_gateway(cached(upstream, extra=extra)))
        text, _ = await ask(client)
        server.stop()
        assert await ask(client) == (text, "hit")  # from L1
        other: Any = [{"role": "user", "content": "Another question."}]
        statuses = [(await ask(client, messages=other))[1] for _ in range(2)]
        assert statuses == ["miss", "hit"]  # Redis cannot answer: a miss, stored in L1 alone, then an L1 hit
        for i in range(4):  # enough failures in a row to count Redis as down: still every request answered
            _, status = await ask(client, messages=[{"role": "user", "content": f"More {i}"}])
            assert status == "miss"
        assert upstream_chats(upstream) == 1 + 1 + 4
    finally:
        server.stop()
