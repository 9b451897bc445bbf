"""Route rules, aliases and experiments through the front door with the openai SDK, in one process and split:
the headers routing reads must cross the gRPC hop."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import openai
import pytest

from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import UPSTREAM_KEY, RunningGateway, StartGateway
from tests.e2e.test_auth_stats import Stack, eventually, stack  # noqa: F401 - `stack` is a fixture used by name

MESSAGES = [{"role": "user", "content": "hello"}]

CONFIG = """
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
backends:
  - {{name: a, provider: openai, base_url: "{first}", api_key: {key}}}
  - {{name: b, provider: vllm, base_url: "{second}", api_key: {key}}}
routes:
  - {{name: canary, to: big, match: {{model: "small*", headers: {{x-canary: "yes"}}}}}}
models:
  - name: small
    aliases: [small-latest]
    targets: [{{backend: a, model: gpt-4o-mini}}]
    experiment: {{name: try-qwen, share: 0.5, key: "header:x-session", targets: [{{backend: b, model: qwen}}]}}
  - {{name: big, targets: [{{backend: b, model: qwen-72b}}]}}
"""


@pytest.fixture
async def second() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=UPSTREAM_KEY, chunks=4) as fake:
        yield fake


@pytest.fixture
async def routed(start_gateway: StartGateway, upstream: FakeOpenAI, second: FakeOpenAI) -> RunningGateway:
    return await start_gateway(CONFIG.format(first=upstream.base_url, second=second.base_url, key=UPSTREAM_KEY))


async def ask(gateway: RunningGateway, model: str, **headers: str) -> str:
    api = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, timeout=10)
    completion = await api.chat.completions.create(model=model, messages=MESSAGES, extra_headers=headers)  # type: ignore[arg-type]
    return completion.model


async def test_a_header_rule_routes_to_another_model(routed: RunningGateway) -> None:
    assert await ask(routed, "small", **{"x-canary": "yes", "x-session": "s1"}) == "qwen-72b"
    assert await ask(routed, "small-latest", **{"x-canary": "yes"}) == "qwen-72b"
    assert await ask(routed, "small", **{"x-canary": "no", "x-session": "s1"}) in ("gpt-4o-mini", "qwen")


async def test_an_alias_is_listed_and_served(routed: RunningGateway) -> None:
    api = openai.AsyncOpenAI(base_url=routed.base_url, api_key="sk-client", max_retries=0)
    listed = [m.id async for m in api.models.list()]
    assert listed == ["small", "small-latest", "big"]
    assert await ask(routed, "small-latest", **{"x-session": "s2"}) in ("gpt-4o-mini", "qwen")


async def test_experiment_arms_are_sticky_per_session_and_near_the_share(routed: RunningGateway) -> None:
    sessions = [f"session-{i}" for i in range(40)]
    arms: dict[str, set[str]] = {s: set() for s in sessions}
    for _ in range(3):
        for session in sessions:
            arms[session].add(await ask(routed, "small", **{"x-session": session}))
    assert all(len(served) == 1 for served in arms.values()), "a session stays in its arm"
    shares = Counter(next(iter(served)) for served in arms.values())
    # 40 sessions at a 50% share: the binomial's 99.9% interval is about 10..30.
    assert 10 <= shares["qwen"] <= 30, shares


async def test_the_arm_reaches_the_stats_server_and_groups_usage(
    start_gateway: StartGateway,
    upstream: FakeOpenAI,
    stack: Stack,  # noqa: F811 - the fixture imported above, by name
) -> None:
    # The real auth server says who alice is; the experiment sticks to her user; the real stats server stores it.
    plain = "{name: gpt-4o-mini, targets: [{backend: primary, model: gpt-4o-mini}]}"
    tried = (
        "{name: gpt-4o-mini, targets: [{backend: primary, model: gpt-4o-mini}],"
        " experiment: {name: demo-trial, share: 0.5, key: user, targets: [{backend: demo, model: tollgate-demo}]}}"
    )
    text = stack.config(upstream)
    assert plain in text
    gateway = await start_gateway(text.replace(plain, tried))
    api = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=stack.keys["alice"], max_retries=0)
    served = {(await api.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)).model for _ in range(3)}
    assert len(served) == 1, "alice stays in one arm"
    await eventually(lambda: len(stack.rows()) == 3)
    rows = stack.rows()
    arms = {(row["experiment"], row["experiment_arm"], row["backend"]) for row in rows}
    assert len(arms) == 1
    ((experiment, arm, backend),) = arms
    assert experiment == "demo-trial"
    assert (arm, backend) in (("control", "primary"), ("treatment", "demo"))
    assert served == ({"tollgate-demo"} if arm == "treatment" else {"gpt-4o-mini"})
