"""The endpoints beside chat and embeddings that a provider may serve: legacy text completions, images, audio
transcription and speech, moderations and rerank.

A provider says which it serves in `endpoints` (the names below); the engine asks `serves` before it plans an
attempt at a target, so a model whose backends serve none of them is told plainly (a 400), and a target that cannot
serve one is skipped, never called. Wrappers (request shaping, waking) pass these through to the provider they wrap.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from tollgate.gateway.v1 import endpoints_pb2 as ep

COMPLETIONS = "completions"
IMAGES = "images"
TRANSCRIPTIONS = "transcriptions"
SPEECH = "speech"
MODERATIONS = "moderations"
RERANK = "rerank"


class EndpointServer(Protocol):
    """A provider that serves some of these endpoints; only those named in `endpoints` are called."""

    endpoints: frozenset[str]

    async def complete_text(self, model: str, params: ep.CompletionParams) -> ep.CreateCompletionResponse:
        """A whole legacy text completion."""
        ...

    def stream_text(self, model: str, params: ep.CompletionParams) -> AsyncGenerator[ep.StreamCompletionResponse, None]:
        """A streamed legacy text completion, ending with a usage chunk when the provider reports usage."""
        ...

    async def generate_images(self, model: str, request: ep.CreateImageRequest) -> ep.CreateImageResponse:
        """Generated images."""
        ...

    async def transcribe(self, model: str, request: ep.CreateTranscriptionRequest) -> ep.CreateTranscriptionResponse:
        """The text of an audio file."""
        ...

    def speak(self, model: str, request: ep.StreamSpeechRequest) -> AsyncGenerator[ep.StreamSpeechResponse, None]:
        """Spoken audio, streamed as it comes; the first piece names its media type."""
        ...

    async def moderate(self, model: str, request: ep.CreateModerationRequest) -> ep.CreateModerationResponse:
        """Moderation results, one per input."""
        ...

    async def rerank(self, model: str, request: ep.RerankRequest) -> ep.RerankResponse:
        """Documents ordered by relevance."""
        ...


def serves(provider: object, endpoint: str) -> bool:
    """Whether `provider` serves `endpoint` (one of the names above)."""
    return endpoint in getattr(provider, "endpoints", ())
