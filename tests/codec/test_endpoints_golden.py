"""Golden files for the codec of the endpoints beside chat (`gateway.codec.endpoints_request` / `_response`):
a client's request → proto → the upstream request; the upstream answer → proto → what the client sees. Every
message crosses a serialisation on the way, as in split mode. Shapes from OpenAI's API reference and vLLM's rerank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf.message import Message

from gateway.codec import endpoints_request as req
from gateway.codec import endpoints_response as resp
from gateway.errors import InvalidRequestError
from tollgate.gateway.v1 import endpoints_pb2 as ep

GOLDEN = Path(__file__).parent / "golden"


def load(name: str) -> Any:
    return orjson.loads((GOLDEN / f"endpoints_{name}.json").read_bytes())


def crossed(message: Message) -> Any:
    """`message` after a trip through its wire format."""
    return type(message).FromString(message.SerializeToString())


@pytest.mark.parametrize("name", ["completions", "completions_tokens"])
def test_completions(name: str) -> None:
    case = load(name)
    params, stream = req.decode_completion_params(case["client_request"])
    assert stream == case["stream"]
    model = case["upstream_request"]["model"]
    assert req.encode_completion_params(crossed(params), model, stream=stream) == case["upstream_request"]
    answer = crossed(resp.decode_text_completion(case["upstream_response"]))
    assert resp.encode_text_completion(answer) == case["client_response"]


def test_streamed_completion_chunks() -> None:
    choice = {"text": "Hi", "index": 0, "logprobs": None, "finish_reason": None}
    chunk = {"id": "c", "object": "text_completion", "created": 1, "model": "m", "choices": [choice], "usage": None}
    assert resp.encode_text_chunk(crossed(resp.decode_text_chunk(chunk))) == {
        k: v for k, v in chunk.items() if k != "usage"
    }
    usage = {"id": "c", "object": "text_completion", "created": 1, "model": "m", "choices": [],
             "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}  # fmt: skip
    assert resp.encode_text_chunk(crossed(resp.decode_text_chunk(usage))) == usage


@pytest.mark.parametrize("name", ["images", "images_gpt_image"])
def test_images(name: str) -> None:
    case = load(name)
    request = crossed(req.decode_image_request(case["client_request"]))
    assert req.encode_image_request(request, case["upstream_request"]["model"]) == case["upstream_request"]
    assert resp.encode_images(crossed(resp.decode_images(case["upstream_response"]))) == case["client_response"]


def test_speech() -> None:
    case = load("speech")
    request = crossed(req.decode_speech_request(case["client_request"]))
    assert req.encode_speech_request(request, case["upstream_request"]["model"]) == case["upstream_request"]


def test_moderations() -> None:
    case = load("moderations")
    request = crossed(req.decode_moderation_request(case["client_request"]))
    assert request.model == req.DEFAULT_MODERATION_MODEL
    assert req.encode_moderation_request(request, request.model) == case["upstream_request"]
    answer = crossed(resp.decode_moderation(case["upstream_response"]))
    assert resp.encode_moderation(answer) == case["client_response"]


def test_rerank() -> None:
    case = load("rerank")
    request = crossed(req.decode_rerank_request(case["client_request"]))
    assert req.encode_rerank_request(request, case["upstream_request"]["model"]) == case["upstream_request"]
    answer = crossed(resp.decode_rerank(case["upstream_response"]))
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (56, 56)
    assert resp.encode_rerank(answer) == case["client_response"]


def test_transcription() -> None:
    case = load("transcription")
    request = crossed(req.decode_transcription_form(case["form"], (b"RIFF", "a.wav", "audio/wav")))
    assert (request.file, request.filename, request.content_type) == (b"RIFF", "a.wav", "audio/wav")
    assert req.transcription_form(request, "whisper-1") == [tuple(pair) for pair in case["upstream_form"]]
    body = orjson.dumps(case["upstream_response"])
    answer = crossed(resp.decode_transcription(body, "verbose_json"))
    assert not answer.HasField("usage")  # a duration, not tokens: nothing to count as tokens
    assert resp.encode_transcription(answer) == case["client_response"]
    text = crossed(resp.decode_transcription(b"1\n00:00:00,000 --> 00:00:01,000\nHi\n", "srt"))
    assert (text.response_format, text.text) == ("srt", "1\n00:00:00,000 --> 00:00:01,000\nHi\n")


@pytest.mark.parametrize(
    ("decode", "body", "param"),
    [
        (req.decode_completion_params, {"model": "m"}, "prompt"),
        (req.decode_completion_params, {"model": "m", "prompt": [1, "a"]}, "prompt[0]"),
        (req.decode_completion_params, {"model": "m", "prompt": [[]]}, "prompt[0]"),
        (req.decode_completion_params, {"model": "m", "prompt": "a", "max_tokens": "5"}, "max_tokens"),
        (req.decode_completion_params, {"model": "m", "prompt": "a", "echo": 1}, "echo"),
        (req.decode_completion_params, {"model": "m", "prompt": "a", "stop": [1]}, "stop[0]"),
        (req.decode_completion_params, {"model": "m", "prompt": "a", "logit_bias": {"1": "x"}}, "logit_bias.1"),
        (req.decode_completion_params, {"prompt": "a"}, "model"),
        (req.decode_image_request, {"model": "m", "prompt": 5}, "prompt"),
        (req.decode_image_request, {"model": "m"}, "prompt"),
        (req.decode_image_request, {"model": "m", "prompt": "p", "n": 1.5}, "n"),
        (req.decode_speech_request, {"model": "m", "input": "x"}, "voice"),
        (req.decode_speech_request, {"model": "m", "input": "x", "voice": "v", "speed": "fast"}, "speed"),
        (req.decode_moderation_request, {"input": 5}, "input"),
        (req.decode_moderation_request, {"input": [{"type": 5}]}, "input[0].type"),
        (req.decode_rerank_request, {"model": "m", "query": "q", "documents": [{"text": 1}]}, "documents[0].text"),
        (req.decode_rerank_request, {"model": "m", "query": "q", "documents": "d"}, "documents"),
    ],
)
def test_bad_requests_name_the_field(decode: Any, body: Any, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        decode(body)
    assert caught.value.param == param


def test_a_client_cannot_set_the_gateways_own_fields() -> None:
    params, _ = req.decode_completion_params({"model": "m", "prompt": "a", "include_usage": True, "extra_json": "x"})
    assert not params.include_usage
    assert orjson.loads(params.extra_json) == {"include_usage": True, "extra_json": "x"}


def test_bad_form_values_name_the_field() -> None:
    for fields, param in (({"model": ["m"], "temperature": ["hot"]}, "temperature"), ({}, "model")):
        with pytest.raises(InvalidRequestError) as caught:
            req.decode_transcription_form(fields, (b"x", "a", "b"))
        assert caught.value.param == param
    with pytest.raises(InvalidRequestError) as caught:
        req.decode_transcription_form({"model": ["m"]}, None)
    assert caught.value.param == "file"


def test_malformed_upstream_answers_raise_what_providers_report() -> None:
    for decode, raw in (
        (resp.decode_moderation, {"id": "x"}),
        (resp.decode_rerank, {"results": [{"index": "a", "relevance_score": 1}]}),
        (resp.decode_images, {"data": [5]}),
    ):
        with pytest.raises((KeyError, TypeError, ValueError, AttributeError)):
            decode(raw)
    assert isinstance(ep.TokenUsage(), Message)
