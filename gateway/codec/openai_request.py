"""OpenAI request JSON ⇄ `tollgate.gateway.v1` request messages, field by field.

`decode_*` reads a client's parsed JSON body and validates every field it knows, raising `InvalidRequestError` with
the field's path as `param`; fields it does not know are kept as JSON text in `extra_json`, never dropped.
`encode_*` writes the message back as the dict an OpenAI-compatible server expects, extras merged in.
"""

from __future__ import annotations

from typing import Any

import orjson

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
from gateway.errors import InvalidRequestError
from tollgate.gateway.v1 import gateway_pb2 as pb

ROLES: dict[str, pb.Role.ValueType] = {
    "system": pb.ROLE_SYSTEM,
    "user": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
    "tool": pb.ROLE_TOOL,
    "developer": pb.ROLE_DEVELOPER,
    "function": pb.ROLE_FUNCTION,
}
ROLE_NAMES: dict[int, str] = {v: k for k, v in ROLES.items()}
_TOOL_CHOICE_MODES = ("none", "auto", "required")
_INT64_MAX = 2**63 - 1


def _extra(body: dict[str, Any], known: frozenset[str], param: str) -> str:
    extra = {k: v for k, v in body.items() if k not in known}
    return json_text(extra, param or "body") if extra else ""


# ---------------------------------------------------------------------------------------------------- decode

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
    params.messages.extend(
        decode_message(m, f"messages[{i}]")
        for i, m in enumerate(as_list(body.get("messages"), "messages", allow_empty=False))
    )
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
    if not as_str(model, "model"):
        raise bad("model", "must not be empty")
    return str(model)


def _decode_sampling(body: dict[str, Any], params: pb.ChatCompletionParams) -> None:
    floats = {
        "temperature": (0.0, 2.0),
        "top_p": (0.0, 1.0),
        "presence_penalty": (-2.0, 2.0),
        "frequency_penalty": (-2.0, 2.0),
    }
    for key, (low, high) in floats.items():
        if (value := body.get(key)) is not None:
            setattr(params, key, as_float(value, key, low, high))
    ints = {
        "max_tokens": (1, _INT64_MAX),
        "max_completion_tokens": (1, _INT64_MAX),
        "n": (1, 128),
        "top_logprobs": (0, 20),
    }
    for key, (ilow, ihigh) in ints.items():
        if (value := body.get(key)) is not None:
            setattr(params, key, as_int(value, key, ilow, ihigh))
    if (seed := body.get("seed")) is not None:
        params.seed = as_int(seed, "seed", -(2**63), _INT64_MAX)
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
        if len(stops) > 4:
            raise bad("stop", "at most 4 stop sequences")
        params.stop.extend(as_str(s, f"stop[{i}]") for i, s in enumerate(stops))
    if (bias := body.get("logit_bias")) is not None:
        for token, weight in as_dict(bias, "logit_bias").items():
            params.logit_bias[token] = as_float(weight, f"logit_bias.{token}", -100.0, 100.0)
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
            if choice not in _TOOL_CHOICE_MODES:
                raise bad("tool_choice", f"expected one of {', '.join(_TOOL_CHOICE_MODES)}, got {choice!r}")
            params.tool_choice.mode = choice
        else:
            function = as_dict(as_dict(choice, "tool_choice").get("function"), "tool_choice.function")
            params.tool_choice.function_name = as_str(function.get("name"), "tool_choice.function.name")
    if (fmt := body.get("response_format")) is not None:
        fmt = as_dict(fmt, "response_format")
        kind = as_str(fmt.get("type"), "response_format.type")
        if kind not in ("text", "json_object", "json_schema"):
            raise bad("response_format.type", f"expected text, json_object or json_schema, got {kind!r}")
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


