"""The stream recorder: stores only a completed stream, and lands its claim however the stream ends, even when it
is closed before its first `anext` (where an async generator's `finally` would never run)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from gateway.cache.recorder import RecordingStream
from gateway.errors import UpstreamError
from tollgate.gateway.v1 import gateway_pb2 as pb

Chunk = pb.StreamChatCompletionResponse


def piece(text: str = "", finish: bool = False, index: int = 0) -> Chunk:
    reason = pb.FINISH_REASON_STOP if finish else pb.FINISH_REASON_UNSPECIFIED
    return Chunk(id="c1", choices=[pb.ChunkChoice(index=index, delta=pb.Delta(content=text), finish_reason=reason)])


async def source(chunks: list[Chunk], fail: bool = False) -> AsyncGenerator[Chunk, None]:
    for chunk in chunks:
        yield chunk
    if fail:
        raise UpstreamError("cut")


class Spy:
    def __init__(self) -> None:
        self.stored: list[list[bytes]] = []
        self.ended = 0

    def store(self, raw: list[bytes]) -> None:
        self.stored.append(raw)

    def end(self) -> None:
        self.ended += 1


def recorder(spy: Spy, rest: list[Chunk], fail: bool = False) -> RecordingStream:
    return RecordingStream(piece("Hello"), source(rest, fail), spy.store, spy.end)


async def test_a_completed_stream_is_stored_with_its_usage_even_if_the_consumer_strips_it() -> None:
    spy = Spy()
    usage = Chunk(id="c1", usage=pb.Usage(total_tokens=3))
    chunks = [chunk async for chunk in recorder(spy, [piece(" there", finish=True), usage])]
    chunks[-1].ClearField("usage")  # what the engine does for a client that did not ask for usage
    assert spy.ended == 1 and len(spy.stored) == 1
    assert Chunk.FromString(spy.stored[0][-1]).usage.total_tokens == 3
    assert [Chunk.FromString(raw).choices[0].delta.content for raw in spy.stored[0][:2]] == ["Hello", " there"]


async def test_a_stream_with_an_unfinished_choice_is_not_stored() -> None:
    spy = Spy()
    second = piece("x", index=1)  # choice 1 never finishes
    assert len([c async for c in recorder(spy, [piece(finish=True), second])]) == 2
    assert spy.stored == [] and spy.ended == 1


async def test_a_failed_stream_is_not_stored() -> None:
    spy = Spy()
    stream = recorder(spy, [piece(finish=True)], fail=True)
    with pytest.raises(UpstreamError):
        async for _ in stream:
            pass
    assert spy.stored == [] and spy.ended == 1


async def test_closing_before_the_first_anext_lands_the_claim() -> None:
    spy = Spy()
    stream = recorder(spy, [piece(finish=True)])
    await stream.aclose()
    assert spy.stored == [] and spy.ended == 1


async def test_closing_midway_lands_once_and_stores_nothing() -> None:
    spy = Spy()
    stream = recorder(spy, [piece(" a"), piece(" b", finish=True)])
    await anext(stream)
    await stream.aclose()
    await stream.aclose()
    assert spy.stored == [] and spy.ended == 1
