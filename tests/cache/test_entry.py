"""Stored answers: their bytes round-trip, a completion replays as OpenAI-shaped chunks, a stream folds back."""

from __future__ import annotations

import pytest

from gateway.cache.entry import CachedAnswer, CorruptEntry, completion_chunks, encode_chunks
from gateway.providers.base import collect
from tollgate.gateway.v1 import gateway_pb2 as pb


def completion() -> pb.CreateChatCompletionResponse:
    out = pb.CreateChatCompletionResponse(id="chatcmpl-1", created=1700000000, model="gpt-4o-mini")
    text = out.choices.add(index=0, finish_reason=pb.FINISH_REASON_STOP)
    text.message.role, text.message.content = pb.ROLE_ASSISTANT, "Hello there."
    calls = out.choices.add(index=1, finish_reason=pb.FINISH_REASON_TOOL_CALLS)
    calls.message.role = pb.ROLE_ASSISTANT
    call = calls.message.tool_calls.add(id="call_1", type="function")
    call.function.name, call.function.arguments = "lookup", '{"q": "x"}'
    out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens = 5, 7, 12
    return out


def test_a_completion_round_trips() -> None:
    stored = CachedAnswer(completion=completion()).encode()
    assert CachedAnswer.decode(stored).completion == completion()


async def test_a_completion_streams_as_openai_would_and_folds_back_to_itself() -> None:
    chunks = completion_chunks(completion())
    # Per choice: a delta with the role and the content or tool calls, then the finish; then usage alone.
    assert [len(c.choices) for c in chunks] == [1, 1, 1, 1, 0]
    assert chunks[0].choices[0].delta.role == pb.ROLE_ASSISTANT
    assert chunks[1].choices[0].finish_reason == pb.FINISH_REASON_STOP
    assert chunks[2].choices[0].delta.tool_calls[0].function.name == "lookup"
    assert chunks[-1].usage.total_tokens == 12
    assert all(c.id == "chatcmpl-1" and c.created == 1700000000 for c in chunks)

    async def replay():  # type: ignore[no-untyped-def]
        for chunk in chunks:
            yield chunk

    assert await collect(replay()) == completion()


async def test_a_stored_stream_replays_the_same_chunks_and_folds_for_a_non_streaming_client() -> None:
    chunks = completion_chunks(completion())
    stored = encode_chunks(c.SerializeToString() for c in chunks)
    answer = CachedAnswer.decode(stored)
    assert list(answer.as_chunks()) == chunks
    assert await answer.as_completion() == completion()


@pytest.mark.parametrize("data", [b"", b"x", b"c\x05\x00\x00\x00ab", b"s", b"c\x02\x00\x00\x00\xff\xff"])
def test_bytes_that_are_not_an_answer_are_refused(data: bytes) -> None:
    with pytest.raises(CorruptEntry):
        CachedAnswer.decode(data)


def test_the_models_that_produced_an_answer_are_stored_with_it() -> None:
    served = ("gpt-4o-mini", "qwen3-8b")
    stored = CachedAnswer(completion=completion(), served_by=served).encode()
    assert stored[:1] == b"C"
    assert CachedAnswer.decode(stored) == CachedAnswer(completion=completion(), served_by=served)
    chunks = completion_chunks(completion())
    streamed = CachedAnswer.decode(encode_chunks((c.SerializeToString() for c in chunks), ("fällback",)))
    assert streamed.served_by == ("fällback",) and list(streamed.chunks) == chunks


def test_an_entry_written_before_producers_were_recorded_names_none() -> None:
    # The earlier form: the lower-case kind, the messages straight after it.
    raw = completion().SerializeToString()
    old = CachedAnswer.decode(b"c" + len(raw).to_bytes(4, "little") + raw)
    assert old.completion == completion() and old.served_by == ()


@pytest.mark.parametrize("data", [b"C", b"C\x03\x00\x00\x00\x09\x00\x00", b"S\x05\x00\x00\x00\x01\x00\x00\x00\xff"])
def test_a_damaged_record_of_producers_is_refused(data: bytes) -> None:
    with pytest.raises(CorruptEntry):
        CachedAnswer.decode(data)