def decode_message(value: object, param: str) -> pb.ChatMessage:
    """One entry of `messages`."""
    msg = as_dict(value, param)
    role_name = as_str(msg.get("role"), f"{param}.role")
    role = ROLES.get(role_name)
    if role is None:
        raise bad(f"{param}.role", f"expected one of {', '.join(ROLES)}, got {role_name!r}")
    out = pb.ChatMessage(role=role)
    content = msg.get("content")
    if isinstance(content, str):
        out.content = content
    elif isinstance(content, list):
        if not content:
            raise bad(f"{param}.content", "must not be an empty array")
        out.content_parts.extend(decode_part(p, f"{param}.content[{i}]") for i, p in enumerate(content))
    elif content is not None:
        raise bad(f"{param}.content", f"expected a string or an array, got {type_name(content)}")
    elif role != pb.ROLE_ASSISTANT:
        raise bad(f"{param}.content", "required for this role")
    for key in ("name", "tool_call_id", "refusal", "reasoning_content"):
        if (text := msg.get(key)) is not None:
            setattr(out, key, as_str(text, f"{param}.{key}"))
    if role == pb.ROLE_TOOL and not out.HasField("tool_call_id"):
        raise bad(f"{param}.tool_call_id", "required for a tool message")
    if (calls := msg.get("tool_calls")) is not None:
        out.tool_calls.extend(
            _decode_tool_call(c, f"{param}.tool_calls[{i}]")
            for i, c in enumerate(as_list(calls, f"{param}.tool_calls"))
        )
    out.extra_json = _extra(msg, _MESSAGE_KEYS, param)
    return out


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
        if not out.file.file_id and not out.file.file_data:
            raise bad(f"{param}.file", "needs a file_id or file_data")
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
                as_int(x, f"input[{i}][{j}]") for j, x in enumerate(as_list(ids, f"input[{i}]", allow_empty=False))
            )
    else:
        items = as_list(raw, "input", allow_empty=False)
        out.input.extend(as_str(x, f"input[{i}]") for i, x in enumerate(items))
    if len(out.input) + len(out.input_tokens) > 2048:
        raise bad("input", "at most 2048 inputs")
    if (fmt := body.get("encoding_format")) is not None:
        if fmt not in ("float", "base64"):
            raise bad("encoding_format", f"expected float or base64, got {fmt!r}")
        out.encoding_format = fmt
    if (dimensions := body.get("dimensions")) is not None:
        out.dimensions = as_int(dimensions, "dimensions", 1, 65536)
    if (user := body.get("user")) is not None:
        out.user = as_str(user, "user")
    out.extra_json = _extra(body, frozenset(("model", "input", "encoding_format", "dimensions", "user")), "")
    return out


# ---------------------------------------------------------------------------------------------------- encode


def _merge_extra(out: dict[str, Any], extra_json: str) -> dict[str, Any]:
    if extra_json:
        for key, value in orjson.loads(extra_json).items():
            out.setdefault(key, value)
    return out


def encode_chat_params(params: pb.ChatCompletionParams, model: str, *, stream: bool) -> dict[str, Any]:
    """The OpenAI request body for `params`, asking for `model`; a stream always asks for usage."""
    body: dict[str, Any] = {"model": model, "messages": [encode_message(m) for m in params.messages]}
    for key in ("temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "presence_penalty",
                "frequency_penalty", "logprobs", "top_logprobs", "seed", "user", "parallel_tool_calls",
                "reasoning_effort", "service_tier", "store"):  # fmt: skip
        if params.HasField(key):
            body[key] = getattr(params, key)
    if params.stop:
        body["stop"] = list(params.stop)
    if params.logit_bias:
        body["logit_bias"] = dict(params.logit_bias)
    if params.metadata:
        body["metadata"] = dict(params.metadata)
    if params.modalities:
        body["modalities"] = list(params.modalities)
    if params.tools:
        body["tools"] = [encode_tool(t) for t in params.tools]
    which = params.tool_choice.WhichOneof("choice")
    if which == "mode":
        body["tool_choice"] = params.tool_choice.mode
    elif which == "function_name":
        body["tool_choice"] = {"type": "function", "function": {"name": params.tool_choice.function_name}}
    if params.response_format.type:
        body["response_format"] = _encode_response_format(params.response_format)
    if stream:
        # Usage is always asked for upstream so accounting is exact; the engine strips it for clients that did not ask.
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return _merge_extra(body, params.extra_json)


