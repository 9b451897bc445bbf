"""Hostile bodies at both front doors, routed to every backend type: never a 5xx the client caused, always the front
door's own error shape, never a traceback in the log.

The bodies come from tests/e2e/hostile_bodies.py. Each is sent once, to one backend type (rotating), except the
valid-but-odd requests, which go to every backend so each provider's translation meets them. One process only, to
keep it near 10 s: the split mode carries the same errors through gRPC metadata (tests/e2e/test_http_errors.py runs
both modes; this suite, switched to split, passes too, in about 17 s).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.testing.fake_anthropic import FakeAnthropic
from gateway.testing.fake_gemini import FakeGemini
from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import UPSTREAM_KEY, RunningGateway, StartGateway
from tests.e2e import hostile_bodies as hb

ANTHROPIC_KEY = "sk-ant-upstream"
GEMINI_KEY = "gemini-upstream-key"
MODELS = ("gpt", "claude", "flash")  # an OpenAI-compatible backend (shaped), Anthropic, Gemini
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
COUNT = "/v1/messages/count_tokens"
RESPONSES = "/v1/responses"


def config(openai_url: str, anthropic_url: str, gemini_url: str) -> str:
    return f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: none
server: {{max_body: 256KiB, shutdown_grace: 1s}}
backends:
  - {{name: primary, provider: openai, base_url: "{openai_url}", api_key: {UPSTREAM_KEY}, read_timeout: 5s,
      defaults: {{top_k: 40, temperature: 0.3}}, overrides: {{seed: 1}}, remove: [logit_bias]}}
  - {{name: claude, provider: anthropic, base_url: "{anthropic_url}", api_key: {ANTHROPIC_KEY}, read_timeout: 5s}}
  - {{name: google, provider: gemini, base_url: "{gemini_url}", api_key: {GEMINI_KEY}, read_timeout: 5s}}
models:
  - {{name: gpt, targets: [{{backend: primary, model: gpt-4o-mini}}]}}
  - {{name: claude, targets: [{{backend: claude, model: claude-sonnet-4-5}}]}}
  - {{name: flash, targets: [{{backend: google, model: gemini-2.0-flash}}]}}
"""


@pytest.fixture
async def gateway(start_gateway: StartGateway, upstream: FakeOpenAI) -> AsyncIterator[RunningGateway]:
    async with FakeAnthropic(api_key=ANTHROPIC_KEY) as claude, FakeGemini(api_key=GEMINI_KEY).running() as gemini:
        yield await start_gateway(config(upstream.base_url, claude.base_url, gemini.base_url))


def _server_side(record: logging.LogRecord) -> bool:
    """A record of the gateway's or the fakes' servers, not a client an earlier test left to the garbage collector."""
    return record.name.startswith(("tollgate", "aiohttp"))


def _shape_problem(path: str, status: int, payload: Any) -> str | None:
    """What is wrong with an error body for the front door at `path`, or None."""
    if path not in (MESSAGES, COUNT):  # every other front door answers in OpenAI's error shape
        error = payload.get("error") if isinstance(payload, dict) else None
        ok = isinstance(error, dict) and isinstance(error.get("message"), str) and isinstance(error.get("type"), str)
        return None if ok else f"not an OpenAI error body: {payload!r:.200}"
    ok = (
        isinstance(payload, dict)
        and payload.get("type") == "error"
        and isinstance(payload.get("error"), dict)
        and isinstance(payload["error"].get("type"), str)
        and isinstance(payload["error"].get("message"), str)
    )
    return None if ok else f"not an Anthropic error body: {payload!r:.200}"


def _stream_problem(text: str) -> str | None:
    """An in-band error that hides a bug (an internal error, or a broken upstream answer) in a 200 stream."""
    for marker in ("internal_error", "Internal error", "upstream_error"):
        if marker in text:
            return f"in-band {marker} in the stream: {text[-300:]!r}"
    return None


async def _problem(session: aiohttp.ClientSession, url: str, body: hb.Body, statuses: Counter[str]) -> str | None:
    async with session.post(url + body.path, data=body.raw, headers=dict(body.headers)) as resp:
        raw = await resp.read()
        statuses[f"{body.label.rpartition(' → ')[2] if ' → ' in body.label else '-'} {resp.status}"] += 1
        if resp.status >= 500:
            return f"status {resp.status}: {raw[:300]!r}"
        if resp.status >= 400:
            try:
                payload = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return f"status {resp.status} with a body that is not JSON: {raw[:200]!r}"
            return _shape_problem(body.path, resp.status, payload)
        if resp.content_type == "text/event-stream":
            return _stream_problem(raw.decode(errors="replace"))
        return None


