"""A client's OpenAI request JSON → `tollgate.gateway.v1` request messages, field by field (the front door's half).

`decode_*` reads a parsed JSON body and checks that every field it knows has the right JSON type, raising
`InvalidRequestError` with the field's path as `param`; fields it does not know are kept as JSON text in
`extra_json`, never dropped. What the values may be (ranges, counts, lengths) is checked on the decoded message by
`gateway.validation`, which the engine runs for every call, from either door.
"""

from __future__ import annotations

import math
from typing import Any

from gateway.codec.json_fields import (
    as_bool,
    as_dict,
    as_float,
    as_int,
    as_list,
    as_str,
    bad,
    json_text,
    type_name,
)
from gateway.codec.openai_roles import ROLES
from gateway.errors import InvalidRequestError
from tollgate.gateway.v1 import gateway_pb2 as pb

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _extra(body: dict[str, Any], known: frozenset[str], param: str) -> str:
    if body.keys() <= known:  # the usual case, checked without building anything
        return ""
    return json_text({k: v for k, v in body.items() if k not in known}, param or "body")


_PARAM_KEYS = frozenset(
    [
        "model",
        "messages",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "seed",
        "user",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "stream",
        "stream_options",
        "reasoning_effort",
        "service_tier",
        "metadata",
        "store",
        "modalities",
    ]
)
_MESSAGE_KEYS = frozenset(["role", "content", "name", "tool_calls", "tool_call_id", "refusal", "reasoning_content"])
_TOOL_CALL_KEYS = frozenset(("id", "type", "function"))
_FUNCTION_KEYS = frozenset(("name", "description", "parameters", "strict"))
_IMAGE_KEYS = frozenset(("url", "detail"))
_JSON_SCHEMA_KEYS = frozenset(("name", "description", "schema", "strict"))


def decode_chat_params(body: object) -> tuple[pb.ChatCompletionParams, bool]:
    """Validate a chat completion body; return the params and whether the client asked for a stream."""
    body = as_dict(body, "body")
    params = pb.ChatCompletionParams(model=_model(body))
    add = params.messages.add
    for i, message in enumerate(as_list(body.get("messages"), "messages")):
        decode_message(message, f"messages[{i}]", add())
    _decode_sampling(body, params)
    _decode_tools(body, params)
    stream = body.get("stream") is not None and as_bool(body["stream"], "stream")
    if (options := body.get("stream_options")) is not None:
        options = as_dict(options, "stream_options")
        if not stream:
            raise bad("stream_options", "only allowed when stream is true")
        include = options.get("include_usage")
        params.stream_options.include_usage = bool(
            include is not None and as_bool(include, "stream_options.include_usage")
        )
    params.extra_json = _extra(body, _PARAM_KEYS, "")
    return params, stream


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise InvalidRequestError("model: required; name the model to use", code="missing_model", param="model")
    return as_str(model, "model")


_FLOATS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTS = ("max_tokens", "max_completion_tokens", "n", "top_logprobs", "seed")


def _decode_sampling(body: dict[str, Any], params: pb.ChatCompletionParams) -> None:
    # Any number the message can hold; the allowed ranges are gateway.validation's.
    for key in _FLOATS:
        if (value := body.get(key)) is not None:
            setattr(params, key, as_float(value, key, -math.inf, math.inf))
    for key in _INTS:
        if (value := body.get(key)) is not None:
            setattr(params, key, as_int(value, key, _INT64_MIN, _INT64_MAX))
    _decode_flags_and_lists(body, params)


