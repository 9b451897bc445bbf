"""Golden files for the OpenAI request codec: client JSON → proto → upstream JSON reproduces the body.

Each `golden/chat_request_*.json` holds a realistic request body and the names of the normalisations that apply to
it; `golden/embeddings_request_*.json` holds an embeddings body, which must come back unchanged. The normalisations
are the only differences the codec is allowed to make, and each is written out below.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.codec.openai_decode import decode_chat_params, decode_embeddings_request
from gateway.codec.openai_encode import encode_chat_params, encode_embeddings_request
from gateway.errors import InvalidRequestError
from gateway.validation import validate_chat
from tollgate.gateway.v1 import gateway_pb2 as pb

GOLDEN = Path(__file__).parent / "golden"
Body = dict[str, Any]


def _stop_string_becomes_list(body: Body) -> None:
    """`"stop": "x"` is sent as `"stop": ["x"]`, which every OpenAI-compatible server reads the same way."""
    body["stop"] = [body["stop"]]


def _stream_always_asks_for_usage(body: Body) -> None:
    """A stream always asks upstream for the usage chunk, so accounting is exact; the engine strips it later."""
    body["stream_options"] = {"include_usage": True}


def _stream_false_is_dropped(body: Body) -> None:
    """`"stream": false` is the default, so it is not sent."""
    del body["stream"]


def _absent_tool_type_becomes_function(body: Body) -> None:
    """A tool without `type` is a function tool; it is sent with `"type": "function"`."""
    for tool in body["tools"]:
        tool.setdefault("type", "function")


def _absent_assistant_content_becomes_null(body: Body) -> None:
    """An assistant message without `content` (only tool calls) is sent with `"content": null`."""
    for message in body["messages"]:
        if message["role"] == "assistant":
            message.setdefault("content", None)


NORMALISATIONS: dict[str, Callable[[Body], None]] = {
    "stop_string_becomes_list": _stop_string_becomes_list,
    "stream_always_asks_for_usage": _stream_always_asks_for_usage,
    "stream_false_is_dropped": _stream_false_is_dropped,
    "absent_tool_type_becomes_function": _absent_tool_type_becomes_function,
    "absent_assistant_content_becomes_null": _absent_assistant_content_becomes_null,
}


def _golden(pattern: str) -> list[Any]:
    paths = sorted(GOLDEN.glob(pattern))
    assert paths, f"no golden files match {pattern}"
    return [pytest.param(orjson.loads(p.read_bytes()), id=p.stem.split("_request_")[1]) for p in paths]


CHAT_CASES = _golden("chat_request_*.json")
EMBEDDINGS_CASES = _golden("embeddings_request_*.json")


def expected_upstream(case: dict[str, Any]) -> Body:
    """The request after the case's normalisations; each must actually change the body, or it is listed wrongly."""
    body: Body = copy.deepcopy(case["request"])
    for name in case["normalisations"]:
        before = copy.deepcopy(body)
        NORMALISATIONS[name](body)
        assert body != before, f"normalisation {name} does not apply to this case"
    return body


@pytest.mark.parametrize("case", CHAT_CASES)
def test_chat_request_round_trips(case: dict[str, Any]) -> None:
    request = case["request"]
    params, stream = decode_chat_params(copy.deepcopy(request))
    assert stream is bool(request.get("stream"))
    assert params.model == request["model"]
    encoded = encode_chat_params(params, request["model"], stream=stream)
    assert encoded == expected_upstream(case)


@pytest.mark.parametrize("case", CHAT_CASES)
def test_chat_request_survives_the_wire(case: dict[str, Any]) -> None:
    """The proto crosses processes (front door → engine over gRPC): serialising it changes nothing."""
    params, stream = decode_chat_params(copy.deepcopy(case["request"]))
    again = pb.ChatCompletionParams.FromString(params.SerializeToString())
    assert again == params
    assert encode_chat_params(again, "m", stream=stream) == encode_chat_params(params, "m", stream=stream)


