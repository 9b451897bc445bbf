"""Hostile and invalid request bodies: each is an `InvalidRequestError` naming the exact bad field, never anything else.

Each body goes through what the HTTP door does with it: the codec (JSON types) and then `gateway.validation` (the
values), which the engine runs for both doors.

The property test at the end is the codec's half of "bad input never gets a 5xx": whatever a client sends, decoding
either succeeds or raises `InvalidRequestError` (which the front door renders as a 400).
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.codec.openai_decode import decode_chat_params, decode_embeddings_request
from gateway.codec.openai_encode import encode_chat_params
from gateway.errors import InvalidRequestError
from gateway.validation import validate_chat, validate_embeddings

GOLDEN = Path(__file__).parent / "golden"


def chat(**fields: Any) -> dict[str, Any]:
    """A valid chat body with `fields` replacing (or, set to `...`, removing) its own."""
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


def user(content: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


def tools(function: Any) -> list[dict[str, Any]]:
    return [{"type": "function", "function": function}]


ASSISTANT_CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
}

CHAT_INVALID = [
    # The body itself.
    pytest.param([], "body", id="body-list"),
    pytest.param("{}", "body", id="body-string"),
    pytest.param(42, "body", id="body-number"),
    pytest.param(None, "body", id="body-null"),
    # model
    pytest.param(chat(model=...), "model", id="model-missing"),
    pytest.param(chat(model=None), "model", id="model-null"),
    pytest.param(chat(model=4), "model", id="model-number"),
    pytest.param(chat(model=["gpt-4o"]), "model", id="model-list"),
    pytest.param(chat(model=""), "model", id="model-empty"),
    # messages
    pytest.param(chat(messages=...), "messages", id="messages-missing"),
    pytest.param(chat(messages=[]), "messages", id="messages-empty"),
    pytest.param(chat(messages="Hello"), "messages", id="messages-string"),
    pytest.param(chat(messages={"role": "user", "content": "Hello"}), "messages", id="messages-object"),
    pytest.param(chat(messages=["Hello"]), "messages[0]", id="message-string"),
    pytest.param(chat(messages=[{"role": "user", "content": "a"}, None]), "messages[1]", id="message-null"),
    pytest.param(chat(messages=[{"content": "Hello"}]), "messages[0].role", id="role-missing"),
    pytest.param(chat(messages=[{"role": "robot", "content": "Hello"}]), "messages[0].role", id="role-unknown"),
    pytest.param(chat(messages=[{"role": "User", "content": "Hello"}]), "messages[0].role", id="role-capitalised"),
    pytest.param(chat(messages=[{"role": 2, "content": "Hello"}]), "messages[0].role", id="role-number"),
    pytest.param(chat(messages=user(42)), "messages[0].content", id="content-number"),
    pytest.param(chat(messages=user({"text": "Hello"})), "messages[0].content", id="content-object"),
    pytest.param(chat(messages=[{"role": "user"}]), "messages[0].content", id="content-missing-for-user"),
    pytest.param(chat(messages=user(None)), "messages[0].content", id="content-null-for-user"),
    pytest.param(chat(messages=user(["Hello"])), "messages[0].content[0]", id="part-string"),
    pytest.param(chat(messages=user([{"text": "Hello"}])), "messages[0].content[0].type", id="part-type-missing"),
    pytest.param(chat(messages=user([{"type": "text", "text": 1}])), "messages[0].content[0].text", id="text-number"),
    pytest.param(
        chat(messages=user([{"type": "image_url", "image_url": "https://x/y.png"}])),
        "messages[0].content[0].image_url",
        id="image_url-string",
    ),
    pytest.param(
        chat(messages=user([{"type": "image_url", "image_url": {"detail": "low"}}])),
        "messages[0].content[0].image_url.url",
        id="image_url-url-missing",
    ),
    pytest.param(
        chat(messages=user([{"type": "image_url", "image_url": {"url": "u", "detail": 1}}])),
        "messages[0].content[0].image_url.detail",
        id="image_url-detail-number",
    ),
    pytest.param(
        chat(messages=user([{"type": "input_audio", "input_audio": {"data": "UklGRg=="}}])),
        "messages[0].content[0].input_audio.format",
        id="input_audio-format-missing",
    ),
    pytest.param(
        chat(messages=user([{"type": "file", "file": {"file_id": 7}}])),
        "messages[0].content[0].file.file_id",
        id="file-id-number",
    ),
    pytest.param(
        chat(messages=[{"role": "user", "content": "Hi", "name": 7}]), "messages[0].name", id="message-name-number"
    ),
    pytest.param(
        chat(messages=[*user("Hi"), ASSISTANT_CALL, {"role": "tool", "content": "42"}]),
        "messages[2].tool_call_id",
        id="tool-message-without-tool_call_id",
    ),
    pytest.param(
        chat(messages=[*user("Hi"), ASSISTANT_CALL, {"role": "tool", "content": "42", "tool_call_id": 1}]),
        "messages[2].tool_call_id",
        id="tool_call_id-number",
    ),
    pytest.param(
        chat(messages=[{"role": "assistant", "content": None, "tool_calls": {"id": "c"}}]),
        "messages[0].tool_calls",
        id="tool_calls-object",
    ),
    pytest.param(
        chat(messages=[{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]),
        "messages[0].tool_calls[0].id",
        id="tool_call-id-missing",
    ),
    pytest.param(
        chat(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}]),
        "messages[0].tool_calls[0].function",
        id="tool_call-function-missing",
    ),
    pytest.param(
        chat(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}]}]),
        "messages[0].tool_calls[0].function.arguments",
        id="tool_call-arguments-object-not-text",
    ),
    # Sampling numbers.
    pytest.param(chat(temperature=2.5), "temperature", id="temperature-above-2"),
    pytest.param(chat(temperature=-0.1), "temperature", id="temperature-negative"),
    pytest.param(chat(temperature="0.7"), "temperature", id="temperature-string"),
    pytest.param(chat(temperature=True), "temperature", id="temperature-bool"),
    # 1e999 is what a lenient JSON parser makes of an overflowing literal: infinity.
    pytest.param(chat(temperature=1e999), "temperature", id="temperature-infinite"),
    pytest.param(chat(temperature=float("nan")), "temperature", id="temperature-nan"),
    pytest.param(chat(top_p=1.01), "top_p", id="top_p-above-1"),
    pytest.param(chat(presence_penalty=2.5), "presence_penalty", id="presence_penalty-above-2"),
    pytest.param(chat(frequency_penalty=-3), "frequency_penalty", id="frequency_penalty-below-minus-2"),
    pytest.param(chat(n=0), "n", id="n-0"),
    pytest.param(chat(n=129), "n", id="n-129"),
    pytest.param(chat(n=True), "n", id="n-true"),
    pytest.param(chat(n=1.5), "n", id="n-fraction"),
    pytest.param(chat(n="2"), "n", id="n-string"),
    pytest.param(chat(max_tokens=-1), "max_tokens", id="max_tokens-negative"),
    pytest.param(chat(max_tokens=0), "max_tokens", id="max_tokens-0"),
    pytest.param(chat(max_tokens=2**63), "max_tokens", id="max_tokens-beyond-int64"),
    pytest.param(chat(max_tokens=2**64 - 1), "max_tokens", id="max_tokens-uint64-max"),
    pytest.param(chat(max_tokens=1e20), "max_tokens", id="max_tokens-huge-float"),
    pytest.param(chat(max_tokens=float("inf")), "max_tokens", id="max_tokens-infinite"),
    pytest.param(chat(max_completion_tokens="100"), "max_completion_tokens", id="max_completion_tokens-string"),
    pytest.param(chat(top_logprobs=21), "top_logprobs", id="top_logprobs-21"),
    pytest.param(chat(seed=2**63), "seed", id="seed-beyond-int64"),
    pytest.param(chat(seed=3.5), "seed", id="seed-fraction"),
    # stop
    pytest.param(chat(stop=["a", "b", "c", "d", "e"]), "stop", id="stop-5-entries"),
    pytest.param(chat(stop=["END", 1]), "stop[1]", id="stop-number-entry"),
    pytest.param(chat(stop=["END", None]), "stop[1]", id="stop-null-entry"),
    pytest.param(chat(stop=7), "stop", id="stop-number"),
    pytest.param(chat(stop={"seq": "END"}), "stop", id="stop-object"),
    # logit_bias, metadata, flags, strings
    pytest.param(chat(logit_bias={"50256": "-100"}), "logit_bias.50256", id="logit_bias-string-weight"),
    pytest.param(chat(logit_bias={"50256": None}), "logit_bias.50256", id="logit_bias-null-weight"),
    pytest.param(chat(logit_bias={"50256": -101}), "logit_bias.50256", id="logit_bias-below-minus-100"),
    pytest.param(chat(logit_bias=[50256, -100]), "logit_bias", id="logit_bias-list"),
    pytest.param(chat(metadata={"user": 1}), "metadata.user", id="metadata-number-value"),
    pytest.param(chat(metadata="project=x"), "metadata", id="metadata-string"),
    pytest.param(chat(logprobs="true"), "logprobs", id="logprobs-string"),
    pytest.param(chat(store=1), "store", id="store-number"),
    pytest.param(chat(parallel_tool_calls="false"), "parallel_tool_calls", id="parallel_tool_calls-string"),
    pytest.param(chat(user=1234), "user", id="user-number"),
    pytest.param(chat(reasoning_effort=3), "reasoning_effort", id="reasoning_effort-number"),
    pytest.param(chat(modalities="text"), "modalities", id="modalities-string"),
    pytest.param(chat(modalities=["text", 1]), "modalities[1]", id="modalities-number-entry"),
    # tools and tool_choice
    pytest.param(chat(tools={"type": "function"}), "tools", id="tools-object"),
    pytest.param(chat(tools=["get_weather"]), "tools[0]", id="tool-string"),
    pytest.param(chat(tools=[{"type": "function"}]), "tools[0].function", id="tool-function-missing"),
    pytest.param(chat(tools=[{"type": 1, "function": {"name": "f"}}]), "tools[0].type", id="tool-type-number"),
    pytest.param(chat(tools=tools({"description": "d"})), "tools[0].function.name", id="tool-name-missing"),
    pytest.param(chat(tools=tools({"name": ["f"]})), "tools[0].function.name", id="tool-name-list"),
    pytest.param(
        chat(tools=tools({"name": "f", "parameters": '{"type": "object"}'})),
        "tools[0].function.parameters",
        id="tool-parameters-as-text",
    ),
    pytest.param(chat(tools=tools({"name": "f", "strict": "yes"})), "tools[0].function.strict", id="tool-strict"),
    pytest.param(chat(tool_choice="any"), "tool_choice", id="tool_choice-bad-mode"),
    pytest.param(chat(tool_choice="AUTO"), "tool_choice", id="tool_choice-mode-case"),
    pytest.param(chat(tool_choice=1), "tool_choice", id="tool_choice-number"),
    pytest.param(chat(tool_choice={"type": "function"}), "tool_choice.function", id="tool_choice-no-function"),
    pytest.param(
        chat(tool_choice={"type": "function", "function": {}}), "tool_choice.function.name", id="tool_choice-no-name"
    ),
    # response_format
    pytest.param(chat(response_format="json"), "response_format", id="response_format-string"),
    pytest.param(chat(response_format={"type": "xml"}), "response_format.type", id="response_format-bad-type"),
    pytest.param(chat(response_format={}), "response_format.type", id="response_format-type-missing"),
    pytest.param(
        chat(response_format={"type": "json_schema"}), "response_format.json_schema", id="json_schema-missing"
    ),
    pytest.param(
        chat(response_format={"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}),
        "response_format.json_schema.name",
        id="json_schema-name-missing",
    ),
    pytest.param(
        chat(response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": "{}"}}),
        "response_format.json_schema.schema",
        id="json_schema-schema-as-text",
    ),
    pytest.param(
        chat(response_format={"type": "json_schema", "json_schema": {"name": "n", "strict": 1}}),
        "response_format.json_schema.strict",
        id="json_schema-strict-number",
    ),
    # stream
    pytest.param(chat(stream="true"), "stream", id="stream-string"),
    pytest.param(chat(stream=1), "stream", id="stream-number"),
    pytest.param(chat(stream=False, stream_options={"include_usage": True}), "stream_options", id="options-no-stream"),
    pytest.param(chat(stream_options={"include_usage": True}), "stream_options", id="options-stream-absent"),
    pytest.param(chat(stream=True, stream_options=True), "stream_options", id="options-bool"),
    pytest.param(
        chat(stream=True, stream_options={"include_usage": "yes"}),
        "stream_options.include_usage",
        id="include_usage-string",
    ),
]


@pytest.mark.parametrize(("body", "param"), CHAT_INVALID)
def test_invalid_chat_body_names_the_field(body: Any, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        validate_chat(decode_chat_params(body)[0])
    error = caught.value
    assert error.param == param
    assert error.http_status == 400
    assert error.message.startswith(f"{param}: ")
    assert error.to_openai()["error"] == {
        "message": error.message,
        "type": "invalid_request_error",
        "param": param,
        "code": "missing_model" if error.message.startswith("model: required") else "invalid_parameter",
    }


def embed(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "text-embedding-3-small", "input": "Hello"}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


EMBEDDINGS_INVALID = [
    pytest.param(["Hello"], "body", id="body-list"),
    pytest.param(None, "body", id="body-null"),
    pytest.param(embed(model=...), "model", id="model-missing"),
    pytest.param(embed(model=""), "model", id="model-empty"),
    pytest.param(embed(input=...), "input", id="input-missing"),
    pytest.param(embed(input=None), "input", id="input-null"),
    pytest.param(embed(input=[]), "input", id="input-empty"),
    pytest.param(embed(input=42), "input", id="input-number"),
    pytest.param(embed(input={"text": "Hello"}), "input", id="input-object"),
    pytest.param(embed(input=["Hello", 42]), "input[1]", id="strings-with-number"),
    pytest.param(embed(input=[1, "Hello"]), "input[0]", id="ints-with-string"),
    pytest.param(embed(input=["Hello", None]), "input[1]", id="strings-with-null"),
    pytest.param(embed(input=[True, False]), "input[0]", id="bools"),
    pytest.param(embed(input=[1.5, 2.0]), "input[0]", id="floats"),
    pytest.param(embed(input=[-1, 5]), "input[0]", id="token-negative"),
    pytest.param(embed(input=[[1, 2], [3, "x"]]), "input[1][1]", id="token-lists-with-string"),
    pytest.param(embed(input=[[1, 2], [3, [4]]]), "input[1][1]", id="token-lists-nested-deeper"),
    pytest.param(embed(input=[[1, 2], [3, 2.5]]), "input[1][1]", id="token-lists-with-fraction"),
    pytest.param(embed(input=[[1, 2], []]), "input[1]", id="token-lists-with-empty"),
    pytest.param(embed(input=[[]]), "input[0]", id="token-list-empty"),
    pytest.param(embed(input=[[1], "two"]), "input[0]", id="token-list-and-string"),
    pytest.param(embed(input=["x"] * 2049), "input", id="too-many-inputs"),
    pytest.param(embed(encoding_format="int8"), "encoding_format", id="encoding_format-unknown"),
    pytest.param(embed(encoding_format="FLOAT"), "encoding_format", id="encoding_format-case"),
    pytest.param(embed(encoding_format=["float"]), "encoding_format", id="encoding_format-list"),
    pytest.param(embed(dimensions=0), "dimensions", id="dimensions-0"),
    pytest.param(embed(dimensions=-256), "dimensions", id="dimensions-negative"),
    pytest.param(embed(dimensions="256"), "dimensions", id="dimensions-string"),
    pytest.param(embed(dimensions=65537), "dimensions", id="dimensions-too-large"),
    pytest.param(embed(user=["u"]), "user", id="user-list"),
]


@pytest.mark.parametrize(("body", "param"), EMBEDDINGS_INVALID)
def test_invalid_embeddings_body_names_the_field(body: Any, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        validate_embeddings(decode_embeddings_request(body))
    assert caught.value.param == param
    assert caught.value.message.startswith(f"{param}: ")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(chat(temperature=2, top_p=0, n=128, top_logprobs=20, max_tokens=2**63 - 1), id="chat-highs"),
        pytest.param(chat(temperature=0, presence_penalty=-2, frequency_penalty=2, seed=-(2**63)), id="chat-lows"),
        pytest.param(chat(max_tokens=100.0, n=2.0), id="chat-integral-floats"),
        pytest.param(chat(stop=["a", "b", "c", "d"], logit_bias={"1": 100, "2": -100}), id="chat-limits"),
        pytest.param(chat(stop=""), id="chat-empty-stop"),
        pytest.param(chat(temperature=None, stream=None, tools=None), id="chat-nulls-mean-absent"),
        pytest.param(chat(messages=[{"role": "assistant", "content": None}]), id="chat-assistant-null-content"),
    ],
)
def test_boundary_values_are_accepted(body: dict[str, Any]) -> None:
    params, _ = decode_chat_params(body)
    validate_chat(params)
    assert params.model == "gpt-4o-mini"


def test_embeddings_boundaries_are_accepted() -> None:
    decoded = decode_embeddings_request(embed(input=["x"] * 2048, dimensions=65536))
    validate_embeddings(decoded)
    assert len(decoded.input) == 2048
    assert decoded.dimensions == 65536


# ---------------------------------------------------------------------------------------------------- nesting

# orjson reads JSON nested up to 1024 deep (the front door's parser), but writes only up to 254 deep.
_TOO_DEEP_TO_WRITE = 300


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def _deep_bodies() -> list[Any]:
    deep = nested(_TOO_DEEP_TO_WRITE)
    return [
        pytest.param(chat(vendor_extra=deep), id="top-level-extra"),
        pytest.param(chat(tools=tools({"name": "f", "parameters": {"type": "object", "x": deep}})), id="parameters"),
        pytest.param(
            chat(response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": {"x": deep}}}),
            id="json_schema",
        ),
        pytest.param(chat(messages=user([{"type": "video_url", "video_url": deep}])), id="unknown-part"),
        pytest.param(chat(messages=[{"role": "user", "content": "x", "cache_control": deep}]), id="message-extra"),
    ]


def test_deep_nesting_is_what_the_front_door_can_read() -> None:
    """The bodies of the test below are not rejected before the codec: the front door's parser reads them."""
    text = json.dumps(chat(vendor_extra=nested(_TOO_DEEP_TO_WRITE)))
    assert orjson.loads(text)["vendor_extra"] == nested(_TOO_DEEP_TO_WRITE)