def _decode_flags_and_lists(body: dict[str, Any], params: pb.ChatCompletionParams) -> None:
    for key in ("logprobs", "store", "parallel_tool_calls"):
        if (flag := body.get(key)) is not None:
            setattr(params, key, as_bool(flag, key))
    for key in ("user", "reasoning_effort", "service_tier"):
        if (text := body.get(key)) is not None:
            setattr(params, key, as_str(text, key))
    if (stop := body.get("stop")) is not None:
        stops = [stop] if isinstance(stop, str) else as_list(stop, "stop")
        params.stop.extend(as_str(s, f"stop[{i}]") for i, s in enumerate(stops))
    if (bias := body.get("logit_bias")) is not None:
        for token, weight in as_dict(bias, "logit_bias").items():
            params.logit_bias[token] = as_float(weight, f"logit_bias.{token}", -math.inf, math.inf)
    if (metadata := body.get("metadata")) is not None:
        for key, value in as_dict(metadata, "metadata").items():
            params.metadata[key] = as_str(value, f"metadata.{key}")
    if (modalities := body.get("modalities")) is not None:
        params.modalities.extend(as_str(m, f"modalities[{i}]") for i, m in enumerate(as_list(modalities, "modalities")))


def _decode_tools(body: dict[str, Any], params: pb.ChatCompletionParams) -> None:
    if (tools := body.get("tools")) is not None:
        params.tools.extend(decode_tool(t, f"tools[{i}]") for i, t in enumerate(as_list(tools, "tools")))
    if (choice := body.get("tool_choice")) is not None:
        if isinstance(choice, str):
            params.tool_choice.mode = choice
        else:
            function = as_dict(as_dict(choice, "tool_choice").get("function"), "tool_choice.function")
            params.tool_choice.function_name = as_str(function.get("name"), "tool_choice.function.name")
    if (fmt := body.get("response_format")) is not None:
        fmt = as_dict(fmt, "response_format")
        kind = as_str(fmt.get("type"), "response_format.type")
        params.response_format.type = kind
        if kind == "json_schema":
            schema = as_dict(fmt.get("json_schema"), "response_format.json_schema")
            target = params.response_format.json_schema
            target.name = as_str(schema.get("name"), "response_format.json_schema.name")
            if (description := schema.get("description")) is not None:
                target.description = as_str(description, "response_format.json_schema.description")
            if (s := schema.get("schema")) is not None:
                target.schema_json = json_text(
                    as_dict(s, "response_format.json_schema.schema"), "response_format.json_schema.schema"
                )
            if (strict := schema.get("strict")) is not None:
                target.strict = as_bool(strict, "response_format.json_schema.strict")
            target.extra_json = _extra(schema, _JSON_SCHEMA_KEYS, "response_format.json_schema")


def decode_tool(value: object, param: str) -> pb.Tool:
    """One entry of `tools`."""
    tool = as_dict(value, param)
    kind = as_str(tool.get("type", "function"), f"{param}.type")
    if kind != "function":
        return pb.Tool(type=kind, extra_json=_extra(tool, frozenset(("type",)), param))
    fn = as_dict(tool.get("function"), f"{param}.function")
    out = pb.Tool(type=kind, extra_json=_extra(tool, frozenset(("type", "function")), param))
    out.function.name = as_str(fn.get("name"), f"{param}.function.name")
    if (description := fn.get("description")) is not None:
        out.function.description = as_str(description, f"{param}.function.description")
    if (parameters := fn.get("parameters")) is not None:
        path = f"{param}.function.parameters"
        out.function.parameters_json = json_text(as_dict(parameters, path), path)
    if (strict := fn.get("strict")) is not None:
        out.function.strict = as_bool(strict, f"{param}.function.strict")
    out.function.extra_json = _extra(fn, _FUNCTION_KEYS, f"{param}.function")
    return out


def decode_message(value: object, param: str, out: pb.ChatMessage) -> None:
    """One entry of `messages`, decoded into `out`: a message added to its list in place, since one made apart is
    copied when added (a conversation sends every earlier turn again: this runs tens of times a request)."""
    msg = as_dict(value, param)
    role_name = msg.get("role")
    role = ROLES.get(role_name) if isinstance(role_name, str) else None
    if role is None:
        role_name = as_str(role_name, f"{param}.role")
        raise bad(f"{param}.role", f"expected one of {', '.join(ROLES)}, got {role_name!r}")
    out.role = role
    content = msg.get("content")
    if isinstance(content, str):
        out.content = content
    elif isinstance(content, list):
        if not content:
            raise bad(f"{param}.content", "must not be an empty array")
        out.content_parts.extend(decode_part(p, f"{param}.content[{i}]") for i, p in enumerate(content))
    elif content is not None:
        raise bad(f"{param}.content", f"expected a string or an array, got {type_name(content)}")
    for key in ("name", "tool_call_id", "refusal", "reasoning_content"):
        if (text := msg.get(key)) is not None:
            setattr(out, key, as_str(text, f"{param}.{key}"))
    if (calls := msg.get("tool_calls")) is not None:
        out.tool_calls.extend(
            _decode_tool_call(c, f"{param}.tool_calls[{i}]")
            for i, c in enumerate(as_list(calls, f"{param}.tool_calls"))
        )
    if extra := _extra(msg, _MESSAGE_KEYS, param):
        out.extra_json = extra


