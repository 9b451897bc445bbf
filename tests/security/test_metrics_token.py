"""`/metrics` with `telemetry.metrics.token`: the front door's and the engine's own listener answer a scrape only with
`Authorization: Bearer <token>`, and the token is never printed."""

from __future__ import annotations

import os

import aiohttp
import pytest

from gateway.config import ConfigError, parse_config
from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import MODES, config_for
from tests.telemetry.helpers import instrumented

TOKEN = "metrics-token-0123456789"


async def get(url: str, authorization: str | None) -> tuple[int, str]:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.text()


@pytest.mark.parametrize("mode", MODES)
async def test_metrics_need_the_token(mode: str, upstream: FakeOpenAI) -> None:
    text = config_for(upstream.base_url, extra=f"telemetry: {{metrics: {{token: {TOKEN}}}}}")
    async with instrumented(mode, text) as gw:
        urls = {gw.metrics_url, f"{gw.http_url}/metrics"}  # the engine's own listener too, when split
        for url in urls:
            for refused in (None, "", "Bearer", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN):
                status, body = await get(url, refused)
                assert status == 401, (url, refused)
                assert "tollgate_" not in body and TOKEN not in body
            status, body = await get(url, f"Bearer {TOKEN}")
            assert status == 200
            assert "tollgate_" in body


async def test_metrics_stay_open_without_a_token(upstream: FakeOpenAI) -> None:
    async with instrumented("one-process", config_for(upstream.base_url)) as gw:
        assert (await get(gw.metrics_url, None))[0] == 200


def test_a_short_token_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"telemetry\.metrics\.token: a metrics token needs at least 16"):
        parse_config(config_for("http://127.0.0.1:9", extra="telemetry: {metrics: {token: short}}"), os.environ)


def test_the_token_never_prints() -> None:
    config = parse_config(config_for("http://127.0.0.1:9", extra=f"telemetry: {{metrics: {{token: {TOKEN}}}}}"), {})
    assert TOKEN not in repr(config)
