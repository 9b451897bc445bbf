"""A stream's attempt reaches health when the stream ends, not at its first chunk: a target that resets, stalls or
sends a bad event after its first byte is ejected like one that fails before it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from gateway.call import CallContext, new_request_id
from gateway.config import parse_config
from gateway.engine.core import EngineCore, EngineParts
from gateway.errors import GatewayError
from gateway.providers.registry import build_providers
from gateway.testing.fake_openai import FakeOpenAI, Fault
from tollgate.gateway.v1 import gateway_pb2 as pb

CONFIG = """
routing: {{health: {{consecutive_failures: 3, ejection_base: 60s}}}}
backends:
  - {{name: faulty, provider: openai, base_url: "{faulty}", read_timeout: 200ms}}
  - {{name: sound, provider: openai, base_url: "{sound}"}}
models:
  - name: m
    targets: [{{backend: faulty, model: gpt-4o-mini, priority: 0}}, {{backend: sound, model: gpt-4o-mini, priority: 1}}]
"""
PARAMS = pb.ChatCompletionParams(model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hello there")])


@pytest.fixture
async def pair() -> AsyncIterator[tuple[EngineCore, FakeOpenAI, FakeOpenAI]]:
    async with FakeOpenAI(chunks=6) as faulty, FakeOpenAI(chunks=6) as sound:
        config = parse_config(CONFIG.format(faulty=faulty.base_url, sound=sound.base_url), os.environ)
        engine = EngineCore(config, EngineParts(build_providers(config)))
        try:
            yield engine, faulty, sound
        finally:
            await engine.close()


async def stream(engine: EngineCore) -> tuple[int, GatewayError | None]:
    """The chunks the caller got, and the error that ended the stream (None: it completed)."""
    received = 0
    try:
        async for _ in engine.stream_chat_completion(PARAMS, CallContext(request_id=new_request_id())):
            received += 1
    except GatewayError as exc:
        return received, exc
    return received, None


def state(engine: EngineCore, backend: str) -> tuple[str, int]:
    (target,) = [t for t in engine.health_snapshot() if t.backend == backend]
    return target.state, target.ejections_total


@pytest.mark.parametrize("how", ["reset", "error", "malformed", "stall"])
async def test_a_target_failing_after_its_first_chunk_is_ejected(
    pair: tuple[EngineCore, FakeOpenAI, FakeOpenAI], how: str
) -> None:
    engine, faulty, sound = pair
    fault = Fault(stall_after_chunks=2) if how == "stall" else Fault(fail_after_chunks=2, fail_with=how)
    fault.times = 3
    faulty.add_fault(fault)
    for failures in range(1, 4):
        received, error = await stream(engine)
        assert received >= 1 and error is not None, "the first byte went out, then the failure came in-band"
        assert state(engine, "faulty") == (("open", 1) if failures == 3 else ("closed", 0))
    received, error = await stream(engine)
    assert error is None and received > 1, "the ejected target is skipped: the sound one answers"
    assert sound.completed_streams == 1
    assert state(engine, "sound") == ("closed", 0)


async def test_a_stream_that_completes_or_is_left_by_its_caller_keeps_its_target_healthy(
    pair: tuple[EngineCore, FakeOpenAI, FakeOpenAI],
) -> None:
    engine, _, sound = pair
    for _ in range(4):
        assert (await stream(engine))[1] is None
        chunks = engine.stream_chat_completion(PARAMS, CallContext(request_id=new_request_id()))
        await anext(chunks)
        await chunks.aclose()  # the caller went away after the first chunk
    assert state(engine, "faulty") == ("closed", 0)
    assert sound.completed_streams == 0, "every stream went to the first target"
