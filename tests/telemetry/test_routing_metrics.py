"""Routing on /metrics: each target's health and circuit state read at scrape time, and requests by experiment arm,
after known traffic, in one process and split."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.conftest import MODES, config_for
from tests.telemetry.helpers import instrumented, scrape, value

MESSAGES: Any = [{"role": "user", "content": "Route me."}]
ROUTING = "routing: {health: {consecutive_failures: 2, ejection_base: 60s}}"
MODELS = """\
  - {name: flaky, targets: [{backend: primary, model: gpt-4o-mini}], fallback: [demo]}
  - name: trial
    targets: [{backend: primary, model: gpt-4o-mini}]
    experiment: {name: mock-trial, share: 0.5, key: "header:x-user", targets: [{backend: demo, model: tollgate-demo}]}
"""


def _config(upstream: FakeOpenAI) -> str:
    return config_for(upstream.base_url, extra=ROUTING).replace("models:\n", "models:\n" + MODELS)


@pytest.mark.parametrize("mode", MODES)
async def test_an_ejected_target_shows_as_open_and_unavailable(mode: str, upstream: FakeOpenAI) -> None:
    async with instrumented(mode, _config(upstream)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        upstream.add_fault(Fault(status=500, times=2))
        for _ in range(2):  # each fails on primary and is answered by the fallback; the second failure ejects
            assert (await client.chat.completions.create(model="flaky", messages=MESSAGES)).choices
        samples = await scrape(gw.metrics_url)

    primary = {"backend": "primary", "model": "gpt-4o-mini"}
    assert value(samples, "tollgate_target_circuit_state", state="open", **primary) == 1
    assert value(samples, "tollgate_target_circuit_state", state="closed", **primary) == 0
    assert value(samples, "tollgate_target_available", **primary) == 0
    assert value(samples, "tollgate_target_ejections_total", **primary) == 1
    assert value(samples, "tollgate_target_available", backend="demo") == 1
    assert value(samples, "tollgate_target_circuit_state", state="closed", backend="demo") == 1
    assert value(samples, "tollgate_target_outstanding", **primary) == 0
    assert value(samples, "tollgate_backend_up", **primary) == 1  # no active checks configured


@pytest.mark.parametrize("mode", MODES)
async def test_requests_are_counted_by_experiment_arm(mode: str, upstream: FakeOpenAI) -> None:
    async with instrumented(mode, _config(upstream)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        arms: dict[str, int] = {}
        for user in range(20):
            answer = await client.chat.completions.with_raw_response.create(
                model="trial", messages=MESSAGES, extra_headers={"x-user": f"user-{user}"}
            )
            arm = "treatment" if answer.parse().model == "tollgate-demo" else "control"
            arms[arm] = arms.get(arm, 0) + 1
        samples = await scrape(gw.metrics_url)

    assert set(arms) == {"control", "treatment"}  # 20 users split by hash: both arms (one arm: p = 2^-19)
    for arm, count in arms.items():
        labels = {"model": "trial", "experiment": "mock-trial", "arm": arm, "status": "200"}
        assert value(samples, "tollgate_experiment_requests_total", **labels) == count
