"""`RecordingStream`: passes a provider's chunks through while keeping a copy, and stores them only if the stream
completed (every choice finished and the provider ended the stream), never a stream cut short or failed.

A class rather than an async generator: `aclose` must land the single-flight claim even when the stream is closed
before its first `anext` (a generator's `finally` never runs then, and the waiters would wait for ever).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from types import TracebackType
from typing import Any

from tollgate.gateway.v1 import gateway_pb2 as pb

Chunk = pb.StreamChatCompletionResponse


class RecordingStream(AsyncGenerator[Chunk, None]):
    """`rest` (the chunks after `first`), recorded; `store` gets the serialized chunks of a completed stream, and
    `end` runs exactly once however the stream ends."""

    def __init__(
        self,
        first: Chunk,
        rest: AsyncGenerator[Chunk, None],
        store: Callable[[list[bytes]], None],
        end: Callable[[], None],
    ) -> None:
        self._rest = rest
        self._store = store
        self._end: Callable[[], None] | None = end
        self._recorded: list[bytes] = []
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._record(first)

    def _record(self, chunk: Chunk) -> None:
        # Serialized now: the engine strips the usage off a chunk it passes on, and the copy must keep it.
        self._recorded.append(chunk.SerializeToString())
        for choice in chunk.choices:
            self._started.add(choice.index)
            if choice.finish_reason:
                self._finished.add(choice.index)

    async def asend(self, value: None) -> Chunk:
        """The next chunk; at the end of a completed stream, the recording is stored."""
        try:
            chunk = await self._rest.asend(value)
        except StopAsyncIteration:
            if self._started and self._started == self._finished:
                self._store(self._recorded)
            self._land()
            raise
        except BaseException:
            self._land()
            raise
        self._record(chunk)
        return chunk

    async def athrow(
        self,
        typ: type[BaseException] | BaseException,
        val: Any = None,
        tb: TracebackType | None = None,
    ) -> Chunk:
        """Throw into the provider's stream; whatever happens, the recording is not stored."""
        self._land()
        if isinstance(typ, BaseException):
            return await self._rest.athrow(typ)
        return await self._rest.athrow(typ, val, tb)

    async def aclose(self) -> None:
        """Close the provider's stream (and so its connection); an unfinished recording is dropped."""
        self._land()
        await self._rest.aclose()

    def _land(self) -> None:
        end, self._end = self._end, None
        if end is not None:
            end()
