"""The official `openai` SDK, unchanged, on the endpoints beside chat: legacy completions (plain and streamed),
images, audio transcriptions and speech, moderations; rerank over plain HTTP. In one process and split over gRPC,
against the fake OpenAI server (which speaks each endpoint's documented shape)."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import openai
import pytest

from gateway.testing.endpoint_replies import PNG_1X1, speech_bytes
from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.conftest import UPSTREAM_KEY, RunningGateway, StartGateway

MODELS = """
  - {name: instruct, targets: [{backend: primary, model: gpt-3.5-turbo-instruct}]}
  - {name: dall-e-3, targets: [{backend: primary}]}
  - {name: gpt-image-1, targets: [{backend: primary}]}
  - {name: whisper-1, targets: [{backend: primary}]}
  - {name: gpt-4o-transcribe, targets: [{backend: primary}]}
  - {name: tts-1, targets: [{backend: primary}]}
  - {name: omni-moderation-latest, targets: [{backend: primary}]}
  - {name: reranker, targets: [{backend: primary, model: BAAI/bge-reranker-base}]}
  - {name: demo-instruct, targets: [{backend: demo}]}
  - {name: instruct-short, targets: [{backend: primary}], context_fallback: [demo-instruct, instruct]}
"""


def endpoints_config(upstream_url: str, extra: str = "") -> str:
    return f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: none
server: {{max_body: 64KiB, max_audio: 256KiB, shutdown_grace: 1s, drain_delay: 0s}}
backends:
  - {{name: primary, provider: openai, base_url: "{upstream_url}", api_key: {UPSTREAM_KEY}, read_timeout: 5s,
      connect_timeout: 1s}}
  - {{name: demo, provider: mock}}
{extra}
models:{MODELS}"""


@pytest.fixture
async def gateway(start_gateway: StartGateway, upstream: FakeOpenAI) -> RunningGateway:
    return await start_gateway(endpoints_config(upstream.base_url))


def client(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, timeout=10)


async def test_completion(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    raw = await client(gateway).completions.with_raw_response.create(
        model="instruct", prompt="Say this is a test", max_tokens=5, echo=True, logprobs=2, suffix="!"
    )
    completion = raw.parse()
    choice = completion.choices[0]
    assert choice.text.startswith("Say this is a testThis is a completion")
    assert choice.finish_reason == "length"
    assert choice.logprobs is not None and len(choice.logprobs.tokens or []) == 5
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 5)
    assert raw.headers["x-request-id"].startswith("req_")
    sent = upstream.requests[-1]
    assert (sent.path, sent.headers["authorization"]) == ("/v1/completions", f"Bearer {UPSTREAM_KEY}")
    assert sent.json == {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": "Say this is a test",
        "max_tokens": 5,
        "echo": True,
        "logprobs": 2,
        "suffix": "!",
    }


