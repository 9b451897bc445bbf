"""Hostile bodies at the endpoints beside chat (legacy completions, images, speech, moderations, rerank, and
multipart uploads for transcriptions): never a 5xx the client caused, always OpenAI's error shape, never a traceback.

The JSON bodies are tests/e2e/hostile_bodies.py's mutations of each endpoint's documented request, each sent once to
a model on the fake OpenAI server or to one on the mock backend (which serves none of these endpoints: a 400 naming
the model), rotating. One process, like test_hostile_bodies.py.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import RunningGateway, StartGateway
from tests.e2e import hostile_bodies as hb
from tests.e2e.test_endpoints_sdk import endpoints_config
from tests.e2e.test_hostile_bodies import _send_all, _server_side

MAX_AUDIO = 256 * 1024  # endpoints_config's server.max_audio
# endpoint: (base body, the model served by the fake OpenAI server, the one on the mock backend)
BASES: dict[str, tuple[Callable[[str], dict[str, Any]], str]] = {
    "/v1/completions": (hb.completions_base, "instruct"),
    "/v1/images/generations": (hb.images_base, "dall-e-3"),
    "/v1/audio/speech": (hb.speech_base, "tts-1"),
    "/v1/moderations": (hb.moderations_base, "omni-moderation-latest"),
    "/v1/rerank": (hb.rerank_base, "reranker"),
}
UNSERVED = "demo-instruct"


@pytest.fixture
async def gateway(start_gateway: StartGateway, upstream: FakeOpenAI) -> RunningGateway:
    return await start_gateway(endpoints_config(upstream.base_url))


def all_bodies() -> Iterator[hb.Body]:
    for endpoint, (base, served) in BASES.items():
        models = itertools.cycle((served, UNSERVED))
        bases = [base] + ([hb.completions_stream_base] if endpoint == "/v1/completions" else [])
        for each in bases:
            for body in hb.field_mutations(each("gpt"), endpoint):
                model = next(models)
                raw = body.raw.replace(b'"model":"gpt"', f'"model":"{model}"'.encode())
                yield hb.Body(f"{each.__name__}: {body.label} → {model}", endpoint, raw)
            for model in (served, UNSERVED):
                yield from (
                    hb.Body(f"{b.label} → {model}", b.path, b.raw, b.headers)
                    for b in (*hb.raw_bodies(each(model), endpoint), *hb.header_bodies(each(model), endpoint))
                )
                for b in hb.random_garbage(each(model), endpoint, 60, seed=len(endpoint) + len(model)):
                    yield hb.Body(f"{b.label} → {model}", b.path, b.raw)
    for model in ("whisper-1", UNSERVED):
        for b in hb.transcription_bodies(model, "/v1/audio/transcriptions", MAX_AUDIO):
            yield hb.Body(f"{b.label} → {model}", b.path, b.raw, b.headers)


@pytest.mark.parametrize("start_gateway", ["one-process"], indirect=True)
async def test_hostile_bodies_get_a_clear_4xx(gateway: RunningGateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    statuses, problems = await _send_all(gateway.http_url, all_bodies())
    sent = sum(statuses.values())
    tracebacks = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.exc_info and _server_side(r)]
    report = "\n".join(f"{label}: {problem}" for label, problem in sorted(problems.items()))
    assert not problems, f"{len(problems)} of {sent} bodies answered wrongly:\n{report}"
    # Not vacuous: thousands sent; the served models both answered and refused, the unserved one refused.
    assert sent > 2500, statuses
    for model in ("instruct", "dall-e-3", "tts-1", "omni-moderation-latest", "reranker", "whisper-1"):
        assert statuses[f"{model} 200"] > 5 and statuses[f"{model} 400"] > 5, (model, statuses)
    assert statuses[f"{UNSERVED} 400"] > 500 and not statuses[f"{UNSERVED} 200"], statuses
    assert statuses["whisper-1 413"] >= 1 and statuses["reranker 413"] >= 1, statuses
    assert not tracebacks, "\n".join(tracebacks)