def _encode_response_format(fmt: pb.ResponseFormat) -> dict[str, Any]:
    out: dict[str, Any] = {"type": fmt.type}
    if fmt.type == "json_schema":
        schema: dict[str, Any] = {"name": fmt.json_schema.name}
        if fmt.json_schema.HasField("description"):
            schema["description"] = fmt.json_schema.description
        if fmt.json_schema.schema_json:
            schema["schema"] = orjson.loads(fmt.json_schema.schema_json)
        if fmt.json_schema.HasField("strict"):
            schema["strict"] = fmt.json_schema.strict
        out["json_schema"] = _merge_extra(schema, fmt.json_schema.extra_json)
    return out


def encode_tool(tool: pb.Tool) -> dict[str, Any]:
    """One entry of `tools`."""
    out: dict[str, Any] = {"type": tool.type}
    if tool.HasField("function"):
        fn: dict[str, Any] = {"name": tool.function.name}
        if tool.function.HasField("description"):
            fn["description"] = tool.function.description
        if tool.function.parameters_json:
            fn["parameters"] = orjson.loads(tool.function.parameters_json)
        if tool.function.HasField("strict"):
            fn["strict"] = tool.function.strict
        out["function"] = _merge_extra(fn, tool.function.extra_json)
    return _merge_extra(out, tool.extra_json)


def encode_message(msg: pb.ChatMessage) -> dict[str, Any]:
    """One entry of `messages`."""
    out: dict[str, Any] = {"role": ROLE_NAMES.get(msg.role, "user")}
    if msg.content_parts:
        out["content"] = [encode_part(p) for p in msg.content_parts]
    else:
        out["content"] = msg.content if msg.HasField("content") else None
    for key in ("name", "tool_call_id", "refusal", "reasoning_content"):
        if msg.HasField(key):
            out[key] = getattr(msg, key)
    if msg.tool_calls:
        out["tool_calls"] = [encode_tool_call(c) for c in msg.tool_calls]
    return _merge_extra(out, msg.extra_json)


def encode_tool_call(call: pb.ToolCall) -> dict[str, Any]:
    """A complete tool call, in a request's assistant message or a completion's."""
    out = {
        "id": call.id,
        "type": call.type or "function",
        "function": {"name": call.function.name, "arguments": call.function.arguments},
    }
    return _merge_extra(out, call.extra_json)


def encode_part(part: pb.ContentPart) -> dict[str, Any]:
    """One content part."""
    which = part.WhichOneof("part")
    out: dict[str, Any]
    if which == "text":
        out = {"type": "text", "text": part.text}
    elif which == "image_url":
        image: dict[str, Any] = {"url": part.image_url.url}
        if part.image_url.detail:
            image["detail"] = part.image_url.detail
        out = {"type": "image_url", "image_url": _merge_extra(image, part.image_url.extra_json)}
    elif which == "input_audio":
        out = {"type": "input_audio", "input_audio": {"data": part.input_audio.data, "format": part.input_audio.format}}
    elif which == "file":
        file = {k: getattr(part.file, k) for k in ("file_id", "file_data", "filename") if getattr(part.file, k)}
        out = {"type": "file", "file": file}
    else:
        return dict(orjson.loads(part.other_json or "{}"))
    return _merge_extra(out, part.extra_json)


def encode_embeddings_request(request: pb.CreateEmbeddingsRequest, model: str) -> dict[str, Any]:
    """The OpenAI embeddings body for `request`, asking for `model`."""
    inputs: Any
    if request.input_tokens:
        inputs = [list(t.ids) for t in request.input_tokens]
        if request.single_input:
            inputs = inputs[0]
    else:
        inputs = request.input[0] if request.single_input and request.input else list(request.input)
    body: dict[str, Any] = {"model": model, "input": inputs}
    if request.encoding_format:
        body["encoding_format"] = request.encoding_format
    if request.HasField("dimensions"):
        body["dimensions"] = request.dimensions
    if request.HasField("user"):
        body["user"] = request.user
    return _merge_extra(body, request.extra_json)