@pytest.mark.parametrize("case", CHAT_CASES)
def test_chat_request_encodes_to_json_bytes_that_read_back_the_same(case: dict[str, Any]) -> None:
    """The provider sends `orjson.dumps` of the encoded body: it must serialise, and read back as the same proto."""
    params, stream = decode_chat_params(copy.deepcopy(case["request"]))
    wire = orjson.dumps(encode_chat_params(params, params.model, stream=stream))
    again, again_stream = decode_chat_params(orjson.loads(wire))
    assert again_stream == stream
    if stream:
        # Only the usage request differs: upstream is always asked for it.
        params.stream_options.include_usage = True
    assert again == params


def test_chat_request_encode_names_the_target_model() -> None:
    """The body sent upstream names the backend's model, not the client's alias."""
    params, _ = decode_chat_params({"model": "fast", "messages": [{"role": "user", "content": "hi"}]})
    assert encode_chat_params(params, "gpt-4o-mini-2024-07-18", stream=False) == {
        "model": "gpt-4o-mini-2024-07-18",
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_chat_request_stream_encoding_follows_the_argument_not_the_params() -> None:
    """A non-stream request can be served by streaming upstream (and the reverse) by choosing `stream` on encode."""
    params, stream = decode_chat_params({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert stream is False
    body = encode_chat_params(params, "m", stream=True)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert "stream" not in encode_chat_params(params, "m", stream=False)


def test_vendor_extras_are_kept_as_json_text_not_interpreted() -> None:
    case = orjson.loads((GOLDEN / "chat_request_vllm_extras.json").read_bytes())
    params, _ = decode_chat_params(case["request"])
    assert orjson.loads(params.extra_json) == {
        "top_k": 20,
        "min_p": 0.0,
        "repetition_penalty": 1.05,
        "chat_template_kwargs": {"enable_thinking": False},
        "guided_json": {"type": "object", "properties": {"summary": {"type": "string"}}},
        "skip_special_tokens": False,
    }
    video = params.messages[0].content_parts[1]
    assert video.WhichOneof("part") == "other_json"
    assert orjson.loads(video.other_json) == {"type": "video_url", "video_url": {"url": "https://example.com/clip.mp4"}}
    assert params.messages[1].reasoning_content.startswith("The user wants")
    assert not params.messages[1].HasField("content")


def test_known_fields_are_typed_in_the_proto() -> None:
    case = orjson.loads((GOLDEN / "chat_request_sampling_params.json").read_bytes())
    params, _ = decode_chat_params(case["request"])
    assert params.extra_json == ""
    assert params.temperature == 1.2
    assert params.n == 3
    assert params.seed == -9007199254740993  # beyond a double's precision: kept as an integer
    assert list(params.stop) == ["\n\n", "END", "###"]
    assert dict(params.logit_bias) == {"50256": -100.0, "1734": 5.5}
    assert dict(params.metadata) == {"project": "haiku-bot", "trace_id": "4bf92f3577b34da6"}
    assert params.response_format.type == "text"


def test_part_and_message_extras_stay_with_their_owner() -> None:
    case = orjson.loads((GOLDEN / "chat_request_cache_control_parts.json").read_bytes())
    params, _ = decode_chat_params(case["request"])
    system, user = params.messages
    assert orjson.loads(system.content_parts[0].extra_json) == {"cache_control": {"type": "ephemeral"}}
    assert orjson.loads(user.extra_json) == {"cache_control": {"type": "ephemeral", "ttl": "1h"}}
    assert user.content_parts[0].file.file_id == "file-6F2ksmvXxt4VdoqmHRw6kL"
    assert orjson.loads(params.tools[0].extra_json) == {"cache_control": {"type": "ephemeral"}}
    assert params.tool_choice.mode == "auto"


def test_tool_calls_and_tool_results_decode_field_by_field() -> None:
    case = orjson.loads((GOLDEN / "chat_request_tools_round_trip.json").read_bytes())
    params, _ = decode_chat_params(case["request"])
    assistant = params.messages[1]
    assert assistant.role == pb.ROLE_ASSISTANT
    assert not assistant.HasField("content")
    assert [(c.id, c.function.name) for c in assistant.tool_calls] == [
        ("call_abc123", "get_current_weather"),
        ("call_def456", "get_current_weather"),
    ]
    assert [m.tool_call_id for m in params.messages[2:]] == ["call_abc123", "call_def456"]
    assert params.tool_choice.function_name == "get_current_weather"
    weather, clock = params.tools
    assert orjson.loads(weather.function.parameters_json)["required"] == ["location", "unit"]
    assert weather.function.strict is True
    assert clock.function.parameters_json == ""
    assert not clock.function.HasField("strict")


def test_empty_content_array_is_rejected_or_kept() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": []}]}
    try:
        params, _ = decode_chat_params(copy.deepcopy(body))
    except InvalidRequestError as exc:  # rejecting it, as OpenAI does, would be just as right
        assert exc.param == "messages[0].content"
        return
    assert encode_chat_params(params, "m", stream=False) == body


def test_file_part_with_no_file_is_rejected_or_kept() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]}
    try:
        params, _ = decode_chat_params(copy.deepcopy(body))
        validate_chat(params)
    except InvalidRequestError as exc:
        assert exc.param is not None
        assert exc.param.startswith("messages[0].content[0]")
        return
    assert encode_chat_params(params, "m", stream=False) == body


_TOOL_CALL_WITH_SIGNATURE = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "lookup", "arguments": "{}"},
    # Gemini's OpenAI-compatible API returns this and requires it back on the next turn.
    "extra_content": {"google": {"thought_signature": "CiQBVKhc7x"}},
}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            {
                "model": "m",
                "messages": [{"role": "assistant", "content": None, "tool_calls": [_TOOL_CALL_WITH_SIGNATURE]}],
            },
            id="tool_call-extra_content",
        ),
        pytest.param(
            {
                "model": "m",
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f", "x-vendor-hint": "cheap"}}],
            },
            id="function-definition-extra",
        ),
        pytest.param(
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "uuid": "img-1"}}]}
                ],
            },
            id="image_url-extra",
        ),
        pytest.param(
            {
                "model": "m",
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "n", "x-vendor": 1}},
            },
            id="json_schema-extra",
        ),
    ],
)
def test_unknown_fields_nested_in_known_objects_are_kept(body: Body) -> None:
    params, _ = decode_chat_params(copy.deepcopy(body))
    assert encode_chat_params(params, "m", stream=False) == body


