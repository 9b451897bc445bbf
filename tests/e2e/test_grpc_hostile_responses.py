"""Hostile `ResponseParams` at the gRPC door, to every backend type, whole and streamed: whatever the wire format
holds (NaN, negative counts, items with no type, unknown types, `*_json` that is not JSON, 100 KB strings) is
INVALID_ARGUMENT, NOT_FOUND or served, never UNKNOWN or INTERNAL."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from tests.e2e.test_grpc_hostile import BUGS, engine_address  # noqa: F401 - a fixture used by name
from tests.e2e.test_hostile_bodies import MODELS
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc
from tollgate.gateway.v1 import responses_pb2 as rpb

Mutate = Callable[[rpb.ResponseParams], Any]


def base(model: str) -> rpb.ResponseParams:
    return rpb.ResponseParams(
        model=model,
        instructions="Be brief.",
        input=[
            rpb.ResponseItem(type="message", role="user", content_text="hi"),
            rpb.ResponseItem(type="function_call", call_id="c1", name="lookup", arguments="{}"),
            rpb.ResponseItem(type="function_call_output", call_id="c1", output="42"),
        ],
        tools=[rpb.ResponseTool(type="function", name="lookup", parameters_json='{"type":"object"}')],
        max_output_tokens=40,
        store=False,
    )


MUTATIONS: list[tuple[str, Mutate]] = [
    ("nan temperature", lambda p: setattr(p, "temperature", math.nan)),
    ("infinite top_p", lambda p: setattr(p, "top_p", math.inf)),
    ("negative max_output_tokens", lambda p: setattr(p, "max_output_tokens", -5)),
    ("empty model", lambda p: p.ClearField("model")),
    ("a key as model", lambda p: setattr(p, "model", "sk-proj-" + "a" * 40)),
    ("no input", lambda p: p.ClearField("input")),
    ("item without type", lambda p: p.input.add(role="user", content_text="x")),
    ("message without role", lambda p: p.input.add(type="message", content_text="x")),
    ("message without content", lambda p: p.input.add(type="message", role="user")),
    ("part without type", lambda p: p.input.add(type="message", role="user").content.add(text="x")),
    ("unknown item", lambda p: p.input.add(type="hologram", extra_json='{"x": 1}')),
    ("item extra not json", lambda p: p.input.add(type="reasoning", extra_json="{nope")),
    ("item extra an array", lambda p: p.input.add(type="reasoning", extra_json="[1]")),
    ("call without id", lambda p: p.input.add(type="function_call", name="f")),
    ("output without output", lambda p: p.input.add(type="function_call_output", call_id="c")),
    ("tool without type", lambda p: p.tools.add(name="x")),
    ("function tool without name", lambda p: p.tools.add(type="function")),
    ("tool parameters not json", lambda p: p.tools.add(type="function", name="f", parameters_json="{")),
    ("built-in tool", lambda p: p.tools.add(type="web_search")),
    ("bad tool choice", lambda p: setattr(p.tool_choice, "mode", "sometimes")),
    ("unknown function choice", lambda p: setattr(p.tool_choice, "function_name", "nope")),
    ("bad text format", lambda p: setattr(p.text_format, "type", "yaml")),
    ("json schema without name", lambda p: setattr(p.text_format, "type", "json_schema")),
    (
        "schema not json",
        lambda p: (
            setattr(p.text_format, "type", "json_schema"),
            setattr(p.text_format, "name", "s"),
            setattr(p.text_format, "schema_json", "x"),
        ),
    ),
    ("extra not json", lambda p: setattr(p, "extra_json", "nope")),
    ("unknown previous", lambda p: setattr(p, "previous_response_id", "resp_nope")),
    ("empty previous", lambda p: setattr(p, "previous_response_id", "")),
    ("huge previous", lambda p: setattr(p, "previous_response_id", "r" * 100_000)),
    ("huge text", lambda p: p.input.add(type="message", role="user", content_text="x" * 100_000)),
    ("too much metadata", lambda p: p.metadata.update({f"k{i}": "v" for i in range(20)})),
    ("huge user", lambda p: setattr(p, "user", "u" * 1000)),
    ("reasoning effort odd", lambda p: setattr(p, "reasoning_effort", "extreme")),
]


# Refused or served as each backend sees fit (a built-in tool: served by an OpenAI backend, refused through chat).
VARIES = {"unknown item", "built-in tool", "unknown function choice", "huge text", "reasoning effort odd"}


@pytest.mark.parametrize(("label", "mutate"), MUTATIONS, ids=[label for label, _ in MUTATIONS])
async def test_hostile_response_params_are_never_bugs(engine_address: str, label: str, mutate: Mutate) -> None:  # noqa: F811 - a fixture
    seen: list[str] = []
    async with grpc.aio.insecure_channel(engine_address) as channel:
        stub = pb_grpc.GatewayServiceStub(channel)
        for model in MODELS:
            params = base(model)
            mutate(params)
            try:
                await stub.CreateResponse(rpb.CreateResponseRequest(params=params), timeout=10)
                seen.append("OK")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() not in BUGS, f"{label} → {model}: {exc.code()} {exc.details()}"
                seen.append(exc.code().name)
            try:
                async for _ in stub.StreamResponse(rpb.StreamResponseRequest(params=params), timeout=10):
                    pass
            except grpc.aio.AioRpcError as exc:
                assert exc.code() not in BUGS, f"{label} (stream) → {model}: {exc.code()} {exc.details()}"
    # What the engine's own rules refuse is refused the same for every backend; the rest is each backend's call.
    if label == "unknown previous":
        assert seen == ["NOT_FOUND"] * len(MODELS)
    elif label not in VARIES:
        assert seen == ["INVALID_ARGUMENT"] * len(MODELS), seen
