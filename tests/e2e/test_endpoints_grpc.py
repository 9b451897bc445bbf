"""A generated gRPC client on the endpoints beside chat: every RPC of endpoints.proto answered as over HTTP, bad
requests as INVALID_ARGUMENT naming the field (never UNKNOWN or INTERNAL), and a model whose backends do not serve
the endpoint refused plainly."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from gateway.testing.endpoint_replies import PNG_1X1, speech_bytes
from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import RunningGateway, StartGateway
from tests.e2e.test_endpoints_sdk import endpoints_config
from tollgate.gateway.v1 import endpoints_pb2 as ep
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc

TIMEOUT = 10.0


@pytest.fixture
async def stub(start_gateway: StartGateway, upstream: FakeOpenAI) -> AsyncIterator[pb_grpc.GatewayServiceStub]:
    gateway: RunningGateway = await start_gateway(endpoints_config(upstream.base_url))
    async with grpc.aio.insecure_channel(gateway.grpc_address) as channel:
        yield pb_grpc.GatewayServiceStub(channel)


def metadata_dict(metadata: object) -> dict[str, str]:
    return {key: value for key, value in metadata or ()}  # type: ignore[attr-defined]


@pytest.mark.parametrize("start_gateway", ["one-process"], indirect=True)
async def test_completion_whole_and_streamed(stub: pb_grpc.GatewayServiceStub, upstream: FakeOpenAI) -> None:
    params = ep.CompletionParams(model="instruct", prompt=["hello there"], single_prompt=True, max_tokens=4)
    call = stub.CreateCompletion(ep.CreateCompletionRequest(params=params), timeout=TIMEOUT)
    whole = await call
    assert whole.choices[0].finish_reason == "length"
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (2, 4)
    assert metadata_dict(await call.trailing_metadata())["x-request-id"].startswith("req_")
    assert upstream.requests[-1].json["prompt"] == "hello there"

    params.include_usage = True
    chunks = [c async for c in stub.StreamCompletion(ep.StreamCompletionRequest(params=params), timeout=TIMEOUT)]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == 4 and not chunks[-1].choices


@pytest.mark.parametrize("start_gateway", ["one-process"], indirect=True)
async def test_images_transcription_speech_moderation_rerank(stub: pb_grpc.GatewayServiceStub) -> None:
    images = await stub.CreateImage(
        ep.CreateImageRequest(model="dall-e-3", prompt="a fox", response_format="b64_json"), timeout=TIMEOUT
    )
    assert [i.b64_json for i in images.data] == [PNG_1X1]

    transcription = await stub.CreateTranscription(
        ep.CreateTranscriptionRequest(model="gpt-4o-transcribe", file=b"abc", filename="a.mp3"), timeout=TIMEOUT
    )
    assert transcription.text == "Heard 3 bytes of a.mp3"
    assert transcription.usage.prompt_tokens == 100

    pieces = [
        p async for p in stub.StreamSpeech(ep.StreamSpeechRequest(model="tts-1", input="Hi", voice="nova"), timeout=10)
    ]
    assert pieces[0].content_type == "audio/mpeg" and all(not p.content_type for p in pieces[1:])
    assert b"".join(p.audio for p in pieces) == speech_bytes("Hi")

    moderation = await stub.CreateModeration(
        ep.CreateModerationRequest(model="omni-moderation-latest", input=["kill it"], single_input=True),
        timeout=TIMEOUT,
    )
    assert moderation.results[0].flagged and moderation.results[0].categories["violence"]

    reranked = await stub.Rerank(
        ep.RerankRequest(model="reranker", query="red fox", documents=["a fox", "red fox"], top_n=1), timeout=TIMEOUT
    )
    assert [(r.index, r.relevance_score, r.document) for r in reranked.results] == [(1, 1.0, "red fox")]


@pytest.mark.parametrize("start_gateway", ["one-process"], indirect=True)
async def test_bad_requests_are_invalid_argument_naming_the_field(stub: pb_grpc.GatewayServiceStub) -> None:
    cases = [
        (stub.CreateCompletion, ep.CreateCompletionRequest(params=ep.CompletionParams(model="instruct")), "prompt"),
        (
            stub.CreateCompletion,
            ep.CreateCompletionRequest(params=ep.CompletionParams(model="instruct", prompt=["x"], n=0)),
            "n",
        ),
        (stub.CreateImage, ep.CreateImageRequest(model="dall-e-3", prompt="x", n=11), "n"),
        (stub.CreateImage, ep.CreateImageRequest(model="dall-e-3", prompt="x", extra_json="[1]"), "extra_json"),
        (stub.CreateTranscription, ep.CreateTranscriptionRequest(model="whisper-1"), "file"),
        (stub.CreateModeration, ep.CreateModerationRequest(model="omni-moderation-latest"), "input"),
        (
            stub.CreateModeration,
            ep.CreateModerationRequest(model="omni-moderation-latest", input_parts_json="{"),
            "input_parts_json",
        ),
        (stub.Rerank, ep.RerankRequest(model="reranker", query="q"), "documents"),
    ]
    for rpc, request, param in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rpc(request, timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (param, caught.value)
        assert metadata_dict(caught.value.trailing_metadata())["tollgate-error-param"] == param


@pytest.mark.parametrize("start_gateway", ["one-process"], indirect=True)
async def test_oversized_audio_and_streams_refused_before_the_first_message(stub: pb_grpc.GatewayServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateTranscription(
            ep.CreateTranscriptionRequest(model="whisper-1", file=bytes(257 * 1024)), timeout=TIMEOUT
        )
    assert metadata_dict(caught.value.trailing_metadata())["tollgate-http-status"] == "413"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.StreamSpeech(ep.StreamSpeechRequest(model="tts-1", input="x", voice="a", speed=9)):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.StreamCompletion(
            ep.StreamCompletionRequest(params=ep.CompletionParams(model="demo-instruct", prompt=["x"]))
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not serve completions" in (caught.value.details() or "")
