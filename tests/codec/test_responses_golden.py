"""The Responses codec against golden JSON shaped as OpenAI documents it: a request, events and items round-trip
unchanged (nothing a client or OpenAI sends is lost), and a response echoes the client's request, not the
backend's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.codec.responses_request import decode_response_params, encode_response_params
from gateway.codec.responses_response import decode_event, decode_response, encode_event, encode_response
from gateway.errors import InvalidRequestError

GOLDEN: dict[str, Any] = json.loads((Path(__file__).parent / "golden" / "responses_round_trip.json").read_text())


def test_a_request_round_trips_unchanged() -> None:
    request = GOLDEN["request"]
    params, stream = decode_response_params({**request, "stream": True})
    assert stream is True
    assert params.tools[0].name == "weather" and params.tools[1].type == "web_search"
    assert params.input[0].type == "message" and params.input[0].content_text == "Answer in French."
    assert params.input[5].output == "sunny" and not params.input[6].HasField("output")
    assert params.tool_choice.function_name == "weather" and params.text_format.name == "answer"
    encoded = encode_response_params(params, "gpt-5", stream=False)
    # An item given without a type is a message, and is sent with its type.
    expected = json.loads(json.dumps(request))
    expected["input"][0]["type"] = "message"
    assert encoded == expected


def test_a_string_input_stays_a_string() -> None:
    params, stream = decode_response_params({"model": "m", "input": "hi"})
    assert not stream and encode_response_params(params, "m", stream=True) == {
        "model": "m",
        "input": "hi",
        "stream": True,
    }


@pytest.mark.parametrize("event", GOLDEN["events"], ids=lambda e: e["type"])
def test_events_round_trip_unchanged(event: dict[str, Any]) -> None:
    assert encode_event(decode_event(event)) == event


def test_a_response_keeps_its_own_fields_and_echoes_the_clients_request() -> None:
    upstream = GOLDEN["response"]
    response = decode_response(upstream)
    params, _ = decode_response_params(GOLDEN["request"])
    response.request.CopyFrom(params)
    response.request.ClearField("input")
    response.id = "resp_gateway"
    shown = encode_response(response)
    assert shown["id"] == "resp_gateway" and shown["object"] == "response"
    for key in ("created_at", "status", "model", "output", "usage", "background", "service_tier", "error"):
        assert shown[key] == upstream[key], key
    # The client's request, not the backend's echo: it stored nothing upstream, and its tools are the client's.
    assert shown["store"] is True and len(shown["tools"]) == 3
    assert shown["tool_choice"] == {"type": "function", "name": "weather"}
    assert shown["text"]["format"]["name"] == "answer" and shown["metadata"] == {"team": "search"}
    assert shown["truncation"] == "auto" and shown["user"] == "user-1"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], "body"),
        ({}, "model"),
        ({"model": 1}, "model"),
        ({"model": "m", "input": 5}, "input"),
        ({"model": "m", "input": [{"content": "x"}]}, "input[0].type"),
        ({"model": "m", "input": [{"type": "message", "role": 3}]}, "input[0].role"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": 1}]}]},
            "input[0].content[0].text",
        ),
        ({"model": "m", "tools": [{"type": "function", "name": "f", "parameters": []}]}, "tools[0].parameters"),
        ({"model": "m", "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "m", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"model": "m", "metadata": {"a": 1}}, "metadata.a"),
        ({"model": "m", "stream": "yes"}, "stream"),
        ({"model": "m", "temperature": "hot"}, "temperature"),
    ],
)
def test_bad_json_types_name_the_field(body: Any, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        decode_response_params(body)
    assert caught.value.param == param