@pytest.mark.parametrize("case", EMBEDDINGS_CASES)
def test_embeddings_request_round_trips(case: dict[str, Any]) -> None:
    request = case["request"]
    decoded = decode_embeddings_request(copy.deepcopy(request))
    assert decoded.model == request["model"]
    again = pb.CreateEmbeddingsRequest.FromString(decoded.SerializeToString())
    assert encode_embeddings_request(again, request["model"]) == request


@pytest.mark.parametrize(
    ("name", "single", "texts", "token_lists"),
    [
        ("string", True, ["The food was delicious and the waiter..."], []),
        ("strings", False, ["The quick brown fox", "jumped over the lazy dog", ""], []),
        ("single_string_list", False, ["only one"], []),
        ("token_ids", True, [], [[791, 4062, 14198, 39935, 0, 100276]]),
        ("token_id_lists", False, [], [[791, 4062, 14198], [39935, 35308, 927, 279, 16053, 5679], [13]]),
    ],
)
def test_embeddings_inputs_decode_by_shape(
    name: str, single: bool, texts: list[str], token_lists: list[list[int]]
) -> None:
    request = orjson.loads((GOLDEN / f"embeddings_request_{name}.json").read_bytes())["request"]
    decoded = decode_embeddings_request(request)
    assert decoded.single_input is single
    assert list(decoded.input) == texts
    assert [list(t.ids) for t in decoded.input_tokens] == token_lists


def test_embeddings_extras_and_options_decode() -> None:
    request = orjson.loads((GOLDEN / "embeddings_request_base64.json").read_bytes())["request"]
    decoded = decode_embeddings_request(request)
    assert decoded.encoding_format == "base64"
    assert not decoded.HasField("dimensions")
    assert orjson.loads(decoded.extra_json) == {"truncate_prompt_tokens": 512}
