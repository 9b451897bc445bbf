"""Golden files for the OpenAI response codec: what a server answers → proto → what the client sees.

`golden/completion_*.json` and `golden/embeddings_response_*.json` hold an `upstream` answer and the exact `client`
object; `golden/chunks_*.json` hold stream chunks the same way, one pair per chunk; `golden/stream_collect_*.json`
hold a whole stream and the completion that folding it must give.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.codec.openai_response import (
    decode_chunk,
    decode_completion,
    decode_embeddings,
    encode_chunk,
    encode_completion,
    encode_embeddings,
    encode_models,
    encode_usage,
)
from gateway.providers.base import collect
from tollgate.gateway.v1 import gateway_pb2 as pb

GOLDEN = Path(__file__).parent / "golden"


def load(name: str) -> Any:
    return orjson.loads((GOLDEN / name).read_bytes())


def _cases(pattern: str, prefix: str) -> list[Any]:
    paths = sorted(GOLDEN.glob(pattern))
    assert paths, f"no golden files match {pattern}"
    return [pytest.param(load(p.name), id=p.stem.removeprefix(prefix)) for p in paths]


def _chunk_cases() -> list[Any]:
    cases = [
        pytest.param(pair, id=f"{path.stem.removeprefix('chunks_')}-{pair['label']}")
        for path in sorted(GOLDEN.glob("chunks_*.json"))
        for pair in load(path.name)["chunks"]
    ]
    assert cases
    return cases


@pytest.mark.parametrize("case", _cases("completion_*.json", "completion_"))
def test_completion_reaches_the_client_in_openai_shape(case: dict[str, Any]) -> None:
    completion = decode_completion(case["upstream"])
    # The completion crosses the engine's gRPC boundary in split mode: that must change nothing.
    completion = pb.CreateChatCompletionResponse.FromString(completion.SerializeToString())
    assert encode_completion(completion) == case["client"]


@pytest.mark.parametrize("case", _chunk_cases())
def test_chunk_reaches_the_client_in_openai_shape(case: dict[str, Any]) -> None:
    chunk = pb.StreamChatCompletionResponse.FromString(decode_chunk(case["upstream"]).SerializeToString())
    assert encode_chunk(chunk) == case["client"]


@pytest.mark.parametrize("case", _cases("embeddings_response_*.json", "embeddings_response_"))
def test_embeddings_reach_the_client_in_openai_shape(case: dict[str, Any]) -> None:
    embeddings = pb.CreateEmbeddingsResponse.FromString(decode_embeddings(case["upstream"]).SerializeToString())
    assert encode_embeddings(embeddings) == case["client"]


def test_encoded_objects_serialise_to_json() -> None:
    """The front door writes these with `orjson.dumps`; nothing the encoders produce may stop it."""
    for path in sorted(GOLDEN.glob("completion_*.json")):
        assert orjson.loads(orjson.dumps(encode_completion(decode_completion(load(path.name)["upstream"]))))
    for pair in load("chunks_openai.json")["chunks"]:
        assert orjson.loads(orjson.dumps(encode_chunk(decode_chunk(pair["upstream"]))))


def test_decoded_completion_holds_the_details_in_typed_fields() -> None:
    completion = decode_completion(load("completion_usage_details.json")["upstream"])
    assert completion.usage == pb.Usage(
        prompt_tokens=2006, completion_tokens=300, total_tokens=2306, cached_tokens=1920, reasoning_tokens=300
    )
    assert completion.choices[0].finish_reason == pb.FINISH_REASON_LENGTH
    assert completion.service_tier == "flex"


def test_decoded_tool_call_chunks_keep_presence() -> None:
    """A delta's absent fields stay absent, so the client sees `id`/`name` only in the first piece of a call."""
    chunks = {pair["label"]: decode_chunk(pair["upstream"]) for pair in load("chunks_openai.json")["chunks"]}
    first = chunks["tool-call-first"].choices[0].delta.tool_calls[0]
    assert first.HasField("id")
    assert first.function.HasField("name")
    assert first.function.arguments == ""
    piece = chunks["tool-call-arguments-1"].choices[0].delta.tool_calls[0]
    assert not piece.HasField("id")
    assert not piece.HasField("type")
    assert not piece.function.HasField("name")
    assert piece.function.arguments == '{"'
    assert chunks["tool-call-finish"].choices[0].HasField("delta")
    assert not chunks["usage-only"].choices
    assert chunks["usage-only"].usage.total_tokens == 11