def _decode_tool_call(value: object, param: str) -> pb.ToolCall:
    call = as_dict(value, param)
    fn = as_dict(call.get("function"), f"{param}.function")
    return pb.ToolCall(
        id=as_str(call.get("id"), f"{param}.id"),
        type=as_str(call.get("type", "function"), f"{param}.type"),
        function=pb.FunctionCall(
            name=as_str(fn.get("name"), f"{param}.function.name"),
            arguments=as_str(fn.get("arguments", ""), f"{param}.function.arguments"),
        ),
        extra_json=_extra(call, _TOOL_CALL_KEYS, param),
    )


def decode_part(value: object, param: str) -> pb.ContentPart:
    """One content part of a message whose content is an array."""
    part = as_dict(value, param)
    kind = as_str(part.get("type"), f"{param}.type")
    out = pb.ContentPart()
    if kind == "text":
        out.text = as_str(part.get("text"), f"{param}.text")
    elif kind == "image_url":
        image = as_dict(part.get("image_url"), f"{param}.image_url")
        out.image_url.url = as_str(image.get("url"), f"{param}.image_url.url")
        if (detail := image.get("detail")) is not None:
            out.image_url.detail = as_str(detail, f"{param}.image_url.detail")
        out.image_url.extra_json = _extra(image, _IMAGE_KEYS, f"{param}.image_url")
    elif kind == "input_audio":
        audio = as_dict(part.get("input_audio"), f"{param}.input_audio")
        out.input_audio.data = as_str(audio.get("data"), f"{param}.input_audio.data")
        out.input_audio.format = as_str(audio.get("format"), f"{param}.input_audio.format")
    elif kind == "file":
        file = as_dict(part.get("file"), f"{param}.file")
        for key in ("file_id", "file_data", "filename"):
            if (text := file.get(key)) is not None:
                setattr(out.file, key, as_str(text, f"{param}.file.{key}"))
    else:
        out.other_json = json_text(part, param)
        return out
    out.extra_json = _extra(part, frozenset(("type", kind)), param)
    return out


def decode_embeddings_request(body: object) -> pb.CreateEmbeddingsRequest:
    """Validate an embeddings body."""
    body = as_dict(body, "body")
    out = pb.CreateEmbeddingsRequest(model=_model(body))
    raw = body.get("input")
    if isinstance(raw, str):
        out.input.append(raw)
        out.single_input = True
    elif isinstance(raw, list) and raw and all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        out.input_tokens.add().ids.extend(as_int(x, f"input[{i}]") for i, x in enumerate(raw))
        out.single_input = True
    elif isinstance(raw, list) and raw and all(isinstance(x, list) for x in raw):
        for i, ids in enumerate(raw):
            out.input_tokens.add().ids.extend(
                as_int(x, f"input[{i}][{j}]") for j, x in enumerate(as_list(ids, f"input[{i}]"))
            )
    else:
        items = as_list(raw, "input")
        out.input.extend(as_str(x, f"input[{i}]") for i, x in enumerate(items))
    if (fmt := body.get("encoding_format")) is not None:
        out.encoding_format = as_str(fmt, "encoding_format")
    if (dimensions := body.get("dimensions")) is not None:
        out.dimensions = as_int(dimensions, "dimensions", _INT64_MIN, _INT64_MAX)
    if (user := body.get("user")) is not None:
        out.user = as_str(user, "user")
    out.extra_json = _extra(body, frozenset(("model", "input", "encoding_format", "dimensions", "user")), "")
    return out