@pytest.mark.parametrize("body", _deep_bodies())
def test_deep_nesting_is_kept_or_rejected_as_a_client_error(body: dict[str, Any]) -> None:
    try:
        params, stream = decode_chat_params(body)
    except InvalidRequestError:
        return
    assert encode_chat_params(params, "gpt-4o-mini", stream=stream) == body


def test_deep_nesting_in_embeddings_extras_is_a_client_error_or_kept() -> None:
    body = embed(vendor_extra=nested(_TOO_DEEP_TO_WRITE))
    try:
        decoded = decode_embeddings_request(body)
    except InvalidRequestError:
        return
    assert orjson.loads(decoded.extra_json) == {"vendor_extra": body["vendor_extra"]}


# ---------------------------------------------------------------------------------------------------- property

_STRINGS = ["", "user", "assistant", "tool", "function", "text", "image_url", "json_schema", "auto", "\u0000", "é😀"]
_NUMBERS = [0, 1, -1, 128, 129, 2**31, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 0.5, -0.0, 1e308, -1e308, 2.0, 1e-300]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value, small, biased towards the values validation cares about."""
    kind = rng.choice(["null", "bool", "number", "string", "list", "object"] if depth < 3 else ["null", "string"])
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "number":
        return rng.choice(_NUMBERS)
    if kind == "string":
        return rng.choice(_STRINGS)
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["type", "name", "content", "function", "url", "text", "role", "x"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def _json_kind(value: Any) -> str:
    """The JSON type of a value: bool is not a number here, and int and float are the same one."""
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, int | float) else type(value).__name__


def _slots(root: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) below `root`, so that `container[key]` is a node that can be replaced.

    Iterative, like `depth`: the bodies can be nested deeper than Python's recursion limit allows.
    """
    slots: list[tuple[Any, Any]] = []
    pending = [root]
    while pending:
        value = pending.pop()
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in children:
            slots.append((value, key))
            pending.append(child)
    return slots


