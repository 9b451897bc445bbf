"""Golden files for the Anthropic request codec, both ways.

`golden/anthropic_request_*.json` hold a Messages API body as a client sends it (and its `anthropic-beta` header).
Through the front door's codec and back out of the Anthropic provider it must come back exactly (passthrough loses
nothing); when the file has an `openai` body, that is exactly what an OpenAI-compatible backend receives instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.codec.anthropic_request import decode_messages_request
from gateway.codec.openai_encode import encode_chat_params
from gateway.errors import InvalidRequestError
from gateway.providers.anthropic_encode import encode_messages_request
from tollgate.gateway.v1 import gateway_pb2 as pb

GOLDEN = Path(__file__).parent / "golden"
CASES = [
    pytest.param(orjson.loads(p.read_bytes()), id=p.stem.removeprefix("anthropic_request_"))
    for p in sorted(GOLDEN.glob("anthropic_request_*.json"))
]


def _decode(case: dict[str, Any]) -> tuple[pb.ChatCompletionParams, bool]:
    params, stream = decode_messages_request(case["request"], case.get("beta", ""))
    # The params cross the engine's gRPC boundary in split mode: that must change nothing.
    return pb.ChatCompletionParams.FromString(params.SerializeToString()), stream


@pytest.mark.parametrize("case", CASES)
def test_an_anthropic_backend_receives_exactly_what_the_client_sent(case: dict[str, Any]) -> None:
    params, stream = _decode(case)
    request = case["request"]
    body = encode_messages_request(params, request["model"], stream=stream, default_max_tokens=1)
    assert body == request
    beta = [flag.strip() for flag in case.get("beta", "").split(",") if flag.strip()]
    assert list(params.anthropic_beta) == beta


@pytest.mark.parametrize("case", [c for c in CASES if "openai" in c.values[0]])
def test_an_openai_backend_receives_the_translation(case: dict[str, Any]) -> None:
    params, stream = _decode(case)
    assert encode_chat_params(params, case["request"]["model"], stream=stream) == case["openai"]


def _body(**fields: Any) -> dict[str, Any]:
    """A valid body with `fields` changed (None removes one)."""
    body: dict[str, Any] = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def _user(*blocks: Any) -> list[Any]:
    return [{"role": "user", "content": list(blocks)}]


TOOL_USE = {"type": "tool_use", "id": "t", "name": "f", "input": "not an object"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], "body"),
        (_body(model=None), "model"),
        (_body(max_tokens=None), "max_tokens"),
        (_body(max_tokens=0), "max_tokens"),
        (_body(messages=[]), "messages"),
        (_body(messages=[{"role": "system", "content": "x"}]), "messages[0].role"),
        (_body(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (_body(messages=_user(7)), "messages[0].content[0]"),
        (_body(messages=_user({"type": "text"})), "messages[0].content[0].text"),
        (_body(messages=[{"role": "assistant", "content": [TOOL_USE]}]), "messages[0].content[0].input"),
        (_body(messages=_user({"type": "tool_result", "content": "x"})), "messages[0].content[0].tool_use_id"),
        (_body(temperature=1.5), "temperature"),
        (_body(system=[{"type": "image"}]), "system[0].type"),
        (_body(tools=[{"name": "f"}]), "tools[0].input_schema"),
        (_body(tool_choice={"type": "some"}), "tool_choice.type"),
        (_body(thinking={"budget_tokens": 5}), "thinking.type"),
        (_body(metadata={"user_id": 5}), "metadata.user_id"),
        (_body(stream="yes"), "stream"),
    ],
)
def test_bad_bodies_are_400s_naming_the_field(body: Any, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        decode_messages_request(body)
    assert caught.value.param == param
    assert caught.value.http_status == 400


def test_deeply_nested_input_is_a_400() -> None:
    deep: Any = {}
    for _ in range(300):
        deep = {"a": deep}
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": deep}]}]}  # fmt: skip
    with pytest.raises(InvalidRequestError, match="nested too deeply"):
        decode_messages_request(body)
