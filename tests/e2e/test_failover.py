"""Before the first byte, a failing target gives way to the next one, then to the model's fallbacks."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import openai
import pytest

from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.conftest import UPSTREAM_KEY, RunningGateway, StartGateway

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def second() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=UPSTREAM_KEY, chunks=4) as fake:
        yield fake


def two_backend_config(first: str, second: str) -> str:
    return f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
backends:
  - {{name: a, provider: openai, base_url: "{first}", api_key: {UPSTREAM_KEY}, read_timeout: 500ms}}
  - {{name: b, provider: vllm, base_url: "{second}", api_key: {UPSTREAM_KEY}, read_timeout: 500ms}}
models:
  # All the weight on `a`: it is always tried first, so a failure there must move on to `b`.
  - {{name: balanced, targets: [{{backend: a, model: gpt-4o-mini, weight: 1000000}}, {{backend: b, model: qwen}}]}}
  - {{name: primary, targets: [{{backend: a, model: gpt-4o-mini}}], fallback: [backup]}}
  - {{name: backup, targets: [{{backend: b, model: qwen}}]}}
  - {{name: lonely, targets: [{{backend: a, model: gpt-4o-mini}}]}}
"""


@pytest.fixture
async def gateway2(start_gateway: StartGateway, upstream: FakeOpenAI, second: FakeOpenAI) -> RunningGateway:
    return await start_gateway(two_backend_config(upstream.base_url, second.base_url))


def client(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, timeout=10)