def depth(root: Any) -> int:
    deepest, pending = 0, [(root, 0)]
    while pending:
        value, level = pending.pop()
        deepest = max(deepest, level)
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        pending.extend((child, level + 1) for child in children)
    return deepest


def mutate(body: dict[str, Any], rng: random.Random, max_nesting: int) -> dict[str, Any]:
    """One to three mutations: retype a node, delete a key, bury a node under nesting, or add an unknown key."""
    body = copy.deepcopy(body)
    for _ in range(rng.randint(1, 3)):
        slots = _slots(body)
        container, key = rng.choice(slots)
        action = rng.choice(["retype", "retype", "delete", "nest", "add"])
        if action == "retype":
            old = container[key]
            new = random_json(rng)
            while _json_kind(new) == _json_kind(old):
                new = random_json(rng)
            container[key] = new
        elif action == "delete" and isinstance(container, dict):
            del container[key]
        elif action == "nest":
            container[key] = nested(rng.randint(1, max_nesting))
        else:
            target = rng.choice([body, *(c for c, _ in slots if isinstance(c, dict))])
            unknown = nested(rng.randint(1, max_nesting)) if rng.random() < 0.3 else random_json(rng)
            target[f"x_{rng.randrange(1000)}"] = unknown
    return body


SEED_BODIES = [orjson.loads(p.read_bytes())["request"] for p in sorted(GOLDEN.glob("chat_request_*.json"))]


