"""The endpoints beside chat at the provider layer: where each request goes for the OpenAI-compatible family and for
Azure (deployment URLs with api-version), which provider types serve which endpoints, and upstream failures mapped
like chat's (mid-stream error events, statuses, malformed answers)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from gateway.config import BackendConfig, Secret
from gateway.errors import RateLimitError, UpstreamError, UpstreamRequestError
from gateway.providers import capabilities as cap
from gateway.providers.azure import AzureOpenAIProvider
from gateway.providers.capabilities import serves
from gateway.providers.mock import MockProvider
from gateway.providers.openai_compat import OpenAICompatibleProvider
from gateway.providers.registry import PROVIDERS
from gateway.testing.loopback import LoopbackServer
from tollgate.gateway.v1 import endpoints_pb2 as ep

ALL = (cap.COMPLETIONS, cap.IMAGES, cap.TRANSCRIPTIONS, cap.SPEECH, cap.MODERATIONS, cap.RERANK)


class Recorder(LoopbackServer):
    """Answers every request with the next queued (status, body, content type); records method, path and body."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, bytes, str]] = []
        self.answers: list[tuple[int, bytes, str]] = []

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs, await request.read(), request.content_type))
        status, body, content_type = self.answers.pop(0)
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})


@pytest.fixture
async def server() -> AsyncIterator[Recorder]:
    async with Recorder() as running:
        yield running


def backend(provider: str, base_url: str, **options: object) -> BackendConfig:
    return BackendConfig(name="b", provider=provider, base_url=base_url, api_key=Secret("k"), options=options)


def test_which_provider_types_serve_which_endpoints() -> None:
    compatible = OpenAICompatibleProvider(backend("vllm", "http://x/v1"))
    azure = AzureOpenAIProvider(backend("azure", "https://r.openai.azure.com"))
    mock = MockProvider(BackendConfig(name="m", provider="mock"))
    assert all(serves(compatible, e) for e in ALL)
    assert [e for e in ALL if serves(azure, e)] == [cap.COMPLETIONS, cap.IMAGES, cap.TRANSCRIPTIONS, cap.SPEECH]
    assert not any(serves(mock, e) for e in ALL)
    anthropic = PROVIDERS["anthropic"](BackendConfig(name="x", provider="anthropic", api_key=Secret("k")), "b")
    gemini = PROVIDERS["gemini"](BackendConfig(name="x", provider="gemini", api_key=Secret("k")), "b")
    assert not any(serves(anthropic, e) for e in ALL)
    assert [e for e in ALL if serves(gemini, e)] == [cap.IMAGES]  # Imagen


async def test_azure_puts_each_endpoint_under_its_deployment(server: Recorder) -> None:
    base = server.base_url
    azure = AzureOpenAIProvider(backend("azure", base, api_version="2025-04-01-preview"))
    image = orjson.dumps({"created": 1, "data": [{"url": "https://x/1.png"}]})
    server.answers = [(200, image, "application/json"), (200, b"hello\n", "text/plain"), (200, b"ID3", "audio/mpeg")]
    try:
        images = await azure.generate_images("my-dalle", ep.CreateImageRequest(prompt="p"))
        text = await azure.transcribe(
            "my whisper", ep.CreateTranscriptionRequest(file=b"abc", filename="a.mp3", response_format="text")
        )
        audio = [p async for p in azure.speak("tts", ep.StreamSpeechRequest(input="hi", voice="alloy"))]
    finally:
        await azure.close()
    assert images.data[0].url == "https://x/1.png"
    assert text.text == "hello\n"
    assert (audio[0].content_type, b"".join(p.audio for p in audio)) == ("audio/mpeg", b"ID3")
    query = "?api-version=2025-04-01-preview"
    assert [(m, p) for m, p, _, _ in server.seen] == [
        ("POST", f"/openai/deployments/my-dalle/images/generations{query}"),
        ("POST", f"/openai/deployments/my%20whisper/audio/transcriptions{query}"),
        ("POST", f"/openai/deployments/tts/audio/speech{query}"),
    ]
    assert server.seen[1][3] == "multipart/form-data"
    assert b'name="file"; filename="a.mp3"' in server.seen[1][2] and b"abc" in server.seen[1][2]


async def test_rerank_goes_to_the_base_urls_rerank(server: Recorder) -> None:
    provider = OpenAICompatibleProvider(backend("vllm", server.base_url + "/v1"))
    answer = {"id": "r", "model": "m", "usage": {"total_tokens": 3}, "results": [{"index": 0, "relevance_score": 0.5}]}
    server.answers = [(200, orjson.dumps(answer), "application/json")]
    try:
        reranked = await provider.rerank("m", ep.RerankRequest(query="q", documents=["d"]))
    finally:
        await provider.close()
    assert server.seen[0][1] == "/v1/rerank"
    assert orjson.loads(server.seen[0][2]) == {"model": "m", "query": "q", "documents": ["d"]}
    assert (reranked.results[0].index, reranked.results[0].relevance_score) == (0, 0.5)


async def test_upstream_failures_map_like_chat(server: Recorder) -> None:
    provider = OpenAICompatibleProvider(backend("openai", server.base_url))
    error = orjson.dumps({"error": {"message": "bad size", "type": "invalid_request_error", "code": "bad_size"}})
    server.answers = [
        (400, error, "application/json"),
        (429, error, "application/json"),
        (200, b"{not json", "application/json"),
        (
            200,
            b'data: {"id":"c","choices":[{"index":0,"text":"a"}]}\n\ndata: {"error":{"message":"x"}}\n\n',
            "text/event-stream",
        ),
        (200, b'data: {"id":"c","choices":[{"index":0,"text":"a"}]}\n\n', "text/event-stream"),
        (200, b"", "audio/mpeg"),
    ]
    params = ep.CompletionParams(prompt=["p"])
    try:
        with pytest.raises(UpstreamRequestError) as caught:
            await provider.generate_images("m", ep.CreateImageRequest(prompt="p"))
        assert (caught.value.code, caught.value.http_status) == ("bad_size", 400)
        with pytest.raises(RateLimitError):
            await provider.moderate("m", ep.CreateModerationRequest(input=["x"]))
        with pytest.raises(UpstreamError, match="malformed"):
            await provider.complete_text("m", params)
        with pytest.raises(UpstreamError):
            _ = [c async for c in provider.stream_text("m", params)]
        with pytest.raises(UpstreamError, match="before it finished"):
            _ = [c async for c in provider.stream_text("m", params)]
        with pytest.raises(UpstreamError, match="no audio"):
            _ = [p async for p in provider.speak("m", ep.StreamSpeechRequest(input="x", voice="v"))]
    finally:
        await provider.close()
    assert orjson.loads(server.seen[3][2])["stream_options"] == {"include_usage": True}
