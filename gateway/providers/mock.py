"""The `mock` provider: a built-in demo backend that answers by itself, with realistic chunks, usage and timing.

It is what `make run` serves with no API key, clearly labelled as a demo, and a backend that costs nothing for load
tests. Options: `chunks` (content chunks per answer), `first_token_delay` and `chunk_delay` (durations), `text`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import struct
import time
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import Any

from gateway.config import BackendConfig, ConfigError, parse_duration
from gateway.providers.base import collect
from tollgate.gateway.v1 import gateway_pb2 as pb

DEFAULT_TEXT = "This is tollgate's demo backend: no model was called. Configure a real backend to get real answers."


def _option(options: Mapping[str, Any], key: str, path: str, default: float) -> float:
    return parse_duration(options[key], f"{path}.{key}") if key in options else default


class MockProvider:
    """Streams a canned answer: the same words for every request, split into `chunks` pieces."""

    def __init__(self, backend: BackendConfig, path: str = "backend") -> None:
        self.backend = backend
        opts = dict(backend.options)
        unknown = sorted(set(opts) - {"chunks", "chunk_delay", "first_token_delay", "text"})
        if unknown:
            raise ConfigError(f"{path}.options.{unknown[0]}: unknown option for the mock provider")
        words = str(opts.get("text", DEFAULT_TEXT)).split() or ["demo"]
        chunks = opts.get("chunks", len(words))
        if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
            raise ConfigError(f"{path}.options.chunks: expected a positive whole number, got {chunks!r}")
        self._first_delay = _option(opts, "first_token_delay", f"{path}.options", 0.0)
        self._chunk_delay = _option(opts, "chunk_delay", f"{path}.options", 0.0)
        self._pieces = [w + " " for w in itertools.islice(itertools.cycle(words), chunks)]
        self._pieces[-1] = self._pieces[-1].rstrip()
        self._ids = itertools.count(1)

    async def close(self) -> None:
        """Nothing to release."""

    def _prompt_tokens(self, params: pb.ChatCompletionParams) -> int:
        # About four characters a token, as tokenizers average on English text.
        chars = sum(len(m.content) + sum(len(p.text) for p in m.content_parts) for m in params.messages)
        return max(1, chars // 4) + 3 * len(params.messages)

    async def stream(
        self, model: str, params: pb.ChatCompletionParams
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """The canned answer as chunks, then a usage chunk."""
        limit = params.max_completion_tokens or params.max_tokens or len(self._pieces)
        pieces = self._pieces[:limit]
        response_id, created, indexes = f"chatcmpl-mock-{next(self._ids)}", int(time.time()), range(params.n or 1)

        def chunk(
            deltas: Iterable[pb.ChunkChoice] = (), usage: pb.Usage | None = None
        ) -> pb.StreamChatCompletionResponse:
            return pb.StreamChatCompletionResponse(
                id=response_id, created=created, model=model, choices=deltas, usage=usage
            )

        if self._first_delay:
            await asyncio.sleep(self._first_delay)
        yield chunk(pb.ChunkChoice(index=i, delta=pb.Delta(role=pb.ROLE_ASSISTANT, content="")) for i in indexes)
        for piece in pieces:
            if self._chunk_delay:
                await asyncio.sleep(self._chunk_delay)
            yield chunk(pb.ChunkChoice(index=i, delta=pb.Delta(content=piece)) for i in indexes)
        reason = pb.FINISH_REASON_LENGTH if len(pieces) < len(self._pieces) else pb.FINISH_REASON_STOP
        yield chunk(pb.ChunkChoice(index=i, delta=pb.Delta(), finish_reason=reason) for i in indexes)
        prompt, completion = self._prompt_tokens(params), len(pieces) * len(indexes)
        yield chunk(
            usage=pb.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
        )

    async def complete(self, model: str, params: pb.ChatCompletionParams) -> pb.CreateChatCompletionResponse:
        """The same answer, folded."""
        return await collect(self.stream(model, params))

    async def embed(self, model: str, request: pb.CreateEmbeddingsRequest) -> pb.CreateEmbeddingsResponse:
        """A deterministic vector per input, derived from its text."""
        out = pb.CreateEmbeddingsResponse(model=model)
        texts = list(request.input) or [" ".join(map(str, t.ids)) for t in request.input_tokens]
        size = request.dimensions or 16
        for i, text in enumerate(texts):
            digest = hashlib.sha256(text.encode()).digest()
            values = [(b / 127.5) - 1.0 for b in itertools.islice(itertools.cycle(digest), size)]
            embedding = out.data.add(index=i)
            if request.encoding_format == "base64":
                embedding.base64 = base64.b64encode(struct.pack(f"<{size}f", *values)).decode()
            else:
                embedding.values.extend(values)
        tokens = sum(len(t.split()) for t in texts)
        out.usage.prompt_tokens = out.usage.total_tokens = tokens
        return out