def _check_mutants(max_depth: int) -> list[str]:
    """Decode 2,000 mutants at most `max_depth` deep; return every exception that is not an InvalidRequestError.

    The mutants hold only values orjson can read (finite numbers, integers within 64 bits, valid strings) at depths
    it reads (up to 1024), so each is a body the front door could hand the codec.
    """
    rng = random.Random(1234)
    failures: list[str] = []
    outcomes = {"accepted": 0, "rejected": 0}
    for i in range(2000):
        body = mutate(SEED_BODIES[i % len(SEED_BODIES)], rng, max_depth)
        while depth(body) > max_depth:
            body = mutate(SEED_BODIES[i % len(SEED_BODIES)], rng, max_depth)
        try:
            params, stream = decode_chat_params(body)
            validate_chat(params)
            encode_chat_params(params, "m", stream=stream)
        except InvalidRequestError as exc:
            assert exc.param, f"mutant {i}: an InvalidRequestError without param: {exc}"
            outcomes["rejected"] += 1
        except Exception as exc:  # the very thing this test looks for
            failures.append(f"mutant {i}: {type(exc).__name__}: {exc}")
        else:
            outcomes["accepted"] += 1
    # Both outcomes must be common, or the mutations are not exercising the validation.
    assert outcomes["accepted"] > 200, outcomes
    assert outcomes["rejected"] > 200, outcomes
    return failures


