"""A Responses API request body ⇄ `ResponseParams`: the front door decodes a client's, the OpenAI provider encodes
the one it sends upstream.

Fields the message types are checked for their JSON type (a 400 naming the field); every other field is kept in
`extra_json` and sent to a Responses backend unchanged. What the values may be is `gateway.validation_responses`'s,
run by the engine for both doors.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from gateway.codec.json_fields import as_bool, as_dict, as_float, as_int, as_list, as_str, bad, json_text
from gateway.codec.responses_items import decode_item, decode_tool, encode_item, encode_tool, extra_of, has, merged
from gateway.errors import InvalidRequestError
from tollgate.gateway.v1 import responses_pb2 as rpb

_INT64_MAX = 2**63 - 1
_MODES = ("none", "auto", "required")
_FORMATS = ("text", "json_object", "json_schema")
_OPTIONAL_STRINGS = ("instructions", "previous_response_id", "user")
_FLAGS = ("parallel_tool_calls", "store")


def decode_response_params(body: object) -> tuple[rpb.ResponseParams, bool]:
    """Read a Responses request body; return the params and whether the client asked for a stream."""
    body = as_dict(body, "body")
    model = body.get("model")
    if model is None:
        raise InvalidRequestError("model: required; name the model to use", code="missing_model", param="model")
    params = rpb.ResponseParams(model=as_str(model, "model"))
    stream = False

    def typed(key: str, value: Any) -> bool:
        nonlocal stream
        if key == "stream":
            stream = as_bool(value, key)
            return True
        return _decode_field(params, key, value)

    params.extra_json = extra_of(body, typed, "body")
    return params, stream


def _decode_field(params: rpb.ResponseParams, key: str, value: Any) -> bool:
    """Set `key` on `params` if the messages type it; False leaves it for `extra_json`."""
    if key == "model":
        return True
    if key in _OPTIONAL_STRINGS:
        setattr(params, key, as_str(value, key))
    elif key in _FLAGS:
        setattr(params, key, as_bool(value, key))
    elif key in ("temperature", "top_p"):
        setattr(params, key, as_float(value, key, -math.inf, math.inf))
    elif key == "max_output_tokens":
        params.max_output_tokens = as_int(value, key, -_INT64_MAX, _INT64_MAX)
    else:
        return _decode_structured(params, key, value)
    return True


def _decode_structured(params: rpb.ResponseParams, key: str, value: Any) -> bool:
    if key == "input":
        _decode_input(params, value)
    elif key == "tools":
        params.tools.extend(decode_tool(t, f"tools[{i}]") for i, t in enumerate(as_list(value, key)))
    elif key == "tool_choice":
        return _decode_tool_choice(params.tool_choice, value)
    elif key == "reasoning":
        return _decode_reasoning(params, as_dict(value, key))
    elif key == "text":
        return _decode_text(params.text_format, as_dict(value, key))
    elif key == "metadata":
        for name, text in as_dict(value, key).items():
            params.metadata[name] = as_str(text, f"metadata.{name}")
    else:
        return False
    return True


def _decode_input(params: rpb.ResponseParams, value: Any) -> None:
    if isinstance(value, str):
        params.input_text = value
        return
    params.input.extend(decode_item(item, f"input[{i}]") for i, item in enumerate(as_list(value, "input")))


def _decode_tool_choice(choice: rpb.ResponseToolChoice, value: Any) -> bool:
    """ "none", "auto", "required" or a named function; a built-in tool's choice stays in `extra_json`."""
    if isinstance(value, str):
        if value not in _MODES:
            raise bad("tool_choice", f"expected one of {', '.join(_MODES)} or an object, got {value!r}")
        choice.mode = value
        return True
    named = as_dict(value, "tool_choice")
    if named.get("type") == "function" and set(named) == {"type", "name"}:
        choice.function_name = as_str(named["name"], "tool_choice.name")
        return True
    as_str(named.get("type"), "tool_choice.type")
    return False


def _decode_reasoning(params: rpb.ResponseParams, reasoning: dict[str, Any]) -> bool:
    if not set(reasoning) <= {"effort", "summary"}:
        return False  # a newer shape: sent on whole to a Responses backend
    for key in ("effort", "summary"):
        if (value := reasoning.get(key)) is not None:
            setattr(params, f"reasoning_{key}", as_str(value, f"reasoning.{key}"))
    return True


def _decode_text(out: rpb.ResponseTextFormat, text: dict[str, Any]) -> bool:
    if set(text) != {"format"}:
        return False  # verbosity and the like: kept whole
    fmt = as_dict(text["format"], "text.format")
    kind = as_str(fmt.get("type"), "text.format.type")
    if kind not in _FORMATS:
        raise bad("text.format.type", f"expected one of {', '.join(_FORMATS)}, got {kind!r}")
    if not set(fmt) <= {"type", "name", "description", "schema", "strict"}:
        return False
    out.type = kind
    if kind == "json_schema":
        out.name = as_str(fmt.get("name"), "text.format.name")
        out.schema_json = json_text(as_dict(fmt.get("schema"), "text.format.schema"), "text.format.schema")
        if (description := fmt.get("description")) is not None:
            out.description = as_str(description, "text.format.description")
        if (strict := fmt.get("strict")) is not None:
            out.strict = as_bool(strict, "text.format.strict")
    return True


# ---------------------------------------------------------------------------------------------------- encode


def encode_tool_choice(choice: rpb.ResponseToolChoice) -> str | dict[str, Any] | None:
    """The tool choice as JSON; None when the request gave none."""
    which = choice.WhichOneof("choice")
    if which == "mode":
        return choice.mode
    if which == "function_name":
        return {"type": "function", "name": choice.function_name}
    return None


def encode_text_format(fmt: rpb.ResponseTextFormat) -> dict[str, Any] | None:
    """text.format as JSON; None when the request gave none."""
    if not fmt.type:
        return None
    out: dict[str, Any] = {"type": fmt.type}
    if fmt.type == "json_schema":
        out["name"] = fmt.name
        if fmt.HasField("description"):
            out["description"] = fmt.description
        out["schema"] = orjson.loads(fmt.schema_json) if fmt.schema_json else {}
        if fmt.HasField("strict"):
            out["strict"] = fmt.strict
    return out


def encode_response_params(params: rpb.ResponseParams, model: str, *, stream: bool) -> dict[str, Any]:
    """The request body for a Responses backend: `params` with the backend's model name."""
    out: dict[str, Any] = {"model": model}
    for key in (*_OPTIONAL_STRINGS, *_FLAGS, "temperature", "top_p", "max_output_tokens"):
        if has(params, key):
            out[key] = getattr(params, key)
    if params.HasField("input_text"):
        out["input"] = params.input_text
    else:
        out["input"] = [encode_item(item) for item in params.input]
    if params.tools:
        out["tools"] = [encode_tool(t) for t in params.tools]
    if (choice := encode_tool_choice(params.tool_choice)) is not None:
        out["tool_choice"] = choice
    reasoning = {k: getattr(params, f"reasoning_{k}") for k in ("effort", "summary") if has(params, f"reasoning_{k}")}
    if reasoning:
        out["reasoning"] = reasoning
    if (fmt := encode_text_format(params.text_format)) is not None:
        out["text"] = {"format": fmt}
    if params.metadata:
        out["metadata"] = dict(params.metadata)
    if stream:
        out["stream"] = True
    return merged(out, params.extra_json)
