"""Limits through the whole gateway, in both modes: 429s shaped like OpenAI's, `x-ratelimit-*` on every answer,
token estimates trued up, concurrency held, budgets spent, and the Redis backend shared by several engines."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp
import openai
import pytest

from gateway.assemble import assemble
from gateway.call import CallContext
from gateway.config import Secret, parse_config
from gateway.engine.core import EngineCore
from gateway.errors import RateLimitError
from gateway.grpc_server import start_grpc_server
from gateway.testing.fake_openai import FakeOpenAI
from tests.auth.test_authenticator import ScriptedAuth
from tests.conftest import RunningGateway, StartGateway, config_for
from tests.redis_support import start_redis_server
from tollgate.auth.v1 import auth_pb2, auth_pb2_grpc
from tollgate.gateway.v1 import gateway_pb2 as pb

AUTH_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
MESSAGES: Any = [{"role": "user", "content": "Say hello."}]


def limited(upstream: FakeOpenAI, rules: str, extra: str = "") -> str:
    """The test config with a `limits:` section."""
    return config_for(upstream.base_url) + f"\nlimits:\n  rules:\n{rules}\n{extra}"


def sdk(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)


async def settled() -> None:
    """Settlement runs in the background once a request ends: give it a moment."""
    await asyncio.sleep(0.05)


async def test_requests_limit_answers_like_openai(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    gateway = await start_gateway(
        limited(upstream, "    - {per: model, match: {model: demo}, requests: 3, window: 1h}")
    )
    client = sdk(gateway)
    remaining = []
    for _ in range(3):
        raw = await client.chat.completions.with_raw_response.create(model="demo", messages=MESSAGES)
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
        assert raw.headers["x-ratelimit-reset-requests"].endswith(("s", "ms"))
    assert remaining == ["2", "1", "0"]
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="demo", messages=MESSAGES)
    error = caught.value
    assert error.status_code == 429
    assert error.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert "model 'demo'" in error.message
    assert 1000 <= int(error.response.headers["retry-after"]) <= 1200  # one request frees up every 20 minutes
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    # Other models are not limited by the rule.
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


async def test_streams_carry_the_headers_too(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    gateway = await start_gateway(limited(upstream, "    - {per: global, requests: 10, tokens: 100000}"))
    async with aiohttp.ClientSession() as session:
        body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
        async with session.post(gateway.base_url + "/chat/completions", json=body) as resp:
            assert resp.status == 200
            assert resp.headers["x-ratelimit-remaining-requests"] == "9"
            assert int(resp.headers["x-ratelimit-remaining-tokens"]) < 100000
            await resp.read()


async def test_token_estimates_are_trued_up(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    gateway = await start_gateway(
        limited(upstream, "    - {per: model, match: {model: gpt-4o-mini}, tokens: 1000, window: 1h}")
    )
    client = sdk(gateway)
    # Charged ~400 up front, but the answer used far fewer: the difference is handed back when it ends.
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=400)
    await settled()
    # Without the true-up only ~600 would be left and this ~900-token estimate would be refused.
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=900)
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 100
    await settled()
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=1001)


async def test_concurrency_is_held_until_a_stream_ends(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    gateway = await start_gateway(limited(upstream, "    - {per: model, match: {model: gpt-4o-mini}, concurrent: 2}"))
    upstream.chunks, upstream.chunk_delay = 20, 0.02
    client = sdk(gateway)
    first = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    second = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    with pytest.raises(openai.RateLimitError, match="concurrent"):
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    async for _ in first:
        pass
    await settled()
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # a slot is free again
    async for _ in second:
        pass


async def test_redis_unreachable_fails_closed_quickly_or_open_by_policy(
    start_gateway: StartGateway, upstream: FakeOpenAI
) -> None:
    rules = "    - {per: global, requests: 100}"
    closed = await start_gateway(
        "redis: redis://127.0.0.1:1/0\n" + limited(upstream, rules, "  backend: redis\n  on_redis_error: closed")
    )
    with pytest.raises(openai.InternalServerError) as caught:
        await asyncio.wait_for(sdk(closed).chat.completions.create(model="demo", messages=MESSAGES), 5)
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "limits_unavailable"  # type: ignore[index]
    opened = await start_gateway(
        "redis: redis://127.0.0.1:1/0\n" + limited(upstream, rules, "  backend: redis\n  on_redis_error: open")
    )
    for _ in range(3):
        await asyncio.wait_for(sdk(opened).chat.completions.create(model="demo", messages=MESSAGES), 5)


async def test_engines_sharing_redis_admit_exactly_the_limit(
    redis_url: str, redis_namespace: str, upstream: FakeOpenAI
) -> None:
    """Three engines (standing in for replicas: separate limiters and pools) hammered at once: exactly 30 pass."""
    prefix = redis_namespace
    text = f"redis: {redis_url}\n" + limited(
        upstream,
        "    - {per: model, match: {model: demo}, requests: 30, window: 1h}",
        f"  backend: redis\n  on_redis_error: closed\n  redis_timeout: 2s\n  redis_prefix: '{prefix}'",
    )
    config = parse_config(text, os.environ)
    engines = [assemble(config).engine for _ in range(3)]
    params = pb.ChatCompletionParams(model="demo", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hi")])

    async def one(engine: EngineCore, i: int) -> bool:
        try:
            await engine.create_chat_completion(params, CallContext(request_id=f"r{i}", api_key=Secret("x")))
        except RateLimitError:
            return False
        return True

    try:
        for engine in engines:
            await engine.start()
        results = await asyncio.gather(*(one(engines[i % 3], i) for i in range(120)))
    finally:
        for engine in engines:
            await engine.close()
    assert sum(results) == 30


async def _attempt(client: openai.AsyncOpenAI) -> tuple[bool, float, dict[str, str]]:
    """One request: (admitted, answered at, its x-ratelimit headers)."""
    try:
        raw = await client.chat.completions.with_raw_response.create(model="demo", messages=MESSAGES)
    except openai.RateLimitError as exc:
        return False, time.monotonic(), dict(exc.response.headers)
    return True, time.monotonic(), dict(raw.headers)


def _seconds(reset: str) -> float:
    """An `x-ratelimit-reset-*` value below a minute (`250ms`, `1s`) in seconds."""
    return int(reset.removesuffix("ms")) / 1000 if reset.endswith("ms") else float(reset.removesuffix("s"))


async def test_a_window_refills_on_time(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    # 2 per second is GCRA with T = 0.5 s: a burst of 2 from idle, then one request's worth back every T. When a
    # request arrives is the machine's to decide, so each step below holds whatever the timing: an admission asserted
    # is due by then for sure; a denial is asserted when the request is known to have arrived before the refill (it
    # was answered before the earliest moment the limiter's own reset header allows).
    gateway = await start_gateway(
        limited(upstream, "    - {per: model, match: {model: demo}, requests: 2, window: 1s}")
    )
    client = sdk(gateway)
    for round_ in range(10):
        sent = time.monotonic()
        answers = await asyncio.gather(*(_attempt(client) for _ in range(3)))
        admitted = sorted(ok for ok, _, _ in answers)
        if round_ == 0:
            assert admitted.count(True) >= 2, "from idle the burst of 2 passes"
            if max(answered for _, answered, _ in answers) - sent < 0.5:
                assert admitted == [False, True, True], "all three came within T: no refill between them"
        if not admitted[0]:
            break
    assert not admitted[0], "three requests at a time outrun a refill of one every 0.5 s"
    denial = next(headers for ok, _, headers in answers if not ok)
    assert denial["x-ratelimit-remaining-requests"] == "0"
    assert 0.5 < _seconds(denial["x-ratelimit-reset-requests"]) <= 1.0
    # Each answer's reset is when the bucket is full again, counted from its arrival (after `sent`, before it was
    # answered; rounded up to the millisecond); the last arrival's is the latest. One request's worth is back T before.
    full_by = max(answered + _seconds(headers["x-ratelimit-reset-requests"]) for _, answered, headers in answers)
    full_not_before = max(sent + _seconds(headers["x-ratelimit-reset-requests"]) - 0.001 for _, _, headers in answers)
    await asyncio.sleep(max(0.0, full_by - 0.5 - time.monotonic()))
    ok, answered, headers = await _attempt(client)
    assert ok, "one request's worth has dripped back"
    if answered < full_not_before:  # it came before a second request's worth: only the one was back
        assert headers["x-ratelimit-remaining-requests"] == "0"
    ok, answered, _ = await _attempt(client)
    if answered < full_not_before:
        assert not ok, "the refill was one request's worth, not more"


async def test_redis_killed_mid_load_fails_open_then_recovers(
    start_gateway: StartGateway, upstream: FakeOpenAI
) -> None:
    """Our own redis-server (never the shared one): killed under load, then started again on the same port."""
    server = start_redis_server()
    try:
        gateway = await start_gateway(
            f"redis: {server.url}\n"
            + limited(
                upstream,
                "    - {per: model, match: {model: demo}, requests: 1000000}",
                "  backend: redis\n  on_redis_error: open\n  redis_timeout: 200ms",
            )
        )
        client = sdk(gateway)

        async def burst() -> list[str]:
            answers = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        client.chat.completions.with_raw_response.create(model="demo", messages=MESSAGES)
                        for _ in range(20)
                    )
                ),
                10,  # no request may hang on a dead Redis
            )
            return [raw.headers["x-ratelimit-remaining-requests"] for raw in answers]

        assert len(await burst()) == 20
        server.stop()
        assert len(await burst()) == 20  # failing open: each process limits on its own meanwhile
        server.start()
        await asyncio.sleep(1.2)  # the limiter tries Redis again at most once a second
        await burst()
        remaining = await burst()
        # Back on Redis: the fresh server's counter started from zero, so fewer than 41 requests are counted there.
        assert min(int(r) for r in remaining) >= 1000000 - 41
    finally:
        server.stop()


async def test_a_keys_own_limits_and_budget_come_from_its_auth_decision(
    start_gateway: StartGateway, upstream: FakeOpenAI
) -> None:
    budget = auth_pb2.Budget(limit_usd=0.0001, period=auth_pb2.BUDGET_PERIOD_DAY)
    servicer = ScriptedAuth(
        answer=lambda request: auth_pb2.CheckResponse(
            key_id=request.api_key[-2:],
            limits=auth_pb2.Limits(requests_per_minute=3, budget=budget if request.api_key.endswith("b1") else None),
        )
    )
    server = await start_grpc_server(
        "127.0.0.1:0", [(AUTH_SERVICE, lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, s))]
    )
    try:
        config = config_for(upstream.base_url).replace("auth: none", f'auth: {{server: "127.0.0.1:{server.port}"}}')
        gateway = await start_gateway(config + "\nprices: {gpt-4o-mini: {input: 100, output: 100}}\n")
        limited_key = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="tgk_r1", max_retries=0)
        for _ in range(3):
            await limited_key.chat.completions.create(model="demo", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError, match="requests for key 'r1'"):
            await limited_key.chat.completions.create(model="demo", messages=MESSAGES)

        spender = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="tgk_b1", max_retries=0)
        await spender.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # costs ~$0.002
        await settled()
        with pytest.raises(openai.RateLimitError) as caught:
            await spender.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert caught.value.body["code"] == "insufficient_quota"  # type: ignore[index]
        assert "spend budget for key 'b1'" in caught.value.message
    finally:
        await server.stop(0)
