"""The cache files an answer under the model and experiment arm that served it, not under the name asked for: a
route rule or an experiment that sends the same request elsewhere never gets another route's answer."""

from __future__ import annotations

from typing import Any

import openai

from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import StartGateway, config_for

MESSAGES: Any = [{"role": "user", "content": "Say hello."}]
# `chat` is served by the fake OpenAI (model gpt-4o-mini), `chat-b` by the built-in mock (tollgate-demo); both cache
# for everyone (scope global), so only routing can keep their answers apart.
MODELS = """\
  - {name: chat, targets: [{backend: primary, model: gpt-4o-mini}], cache: {ttl: 10m, scope: global}}
  - {name: chat-b, targets: [{backend: demo, model: tollgate-demo}], cache: {ttl: 10m, scope: global}}
  - name: trial
    targets: [{backend: primary, model: gpt-4o-mini}]
    experiment: {name: t, share: 0.5, key: "header:x-user", targets: [{backend: demo, model: tollgate-demo}]}
    cache: {ttl: 10m, scope: global}
"""
ROUTES = "routes:\n  - {name: team-b, to: chat-b, match: {model: chat, headers: {x-team: b}}}"


def config(upstream: FakeOpenAI) -> str:
    return config_for(upstream.base_url, extra=ROUTES).replace("models:\n", "models:\n" + MODELS)


async def ask(client: openai.AsyncOpenAI, model: str, headers: dict[str, str]) -> tuple[str, str]:
    """Which provider model answered, and the cache status."""
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, temperature=0, extra_headers=headers
    )
    return raw.parse().model, raw.headers.get("x-tollgate-cache", "")


async def test_a_route_rule_never_gets_another_routes_answer(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    gateway = await start_gateway(config(upstream))
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    assert await ask(client, "chat", {}) == ("gpt-4o-mini", "miss")
    assert await ask(client, "chat", {}) == ("gpt-4o-mini", "hit")
    # The same request, routed to chat-b by the rule: chat-b's own answer, then chat-b's cached one.
    assert await ask(client, "chat", {"x-team": "b"}) == ("tollgate-demo", "miss")
    assert await ask(client, "chat", {"x-team": "b"}) == ("tollgate-demo", "hit")
    assert await ask(client, "chat", {}) == ("gpt-4o-mini", "hit")


async def test_experiment_arms_never_share_answers(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    gateway = await start_gateway(config(upstream))
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    seen: dict[str, list[str]] = {}  # provider model -> cache statuses, in order
    for user in range(20):
        model, status = await ask(client, "trial", {"x-user": f"user-{user}"})
        seen.setdefault(model, []).append(status)
    # Both arms answered (20 users hashed into two arms: one arm only has p = 2^-19), each from its own targets,
    # and each arm missed once and then hit its own entry.
    assert set(seen) == {"gpt-4o-mini", "tollgate-demo"}
    for statuses in seen.values():
        assert statuses[0] == "miss"
        assert set(statuses[1:]) <= {"hit"}