@pytest.mark.parametrize(
    "fault",
    [Fault(status=503), Fault(status=500), Fault(status=429, retry_after="1"), Fault(reset=True), Fault(hang=2)],
    ids=["503", "500", "429", "reset", "timeout"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_next_target_answers(
    gateway2: RunningGateway, upstream: FakeOpenAI, second: FakeOpenAI, fault: Fault, stream: bool
) -> None:
    upstream.add_fault(fault)
    api = client(gateway2)
    if stream:
        chunks = [c async for c in await api.chat.completions.create(model="balanced", messages=MESSAGES, stream=True)]  # type: ignore[arg-type]
        model = chunks[0].model
    else:
        model = (await api.chat.completions.create(model="balanced", messages=MESSAGES)).model  # type: ignore[arg-type]
    assert model == "qwen", "the second target answered"
    assert len(upstream.requests) == 1
    assert len(second.requests) == 1


async def test_fallback_model(gateway2: RunningGateway, upstream: FakeOpenAI, second: FakeOpenAI) -> None:
    upstream.add_fault(Fault(status=502))
    completion = await client(gateway2).chat.completions.create(model="primary", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.model == "qwen"
    assert second.requests[-1].json["model"] == "qwen"


async def test_client_errors_do_not_fail_over(
    gateway2: RunningGateway, upstream: FakeOpenAI, second: FakeOpenAI
) -> None:
    upstream.add_fault(Fault(status=400, error_type="invalid_request_error", message="bad tool schema"))
    with pytest.raises(openai.BadRequestError):
        await client(gateway2).chat.completions.create(model="balanced", messages=MESSAGES)  # type: ignore[arg-type]
    assert second.requests == [], "a request the provider rejects would be rejected anywhere"


async def test_every_target_failing(gateway2: RunningGateway, upstream: FakeOpenAI, second: FakeOpenAI) -> None:
    upstream.add_fault(Fault(status=503))
    second.add_fault(Fault(status=503, retry_after="5"))
    with pytest.raises(openai.InternalServerError) as info:
        await client(gateway2).chat.completions.create(model="primary", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.status_code == 503
    assert "All 2 attempts for model 'primary' failed" in info.value.message
    assert info.value.response.headers["retry-after"] == "5"


async def test_single_target_error_is_passed_through(gateway2: RunningGateway, upstream: FakeOpenAI) -> None:
    upstream.add_fault(Fault(status=429, retry_after="2"))
    with pytest.raises(openai.RateLimitError) as info:
        await client(gateway2).chat.completions.create(model="lonely", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.response.headers["retry-after"] == "2"


# ---------------------------------------------------------------------------------------------------- resilience
# Short ejections and timeouts so each scenario's recovery is measured in about a second.

RESILIENT = """
routing:
  retry: {{attempts_per_target: 2, attempt_timeout: 300ms, deadline: 5s, backoff_base: 10ms, backoff_max: 50ms,
          retry_after_max: 2s}}
  health: {{consecutive_failures: 3, ejection_base: 1s, ejection_max: 4s}}
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
backends:
  - {{name: a, provider: openai, base_url: "{first}", api_key: {key}, read_timeout: 500ms}}
  - {{name: b, provider: vllm, base_url: "{second}", api_key: {key}, read_timeout: 500ms}}
models:
  - {{name: balanced, targets: [{{backend: a, model: gpt-4o-mini, weight: 1000000}}, {{backend: b, model: qwen}}]}}
  - {{name: lonely, targets: [{{backend: a, model: gpt-4o-mini}}]}}
  - name: fastest
    balancing: latency
    targets: [{{backend: a, model: gpt-4o-mini}}, {{backend: b, model: qwen}}]
  - name: tiered
    targets: [{{backend: a, model: gpt-4o-mini, priority: 0}}, {{backend: b, model: qwen, priority: 1}}]
"""


@pytest.fixture
async def resilient(start_gateway: StartGateway, upstream: FakeOpenAI, second: FakeOpenAI) -> RunningGateway:
    return await start_gateway(RESILIENT.format(first=upstream.base_url, second=second.base_url, key=UPSTREAM_KEY))


async def ask(gateway: RunningGateway, model: str) -> str:
    completion = await client(gateway).chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
    return completion.model


async def test_an_outage_ejects_the_target_and_it_comes_back_when_healthy(
    resilient: RunningGateway, upstream: FakeOpenAI, second: FakeOpenAI
) -> None:
    upstream.add_fault(Fault(status=500, times=1000))
    served = [await ask(resilient, "balanced") for _ in range(10)]
    assert served == ["qwen"] * 10, "no client error while a healthy target exists"
    # Three failures in a row eject `a`: the other seven requests never touch it. Each of the three failed once and
    # moved on to `b` (a second try on `a` would wait behind `b`, which answered).
    assert len(upstream.requests) == 3
    assert len(second.requests) == 10
    upstream.faults.clear()  # the outage ends
    ended = time.monotonic()
    served = [await ask(resilient, "balanced")]
    while served[-1] != "gpt-4o-mini":  # polls: what is measured is the gateway's own recovery
        await asyncio.sleep(0.02)
        served.append(await ask(resilient, "balanced"))
    recovered = time.monotonic() - ended
    assert recovered < 1.0 + 0.5, "back within the ejection time (1 s) plus scheduling slack"
    assert len(upstream.requests) == 4, "one half-open probe, and it succeeded"


async def test_every_target_ejected_is_a_503_naming_the_model_with_retry_after(
    resilient: RunningGateway, upstream: FakeOpenAI, second: FakeOpenAI
) -> None:
    upstream.add_fault(Fault(status=500, times=1000))
    second.add_fault(Fault(status=502, times=1000))
    for _ in range(3):
        with pytest.raises(openai.APIStatusError):
            await ask(resilient, "balanced")
    attempts = len(upstream.requests) + len(second.requests)
    with pytest.raises(openai.InternalServerError) as info:
        await ask(resilient, "balanced")
    assert info.value.status_code == 503
    assert "No healthy target for model 'balanced'" in info.value.message
    assert info.value.response.headers["retry-after"] == "1"  # what is left of the 1 s ejection, rounded up
    assert len(upstream.requests) + len(second.requests) == attempts, "nothing was sent upstream"


async def test_a_429_with_retry_after_is_waited_for_within_the_deadline(
    resilient: RunningGateway, upstream: FakeOpenAI
) -> None:
    upstream.add_fault(Fault(status=429, retry_after="1"))
    started = time.monotonic()
    assert await ask(resilient, "lonely") == "gpt-4o-mini"
    assert time.monotonic() - started >= 1.0
    assert len(upstream.requests) == 2


async def test_a_hang_is_cut_by_the_attempt_timeout(
    resilient: RunningGateway, upstream: FakeOpenAI, second: FakeOpenAI
) -> None:
    upstream.add_fault(Fault(hang=5))
    started = time.monotonic()
    assert await ask(resilient, "balanced") == "qwen"
    assert time.monotonic() - started < 1.0, "300 ms attempt timeout, not the 5 s hang"
    assert (len(upstream.requests), len(second.requests)) == (1, 1)


async def test_a_reset_and_a_503_burst_never_reach_the_client(
    resilient: RunningGateway, upstream: FakeOpenAI, second: FakeOpenAI
) -> None:
    upstream.add_fault(Fault(reset=True))
    upstream.add_fault(Fault(status=503))
    assert [await ask(resilient, "balanced") for _ in range(3)] == ["qwen", "qwen", "gpt-4o-mini"]
    assert (len(upstream.requests), len(second.requests)) == (3, 2)


async def test_latency_balancing_moves_traffic_off_a_slow_backend(
    resilient: RunningGateway, upstream: FakeOpenAI, second: FakeOpenAI
) -> None:
    upstream.latency = 0.2  # `a` browns out: every answer takes 200 ms
    served = [await ask(resilient, "fastest") for _ in range(30)]
    # Power of two choices between two targets always compares both: once `a`'s first slow answer is seen, `b` is
    # cheaper until `a`'s estimate decays (10 s), so `a` gets at most the first request or two.
    assert served.count("gpt-4o-mini") <= 2
    assert served[-20:] == ["qwen"] * 20


async def test_the_second_tier_serves_only_while_the_first_is_down(
    resilient: RunningGateway, upstream: FakeOpenAI, second: FakeOpenAI
) -> None:
    assert {await ask(resilient, "tiered") for _ in range(5)} == {"gpt-4o-mini"}
    assert second.requests == []
    upstream.add_fault(Fault(status=500, times=3))
    assert [await ask(resilient, "tiered") for _ in range(5)] == ["qwen"] * 5
    assert len(upstream.requests) == 5 + 3, "ejected after three failures: tier 1 is not tried again yet"
    await asyncio.sleep(1.05)
    assert await ask(resilient, "tiered") == "gpt-4o-mini"


async def test_a_stall_after_the_first_byte_is_an_in_band_error(
    resilient: RunningGateway, upstream: FakeOpenAI, second: FakeOpenAI
) -> None:
    upstream.add_fault(Fault(stall_after_chunks=2))
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        stream = await client(resilient).chat.completions.create(model="balanced", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "did not answer in time" in info.value.message
    assert len(got) >= 2, "the chunks before the stall reached the client"
    assert second.requests == [], "after the first byte there is no failing over"


async def test_a_429_rests_the_target_for_its_retry_after_while_others_serve(
    resilient: RunningGateway, upstream: FakeOpenAI, second: FakeOpenAI
) -> None:
    upstream.add_fault(Fault(status=429, retry_after="1"))
    asked = time.monotonic()
    assert await ask(resilient, "balanced") == "qwen", "`a` answered 429: the attempt moved on to `b`"
    answered = time.monotonic()
    # The rest began between `asked` and `answered` (when the gateway had the 429), so it lasts until `asked + 1` at
    # least and ends by `answered + 1`: a request answered before the first was routed while `a` rested, however slow
    # the machine; one answered after may have gone to `a` already, and proves nothing.
    during = []
    for _ in range(3):
        model, sent_to_a = await ask(resilient, "balanced"), len(upstream.requests)
        if time.monotonic() >= asked + 1.0:
            break
        during.append((model, sent_to_a))
    assert during == [("qwen", 1)] * len(during), "resting: `a` is not asked again before its Retry-After"
    await asyncio.sleep(max(0.0, answered + 1.0 - time.monotonic()))
    asked_again = len(upstream.requests)
    assert await ask(resilient, "balanced") == "gpt-4o-mini", "the rest is over: `a` (nearly all the weight) serves"
    assert len(upstream.requests) == asked_again + 1


DECAYING = RESILIENT.replace("ejection_max: 4s}}", "ejection_max: 4s, latency_decay: 200ms}}")


async def test_a_backend_that_recovers_from_a_brown_out_gets_traffic_back(
    start_gateway: StartGateway, upstream: FakeOpenAI, second: FakeOpenAI
) -> None:
    assert DECAYING != RESILIENT
    gateway = await start_gateway(DECAYING.format(first=upstream.base_url, second=second.base_url, key=UPSTREAM_KEY))
    upstream.latency = 0.2
    served = [await ask(gateway, "fastest") for _ in range(10)]
    # `a` is retried now and then as its estimate decays, but the brown-out keeps it a small share.
    assert served.count("gpt-4o-mini") <= 3, served
    upstream.latency = 0.0  # the brown-out ends
    ended = time.monotonic()
    while (await ask(gateway, "fastest")) != "gpt-4o-mini":
        assert time.monotonic() - ended < 3.0, "the slow estimate decays (200 ms time constant) and `a` is retried"
    recovered = time.monotonic() - ended
    # 200 ms decays to below the fast backend's few ms in about 0.2 s * ln(200 / 2) ≈ 0.9 s.
    assert recovered < 2.0
    # What is left of the brown-out in `a`'s estimate decays with time, not with requests: three more time constants
    # divide it by twenty. Then `a` is no longer an occasional probe: it serves whenever its estimate is the lower,
    # a share that follows the two backends' jitter (6 to 28 of 40 seen; a starved `a` would get none or one).
    await asyncio.sleep(0.6)
    shares = Counter([await ask(gateway, "fastest") for _ in range(40)])
    assert shares["gpt-4o-mini"] >= 4, shares