async def _send_all(url: str, bodies: Iterable[hb.Body]) -> tuple[Counter[str], dict[str, str]]:
    """Send every body (a few at a time); how many got each status from each model, and the problems by label."""
    problems: dict[str, str] = {}
    statuses: Counter[str] = Counter()
    gate = asyncio.Semaphore(8)
    timeout = aiohttp.ClientTimeout(total=20)

    async def one(session: aiohttp.ClientSession, body: hb.Body) -> None:
        async with gate:
            try:
                problem = await _problem(session, url, body, statuses)
            except aiohttp.ClientError as exc:
                problem = f"no answer: {exc!r:.200}"
            if problem is not None:
                problems[body.label] = problem

    listed = list(bodies)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one(session, body) for body in listed))
    return statuses, problems


def all_bodies() -> Iterator[hb.Body]:
    """Field mutations and raw bytes (each to one backend type, rotating), odd requests to every backend type."""
    models = itertools.cycle(MODELS)
    bases = (
        (CHAT, hb.openai_base),
        (CHAT, hb.openai_stream_base),
        (MESSAGES, hb.anthropic_base),
        (MESSAGES, hb.anthropic_stream_base),
        (COUNT, hb.anthropic_base),
        (RESPONSES, hb.responses_base),
        (RESPONSES, hb.responses_stream_base),
    )
    for endpoint, base in bases:
        streamed = "stream" in base.__name__
        for body in hb.field_mutations(base("gpt"), endpoint):
            # The model field itself is mutated too; elsewhere the rotating model picks the backend.
            model = next(models)
            raw = body.raw.replace(b'"model":"gpt"', f'"model":"{model}"'.encode())
            yield hb.Body(f"{base.__name__}: {body.label} → {model}", body.path, raw)
        for model in MODELS:
            if not streamed:  # the body is parsed before anything looks at `stream`
                yield from hb.raw_bodies(base(model), endpoint)
                yield from hb.header_bodies(base(model), endpoint)
            for body in hb.random_garbage(base(model), endpoint, 150, seed=len(endpoint) + len(model) + streamed):
                yield hb.Body(f"{base.__name__}: {body.label} → {model}", body.path, body.raw)
    for model in MODELS:
        for label, body in hb.openai_odd(model):
            yield hb.Body(f"{CHAT} odd {label} → {model}", CHAT, hb.dumps(body))
            if not body.get("stream"):
                yield hb.Body(f"{CHAT} odd {label} (stream) → {model}", CHAT, hb.dumps({**body, "stream": True}))
        for label, body in hb.anthropic_odd(model):
            yield hb.Body(f"{MESSAGES} odd {label} → {model}", MESSAGES, hb.dumps(body))
            if not body.get("stream"):
                yield hb.Body(
                    f"{MESSAGES} odd {label} (stream) → {model}", MESSAGES, hb.dumps({**body, "stream": True})
                )
            yield hb.Body(f"{COUNT} odd {label} → {model}", COUNT, hb.dumps(body))
        for label, body in hb.responses_odd(model):
            yield hb.Body(f"{RESPONSES} odd {label} → {model}", RESPONSES, hb.dumps(body))
            yield hb.Body(f"{RESPONSES} odd {label} (stream) → {model}", RESPONSES, hb.dumps({**body, "stream": True}))


@pytest.mark.parametrize("start_gateway", ["one-process"], indirect=True)
async def test_hostile_bodies_get_a_clear_4xx(gateway: RunningGateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    statuses, problems = await _send_all(gateway.http_url, all_bodies())
    sent = sum(statuses.values())
    tracebacks = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.exc_info and _server_side(r)]
    report = "\n".join(f"{label}: {problem}" for label, problem in sorted(problems.items()))
    assert not problems, f"{len(problems)} of {sent} bodies answered wrongly:\n{report}"
    # Not vacuous: thousands sent, and every backend both answered (the odd bodies got through) and refused.
    assert sent > 9000
    for model in MODELS:
        assert statuses[f"{model} 200"] > 50 and statuses[f"{model} 400"] > 500, statuses
    assert not tracebacks, "\n".join(tracebacks)
