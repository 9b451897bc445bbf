"""`CachedAnswer`: a completed answer as stored, either a whole completion or the chunks of a stream, and the
conversions between the two, so either kind of client can be served from either kind of entry.

Stored form: one kind byte, then each message as a 4-byte little-endian length and its protobuf bytes.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from gateway.providers.base import collect
from tollgate.gateway.v1 import gateway_pb2 as pb

_COMPLETION, _CHUNKS = b"c", b"s"
_LENGTH = struct.Struct("<I")


class CorruptEntry(ValueError):
    """Bytes that are not a stored answer (another version's format, or damage): treated as a miss."""


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A completed answer: `completion` for a non-streamed one, else the `chunks` of a stream, in order."""

    completion: pb.CreateChatCompletionResponse | None = None
    chunks: tuple[pb.StreamChatCompletionResponse, ...] = ()

    def encode(self) -> bytes:
        """The stored bytes."""
        if self.completion is not None:
            return _COMPLETION + _frame((self.completion,))
        return _CHUNKS + _frame(self.chunks)

    @classmethod
    def decode(cls, data: bytes) -> CachedAnswer:
        """The answer `encode` stored; fresh messages each time, so a caller may change them freely."""
        try:
            kind, parts = data[:1], list(_unframe(memoryview(data)[1:]))
            if kind == _COMPLETION and len(parts) == 1:
                answer = cls(completion=pb.CreateChatCompletionResponse.FromString(parts[0]))
            elif kind == _CHUNKS and parts:
                answer = cls(chunks=tuple(pb.StreamChatCompletionResponse.FromString(p) for p in parts))
            else:
                raise CorruptEntry("unknown kind or empty entry")
        except (struct.error, DecodeError) as exc:
            raise CorruptEntry(str(exc)) from exc
        # Only answers with choices are stored: one without would be replayed as an empty or failed answer.
        if not (answer.completion.choices if answer.completion is not None else any(c.choices for c in answer.chunks)):
            raise CorruptEntry("an entry without choices")
        return answer

    async def as_completion(self) -> pb.CreateChatCompletionResponse:
        """The completion a non-streaming client gets: as stored, or the stored stream folded."""
        if self.completion is not None:
            return self.completion
        return await collect(_aiter(self.chunks))

    def as_chunks(self) -> Sequence[pb.StreamChatCompletionResponse]:
        """The chunks a streaming client gets: as stored, or the stored completion as OpenAI would have streamed it."""
        if self.completion is None:
            return self.chunks
        return completion_chunks(self.completion)


def completion_chunks(completion: pb.CreateChatCompletionResponse) -> list[pb.StreamChatCompletionResponse]:
    """A completion as a stream: per choice a role-and-content chunk, its tool calls, its finish; then the usage."""
    out: list[pb.StreamChatCompletionResponse] = []

    def chunk(*choices: pb.ChunkChoice) -> pb.StreamChatCompletionResponse:
        made = pb.StreamChatCompletionResponse(id=completion.id, created=completion.created, model=completion.model)
        if completion.HasField("system_fingerprint"):
            made.system_fingerprint = completion.system_fingerprint
        made.choices.extend(choices)
        out.append(made)
        return made

    for choice in completion.choices:
        message = choice.message
        delta = pb.Delta(role=message.role or pb.ROLE_ASSISTANT)
        for name in ("content", "refusal", "reasoning_content"):
            if message.HasField(name):
                setattr(delta, name, getattr(message, name))
        for i, call in enumerate(message.tool_calls):
            piece = delta.tool_calls.add(index=i, id=call.id, type=call.type or "function")
            piece.function.name, piece.function.arguments = call.function.name, call.function.arguments
        first = pb.ChunkChoice(index=choice.index, delta=delta)
        if choice.HasField("logprobs"):
            first.logprobs.CopyFrom(choice.logprobs)
        chunk(first)
        chunk(pb.ChunkChoice(index=choice.index, delta=pb.Delta(), finish_reason=choice.finish_reason))
    if completion.HasField("usage"):
        chunk().usage.CopyFrom(completion.usage)
    return out


def encode_chunks(raw: Iterable[bytes]) -> bytes:
    """The stored form of a stream whose chunks are already serialized."""
    return _CHUNKS + b"".join(_LENGTH.pack(len(part)) + part for part in raw)


def _frame(messages: Iterable[pb.CreateChatCompletionResponse | pb.StreamChatCompletionResponse]) -> bytes:
    parts: list[bytes] = []
    for message in messages:
        raw = message.SerializeToString()
        parts += (_LENGTH.pack(len(raw)), raw)
    return b"".join(parts)


def _unframe(view: memoryview) -> Iterable[bytes]:
    at = 0
    while at < len(view):
        (size,) = _LENGTH.unpack_from(view, at)
        at += _LENGTH.size
        if at + size > len(view):
            raise CorruptEntry("truncated entry")
        yield bytes(view[at : at + size])
        at += size


async def _aiter(chunks: Iterable[pb.StreamChatCompletionResponse]) -> AsyncIterator[pb.StreamChatCompletionResponse]:
    for chunk in chunks:
        yield chunk