def test_mutated_bodies_only_ever_raise_invalid_request() -> None:
    """Nesting here stays within what orjson writes (254 levels); the deeper case is the test below."""
    failures = _check_mutants(max_depth=250)
    assert failures == []


def test_mutated_bodies_with_deep_nesting_only_ever_raise_invalid_request() -> None:
    failures = _check_mutants(max_depth=1000)
    assert failures == []


def test_what_the_codec_accepts_it_sends_in_a_form_it_accepts_again() -> None:
    """Decode → encode → decode gives the same params: the upstream body says what the client said."""
    rng = random.Random(1234)
    changed: list[str] = []
    for i in range(2000):
        try:
            params, stream = decode_chat_params(mutate(SEED_BODIES[i % len(SEED_BODIES)], rng, 20))
            validate_chat(params)
        except InvalidRequestError:
            continue
        wire = orjson.dumps(encode_chat_params(params, params.model, stream=stream))
        if stream:
            params.stream_options.include_usage = True  # upstream is always asked for usage when streaming
        try:
            again, _ = decode_chat_params(orjson.loads(wire))
        except InvalidRequestError as exc:
            changed.append(f"mutant {i}: re-read fails at {exc.param}")
            continue
        if again != params:
            changed.append(f"mutant {i}: re-read differs")
    assert changed == []
