"""The Responses API with the real auth and stats servers, in both modes: keys, model access, owners, and one exact
usage record (tokens, cost, operation, stream flag) per call, on both paths (an OpenAI backend's Responses API, and
the mock through chat)."""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest

from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import RunningGateway
from tests.e2e.test_auth_stats import Stack, client, eventually, secured, stack  # noqa: F401 - fixtures used by name


async def test_keys_access_and_owners(secured: RunningGateway, stack: Stack) -> None:  # noqa: F811 - fixtures
    alice, bob = client(secured, stack.keys["alice"]), client(secured, stack.keys["bob"])
    with pytest.raises(openai.AuthenticationError):
        await client(secured, "sk-not-a-tollgate-key").responses.create(model="demo", input="hi")
    with pytest.raises(openai.PermissionDeniedError):  # bob may use demo only
        await bob.responses.create(model="gpt-4o-mini", input="hi")
    made = await alice.responses.create(model="gpt-4o-mini", input="hello there")
    with pytest.raises(openai.NotFoundError):
        await bob.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        await bob.responses.create(model="demo", input="hi", previous_response_id=made.id)
    with pytest.raises(openai.AuthenticationError):
        await client(secured, "sk-not-a-tollgate-key").responses.retrieve(made.id)
    assert (await alice.responses.retrieve(made.id)).output_text == made.output_text


async def test_usage_records_are_exact(
    secured: RunningGateway,  # noqa: F811 - a fixture
    stack: Stack,  # noqa: F811 - a fixture
    upstream: FakeOpenAI,
) -> None:
    api = client(secured, stack.keys["alice"])
    answers: dict[str, tuple[Any, bool]] = {}
    for model in ("gpt-4o-mini", "demo"):
        whole = await api.responses.create(
            model=model, input="hello there", extra_headers={"x-request-id": f"whole-{model}"}
        )
        answers[f"whole-{model}"] = (whole.usage, False)
        stream = await api.responses.create(
            model=model, input="hello there", stream=True, extra_headers={"x-request-id": f"stream-{model}"}
        )
        events = [event async for event in stream]
        answers[f"stream-{model}"] = (events[-1].response.usage, True)  # type: ignore[union-attr]
    await eventually(lambda: len(stack.rows()) == len(answers))
    rows = {orjson.loads(row["labels"])["client_request_id"]: row for row in stack.rows()}
    for label, (usage, streamed) in answers.items():
        row = rows[label]
        assert usage is not None and usage.output_tokens > 0, label
        assert (row["operation"], row["outcome"], bool(row["stream"])) == (
            "responses",
            "OUTCOME_COMPLETED",
            streamed,
        ), label
        assert (row["input_tokens"], row["output_tokens"]) == (usage.input_tokens, usage.output_tokens), label
        assert row["user"] == "alice" and row["requested_model"] == label.split("-", 1)[1]
    for label in ("whole-gpt-4o-mini", "stream-gpt-4o-mini"):
        row = rows[label]
        assert row["backend"] == "primary" and row["provider"] == "openai"
        assert row["cost_usd"] == pytest.approx((row["input_tokens"] * 0.15 + row["output_tokens"] * 0.6) / 1e6)