@pytest.mark.parametrize(
    ("upstream", "client"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("content_filter", "content_filter"),
        ("function_call", "function_call"),
        # A server's own reason (vLLM's "abort", TGI's "eos_token") still ends the choice.
        ("abort", "stop"),
        ("eos_token", "stop"),
        (None, None),
    ],
)
def test_finish_reasons(upstream: str | None, client: str | None) -> None:
    completion = decode_completion({"choices": [{"message": {"content": "x"}, "finish_reason": upstream}]})
    assert encode_completion(completion)["choices"][0]["finish_reason"] == client
    chunk = decode_chunk({"choices": [{"delta": {}, "finish_reason": upstream}]})
    assert encode_chunk(chunk)["choices"][0]["finish_reason"] == client


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            {"prompt_tokens": 10, "completion_tokens": 5},
            pb.Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
            id="total-derived",
        ),
        pytest.param(
            {"prompt_tokens": 10, "completion_tokens": None, "total_tokens": 10, "prompt_tokens_details": None},
            pb.Usage(prompt_tokens=10, total_tokens=10),
            id="nulls",
        ),
        pytest.param(
            {
                "prompt_tokens": 120,
                "completion_tokens": 60,
                "total_tokens": 180,
                "prompt_tokens_details": {"cached_tokens": None, "audio_tokens": 100},
                "completion_tokens_details": {"reasoning_tokens": 20, "audio_tokens": 30},
            },
            pb.Usage(
                prompt_tokens=120,
                completion_tokens=60,
                total_tokens=180,
                prompt_audio_tokens=100,
                reasoning_tokens=20,
                completion_audio_tokens=30,
            ),
            id="audio",
        ),
    ],
)
def test_usage_decoding_is_lenient(raw: dict[str, Any], expected: pb.Usage) -> None:
    completion = decode_completion({"choices": [], "usage": raw})
    assert completion.usage == expected


def test_encode_usage_always_has_the_details() -> None:
    assert encode_usage(pb.Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7, reasoning_tokens=2)) == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 2, "audio_tokens": 0},
    }


def test_non_finite_logprob_is_sent_as_openai_does() -> None:
    """JSON has no -Infinity: a server's -inf logprob goes to the client as -9999.0, OpenAI's own stand-in."""
    chunk = pb.StreamChatCompletionResponse(id="c")
    choice = chunk.choices.add()
    choice.logprobs.content.add(token="x", logprob=float("-inf"), top_logprobs=[pb.TopLogprob(token="y")])
    encoded = encode_chunk(chunk)
    assert encoded["choices"][0]["logprobs"] == {
        "content": [
            {
                "token": "x",
                "logprob": -9999.0,
                "bytes": None,
                "top_logprobs": [{"token": "y", "logprob": 0.0, "bytes": None}],
            }
        ],
        "refusal": None,
    }
    assert orjson.dumps(encoded)


def test_models_list() -> None:
    response = pb.ListModelsResponse(
        models=[
            pb.Model(id="demo", created=1735689600, owned_by="tollgate"),
            pb.Model(id="gpt-4o-mini", created=1735689600, owned_by="openai"),
        ]
    )
    assert encode_models(response) == {
        "object": "list",
        "data": [
            {"id": "demo", "object": "model", "created": 1735689600, "owned_by": "tollgate"},
            {"id": "gpt-4o-mini", "object": "model", "created": 1735689600, "owned_by": "openai"},
        ],
    }
    assert encode_models(pb.ListModelsResponse()) == {"object": "list", "data": []}


def test_chunk_service_tier_reaches_the_client() -> None:
    upstream = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1745000000,
        "model": "gpt-4o-mini",
        "service_tier": "default",
        "choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": None, "finish_reason": None}],
    }
    assert encode_chunk(decode_chunk(upstream))["service_tier"] == "default"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({}, id="no-choices"),
        pytest.param({"choices": [{"message": {"tool_calls": [{"id": "c"}]}}]}, id="tool-call-without-function"),
        pytest.param({"choices": [{"message": {"content": 5}}]}, id="content-number"),
        pytest.param({"choices": "none"}, id="choices-string"),
    ],
)
def test_malformed_completion_raises_what_the_provider_translates(raw: dict[str, Any]) -> None:
    """The provider turns exactly these exception types into one UpstreamError; anything else would be a 500."""
    with pytest.raises((KeyError, TypeError, ValueError, AttributeError)):
        decode_completion(raw)


# ---------------------------------------------------------------------------------------------------- collect


async def _replay(chunks: list[dict[str, Any]]) -> AsyncIterator[pb.StreamChatCompletionResponse]:
    for raw in chunks:
        yield decode_chunk(raw)


async def test_collect_folds_a_stream_into_the_completion() -> None:
    case = load("stream_collect_two_choices.json")
    completion = await collect(_replay(case["chunks"]))
    assert encode_completion(completion) == case["collected"]


async def test_collect_of_a_text_stream_matches_the_non_streaming_answer() -> None:
    """One code path: the fold of OpenAI's text stream is the completion OpenAI would have returned."""
    chunks = {pair["label"]: pair["upstream"] for pair in load("chunks_openai.json")["chunks"]}
    text = [chunks[label] for label in ("role", "content-with-logprobs", "finish-empty-delta", "usage-only")]
    completion = await collect(_replay(text))
    logprobs = {
        "content": [{"token": "Hello", "logprob": -0.0009, "bytes": [72, 101, 108, 108, 111], "top_logprobs": []}]
    }
    assert encode_completion(completion) == {
        "id": "chatcmpl-BNx1aYFQ",
        "object": "chat.completion",
        "created": 1745000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello", "refusal": None},
                "logprobs": {**logprobs, "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": encode_usage(pb.Usage(prompt_tokens=9, completion_tokens=2, total_tokens=11)),
        "system_fingerprint": "fp_0392822090",
    }


async def test_collect_of_an_empty_answer() -> None:
    """A choice that streamed nothing but its end has empty content, not null."""
    raw = [{"id": "c1", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    completion = await collect(_replay(raw))
    assert encode_completion(completion)["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert not completion.HasField("usage")
