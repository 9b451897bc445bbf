"""The fake Anthropic refuses a malformed system or thinking with the API's 400, as the real one does, instead of
failing with a 500 that tests would read as an upstream outage (found by tests/e2e/test_hostile_bodies.py)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from gateway.testing.fake_anthropic import FakeAnthropic

HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"system": 5}, "system"),
        ({"system": [{"type": "image"}]}, "system.0"),
        ({"thinking": "yes"}, "thinking"),
        ({"thinking": {"type": "sometimes"}}, "thinking.type"),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
    ],
)
async def test_malformed_system_or_thinking_is_a_400(extra: dict[str, Any], field: str) -> None:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 20, "messages": HI, **extra}
    async with (
        FakeAnthropic() as fake,
        aiohttp.ClientSession() as session,
        session.post(f"{fake.base_url}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}) as resp,
    ):
        assert resp.status == 400
        payload = await resp.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert payload["error"]["message"].startswith(field)


async def test_a_prefill_is_continued_and_one_ending_in_whitespace_refused() -> None:
    headers = {"anthropic-version": "2023-06-01"}
    model = "claude-sonnet-4-5"
    async with FakeAnthropic(chunks=6) as fake, aiohttp.ClientSession() as session:
        url = f"{fake.base_url}/v1/messages"
        async with session.post(url, json={"model": model, "max_tokens": 20, "messages": HI}, headers=headers) as r:
            whole = (await r.json())["content"][0]["text"]
        prefill = [*HI, {"role": "assistant", "content": "This is a re"}]
        body = {"model": model, "max_tokens": 20, "messages": prefill}
        async with session.post(url, json=body, headers=headers) as r:
            assert r.status == 200
            rest = (await r.json())["content"][0]["text"]
        assert whole == "This is a re" + rest, "the answer goes on from the prefill"
        body["messages"] = [*HI, {"role": "assistant", "content": "This is "}]
        async with session.post(url, json=body, headers=headers) as r:
            assert r.status == 400
            message = (await r.json())["error"]["message"]
    assert message == "messages: final assistant content cannot end with trailing whitespace"
