"""Golden files for the Anthropic response codec, both ways: what a backend answers → proto → what an Anthropic
client gets, for an Anthropic backend (passthrough: the Message and its events come back as they were) and for an
OpenAI-compatible one (translation). Streams are compared event by event, in Anthropic's exact framing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.codec.anthropic_response import MessageStreamEncoder, encode_message, error_body, error_event
from gateway.codec.openai_response import decode_chunk, decode_completion
from gateway.errors import RateLimitError, ServiceUnavailableError, UpstreamError, UpstreamRequestError
from gateway.providers.anthropic_decode import StreamTranslator, decode_message
from tollgate.gateway.v1 import gateway_pb2 as pb

GOLDEN = Path(__file__).parent / "golden"
# Anthropic's framing: `event: <type>` then `data: <json of that type>`, then a blank line.
_EVENT = re.compile(rb"event: ([a-z_]+)\ndata: ([^\n]+)\n\n")


def load(name: str) -> Any:
    return orjson.loads((GOLDEN / name).read_bytes())


def _cases(name: str) -> list[Any]:
    return [pytest.param(c, id=c["label"]) for c in load(name)["cases"]]


def events(raw: bytes) -> list[list[Any]]:
    """The stream as [type, data] pairs; anything but whole, well-framed events fails."""
    out, at = [], 0
    for match in _EVENT.finditer(raw):
        assert match.start() == at, f"junk before {match.group(0)!r}"
        at = match.end()
        data = orjson.loads(match.group(2))
        assert data["type"] == match.group(1).decode()
        out.append([match.group(1).decode(), data])
    assert at == len(raw), "a trailing partial event"
    return out


def _wire(message: Any) -> Any:
    """Across the engine's gRPC boundary and back (split mode), which must change nothing."""
    return type(message).FromString(message.SerializeToString())


@pytest.mark.parametrize("case", _cases("anthropic_message_passthrough.json"))
def test_an_anthropic_message_passes_through(case: dict[str, Any]) -> None:
    assert encode_message(_wire(decode_message(case["upstream"], 0))) == case["upstream"]


@pytest.mark.parametrize("case", _cases("anthropic_message_from_openai.json"))
def test_an_openai_completion_becomes_a_message(case: dict[str, Any]) -> None:
    assert encode_message(_wire(decode_completion(case["openai"]))) == case["client"]


def _encode(chunks: list[pb.StreamChatCompletionResponse]) -> bytes:
    encoder = MessageStreamEncoder()
    out = encoder.start(chunks[0])
    for chunk in chunks[1:]:
        out += encoder.feed(chunk)
    return out + encoder.finish()


def test_an_anthropic_stream_passes_through() -> None:
    case = load("anthropic_stream_passthrough.json")
    translator = StreamTranslator(0)
    chunks = [_wire(c) for e in case["upstream"] if (c := translator.feed(e, "claude")) is not None]
    assert events(_encode(chunks)) == case["client"]


def test_an_openai_stream_becomes_anthropic_events() -> None:
    case = load("anthropic_stream_from_openai.json")
    assert events(_encode([_wire(decode_chunk(c)) for c in case["openai"]])) == case["client"]


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (UpstreamRequestError("bad", status=400), 400, "invalid_request_error"),
        (UpstreamRequestError("gone", status=404), 404, "not_found_error"),
        (UpstreamRequestError("odd", status=422), 422, "invalid_request_error"),
        (RateLimitError("slow", retry_after=3), 429, "rate_limit_error"),
        (ServiceUnavailableError("busy"), 503, "overloaded_error"),
        (UpstreamError("broke"), 502, "api_error"),
    ],
)
def test_errors_take_anthropic_shape(error: Any, status: int, kind: str) -> None:
    body = error_body(error, "req_1")
    assert error.http_status == status
    assert body == {"type": "error", "error": {"type": kind, "message": error.message}, "request_id": "req_1"}
    assert events(error_event(error, "req_1")) == [["error", body]]
