"""`CachedAnswer`: a completed answer as stored, either a whole completion or the chunks of a stream, and the
conversions between the two, so either kind of client can be served from either kind of entry.

Stored form: one kind byte, then each message as a 4-byte little-endian length and its protobuf bytes. The kinds `C`
and `S` start with one more such part: the names of the models that produced the answer (each length-prefixed the
same way), so that a hit is served only to a caller that may use them; `c` and `s` (written before this was
recorded) do not, and are served only to callers that may use every model.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from gateway.providers.base import collect
from tollgate.gateway.v1 import gateway_pb2 as pb

_COMPLETION, _CHUNKS = b"C", b"S"
_OLD_COMPLETION, _OLD_CHUNKS = b"c", b"s"  # no record of what produced them
_LENGTH = struct.Struct("<I")


class CorruptEntry(ValueError):
    """Bytes that are not a stored answer (another version's format, or damage): treated as a miss."""


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A completed answer: `completion` for a non-streamed one, else the `chunks` of a stream, in order; and the
    model names it was produced by (`served_by`: empty when that is not known)."""

    completion: pb.CreateChatCompletionResponse | None = None
    chunks: tuple[pb.StreamChatCompletionResponse, ...] = ()
    served_by: tuple[str, ...] = ()

    def encode(self) -> bytes:
        """The stored bytes."""
        served = _served(self.served_by)
        if self.completion is not None:
            return _COMPLETION + served + _frame((self.completion,))
        return _CHUNKS + served + _frame(self.chunks)

    @classmethod
    def decode(cls, data: bytes) -> CachedAnswer:
        """The answer `encode` stored; fresh messages each time, so a caller may change them freely."""
        try:
            kind, parts = data[:1], list(_unframe(memoryview(data)[1:]))
            served_by: tuple[str, ...] = ()
            if kind in (_COMPLETION, _CHUNKS) and parts:
                served_by = tuple(name.decode() for name in _unframe(memoryview(parts.pop(0))))
                kind = kind.lower()
            if kind == _OLD_COMPLETION and len(parts) == 1:
                answer = cls(pb.CreateChatCompletionResponse.FromString(parts[0]), served_by=served_by)
            elif kind == _OLD_CHUNKS and parts:
                chunks = tuple(pb.StreamChatCompletionResponse.FromString(p) for p in parts)
                answer = cls(chunks=chunks, served_by=served_by)
            else:
                raise CorruptEntry("unknown kind or empty entry")
        except (struct.error, DecodeError, UnicodeDecodeError) as exc:
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


def encode_chunks(raw: Iterable[bytes], served_by: tuple[str, ...] = ()) -> bytes:
    """The stored form of a stream whose chunks are already serialized, produced by the models `served_by`."""
    return _CHUNKS + _served(served_by) + b"".join(_LENGTH.pack(len(part)) + part for part in raw)


def _served(names: tuple[str, ...]) -> bytes:
    """The part naming the models that produced an answer: their names, framed, as one frame."""
    inner = b"".join(_LENGTH.pack(len(raw)) + raw for raw in (name.encode() for name in names))
    return _LENGTH.pack(len(inner)) + inner


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