async def test_completion_of_several_prompts_and_token_ids(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    completion = await client(gateway).completions.create(model="instruct", prompt=["one two", "three"], n=2)
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    assert completion.usage is not None and completion.usage.prompt_tokens == 3
    await client(gateway).completions.create(model="instruct", prompt=[[1, 2, 3], [4]])
    assert upstream.requests[-1].json["prompt"] == [[1, 2, 3], [4]]


async def test_streamed_completion(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    stream = await client(gateway).completions.create(model="instruct", prompt="hello there", stream=True)
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    whole = await client(gateway).completions.create(model="instruct", prompt="hello there")
    assert text == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks), "the usage chunk is stripped when the client did not ask for it"
    assert upstream.requests[-2].json["stream_options"] == {"include_usage": True}


async def test_streamed_completion_with_usage(gateway: RunningGateway) -> None:
    stream = await client(gateway).completions.create(
        model="instruct", prompt="hello", stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (1, 8)


async def test_a_backend_without_completions_is_a_400_naming_the_model(gateway: RunningGateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client(gateway).completions.create(model="demo-instruct", prompt="hi")
    assert "demo-instruct" in caught.value.message and "does not serve completions" in caught.value.message
    assert caught.value.code == "unsupported_endpoint"


async def test_a_context_fallback_that_cannot_serve_the_endpoint_is_a_400(
    gateway: RunningGateway, upstream: FakeOpenAI
) -> None:
    upstream.add_fault(Fault(status=400, path="/v1/completions", code="context_length_exceeded", message="too long"))
    with pytest.raises(openai.BadRequestError) as caught:
        await client(gateway).completions.create(model="instruct-short", prompt="hi")
    # The context fallback is planned mid-way, unfiltered: its first model cannot serve completions, and says so.
    assert caught.value.code == "unsupported_endpoint"
    assert "context fallback on backend 'demo' does not serve completions" in caught.value.message


async def test_bad_completion_input_names_the_field(gateway: RunningGateway) -> None:
    for body, param in (
        ({"model": "instruct"}, "prompt"),
        ({"model": "instruct", "prompt": "x", "temperature": 9}, "temperature"),
        ({"model": "instruct", "prompt": "x", "logprobs": 6}, "logprobs"),
        ({"model": "instruct", "prompt": []}, "prompt"),
        ({"model": "instruct", "prompt": "x", "stream_options": {}}, "stream_options"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            await client(gateway).post("/completions", body=body, cast_to=object)
        assert caught.value.status_code == 400
        assert isinstance(caught.value.body, dict) and caught.value.body.get("param") == param, caught.value.body


async def test_images_as_url_and_b64(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    images = await client(gateway).images.generate(model="dall-e-3", prompt="a red fox", n=2)
    assert images.data is not None and len(images.data) == 2
    assert (images.data[0].url or "").startswith("https://images.fake.example/")
    assert images.data[0].revised_prompt == "A picture of a red fox"
    b64 = await client(gateway).images.generate(model="dall-e-3", prompt="a fox", response_format="b64_json")
    assert b64.data is not None and b64.data[0].b64_json == PNG_1X1 and b64.data[0].url is None
    assert upstream.requests[-1].json == {"model": "dall-e-3", "prompt": "a fox", "response_format": "b64_json"}
    token_priced = await client(gateway).images.generate(model="gpt-image-1", prompt="a fox", size="1024x1024")
    assert token_priced.usage is not None and token_priced.usage.output_tokens == 272


async def test_transcription_in_every_format(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    audio = ("speech.wav", b"RIFF" + bytes(32_000), "audio/wav")
    plain = await client(gateway).audio.transcriptions.create(model="whisper-1", file=audio, prompt="hi")
    assert plain.text == "Heard 32004 bytes of speech.wav after: hi"
    sent = upstream.requests[-1]
    assert sent.json["file"] == {"filename": "speech.wav", "size": 32004, "content_type": "audio/wav"}
    assert (sent.json["model"], sent.json["prompt"]) == ("whisper-1", "hi")
    text = await client(gateway).audio.transcriptions.create(model="whisper-1", file=audio, response_format="text")
    assert text.strip() == "Heard 32004 bytes of speech.wav"
    verbose = await client(gateway).audio.transcriptions.create(
        model="whisper-1", file=audio, response_format="verbose_json", timestamp_granularities=["segment"]
    )
    assert verbose.language == "english" and verbose.duration == pytest.approx(2.0)
    assert verbose.segments is not None and verbose.segments[0].text == verbose.text
    assert upstream.requests[-1].json["timestamp_granularities[]"] == "segment"
    srt = await client(gateway).audio.transcriptions.create(model="whisper-1", file=audio, response_format="srt")
    assert "00:00:00,000 --> 00:00:01,000" in srt


async def test_an_audio_file_over_the_limit_is_a_413(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    sent = len(upstream.requests)
    with pytest.raises(openai.APIStatusError) as caught:
        await client(gateway).audio.transcriptions.create(model="whisper-1", file=("big.wav", bytes(300 * 1024)))
    assert caught.value.status_code == 413
    assert isinstance(caught.value.body, dict) and caught.value.body.get("param") == "file"
    assert len(upstream.requests) == sent, "nothing went upstream"


async def test_transcription_without_a_file_is_a_400(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as session:
        form = aiohttp.MultipartWriter("form-data")
        form.append("whisper-1").set_content_disposition("form-data", name="model")
        async with session.post(gateway.base_url + "/audio/transcriptions", data=form) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "file"
        async with session.post(gateway.base_url + "/audio/transcriptions", json={"model": "whisper-1"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "invalid_content_type"


async def test_speech_streams_the_audio(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    upstream.chunk_delay = 0.01
    async with client(gateway).audio.speech.with_streaming_response.create(
        model="tts-1", input="Hello there, world.", voice="alloy", response_format="opus"
    ) as response:
        assert response.headers["content-type"] == "audio/opus"
        pieces = [piece async for piece in response.iter_bytes()]
    assert b"".join(pieces) == speech_bytes("Hello there, world.")
    assert len(pieces) > 1, "the audio arrived in pieces, as it was made"
    assert upstream.requests[-1].json == {
        "model": "tts-1",
        "input": "Hello there, world.",
        "voice": "alloy",
        "response_format": "opus",
    }


async def test_speech_cut_mid_way_is_not_a_whole_answer(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    """Audio has no in-band error: the gateway breaks the connection off before the body's end, and the SDK sees a
    failed request, never a short file."""
    upstream.add_fault(Fault(path="/v1/audio/speech", fail_after_chunks=3, fail_with="reset"))
    with pytest.raises(openai.APIConnectionError):
        await client(gateway).audio.speech.create(model="tts-1", input="Hello there", voice="alloy")
    # The next one is whole again.
    speech = await client(gateway).audio.speech.create(model="tts-1", input="Hello there", voice="alloy")
    assert speech.read() == speech_bytes("Hello there")


async def test_moderation(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    result = await client(gateway).moderations.create(input=["I will kill the process", "a nice day"])
    assert result.model == "omni-moderation-latest"
    assert [r.flagged for r in result.results] == [True, False]
    assert result.results[0].categories.violence is True
    assert result.results[0].category_scores.violence == pytest.approx(0.9)
    assert result.results[0].category_applied_input_types is not None
    assert upstream.requests[-1].json == {
        "model": "omni-moderation-latest",
        "input": ["I will kill the process", "a nice day"],
    }
    multimodal = await client(gateway).moderations.create(
        model="omni-moderation-latest",
        input=[{"type": "text", "text": "kill"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
    )
    assert multimodal.results[0].flagged


async def _post(gateway: RunningGateway, path: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(gateway.http_url + path, json=body) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank", "/v2/rerank"])
async def test_rerank(gateway: RunningGateway, upstream: FakeOpenAI, path: str) -> None:
    body = {
        "model": "reranker",
        "query": "what is a fox",
        "documents": ["a dog", {"text": "a fox is an animal"}, "what a day"],
        "top_n": 2,
        "return_documents": True,
    }
    status, answer = await _post(gateway, path, body)
    assert status == 200, answer
    assert [r["index"] for r in answer["results"]] == [1, 2]
    assert answer["results"][0]["document"] == {"text": "a fox is an animal"}
    assert answer["results"][0]["relevance_score"] == pytest.approx(0.75)
    assert answer["usage"]["total_tokens"] == 3 * 4 + 2 + 5 + 3
    sent = upstream.requests[-1]
    assert (sent.path, sent.json["model"], sent.json["documents"][1]) == (
        "/v1/rerank",
        "BAAI/bge-reranker-base",
        "a fox is an animal",
    )


async def test_bad_rerank_input_names_the_field(gateway: RunningGateway) -> None:
    for body, param in (
        ({"model": "reranker", "documents": ["a"]}, "query"),
        ({"model": "reranker", "query": "q", "documents": [1]}, "documents[0]"),
        ({"model": "reranker", "query": "q", "documents": []}, "documents"),
        ({"model": "reranker", "query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
    ):
        status, answer = await _post(gateway, "/v1/rerank", body)
        assert (status, answer["error"]["param"]) == (400, param), answer


async def test_upstream_failure_fails_over_and_errors_keep_their_shape(
    start_gateway: StartGateway, upstream: FakeOpenAI
) -> None:
    async with FakeOpenAI(api_key=UPSTREAM_KEY) as second:
        extra = f"""  - {{name: second, provider: vllm, base_url: "{second.base_url}", api_key: {UPSTREAM_KEY}}}"""
        text = endpoints_config(upstream.base_url, extra).replace(
            "{name: reranker, targets: [{backend: primary, model: BAAI/bge-reranker-base}]}",
            "{name: reranker, targets: [{backend: primary, model: r}, {backend: second, model: r, priority: 1}]}",
        )
        gateway = await start_gateway(text)
        upstream.add_fault(Fault(status=503, path="/v1/rerank"))
        status, answer = await _post(gateway, "/v1/rerank", {"model": "reranker", "query": "q", "documents": ["q"]})
        assert status == 200, answer
        assert second.requests[-1].path == "/v1/rerank"
        upstream.add_fault(Fault(status=400, path="/v1/images/generations", message="bad size", code="invalid_size"))
        with pytest.raises(openai.BadRequestError) as caught:
            await client(gateway).images.generate(model="dall-e-3", prompt="x")
        assert caught.value.code == "invalid_size"


def test_the_fake_png_is_a_png() -> None:
    assert base64.b64decode(PNG_1X1).startswith(b"\x89PNG")


async def test_a_large_upload_within_max_audio_crosses_both_modes(
    start_gateway: StartGateway, upstream: FakeOpenAI
) -> None:
    """A 6 MB file, far over `server.max_body` (which bounds JSON bodies) but within `max_audio`: read in pieces by
    the front door, and carried to a split engine in one gRPC message."""
    gateway = await start_gateway(endpoints_config(upstream.base_url).replace("max_audio: 256KiB", "max_audio: 8MiB"))
    audio = ("long.wav", bytes(6 * 1024 * 1024), "audio/wav")
    transcription = await client(gateway).audio.transcriptions.create(model="whisper-1", file=audio)
    assert transcription.text == f"Heard {6 * 1024 * 1024} bytes of long.wav"
