"""`tollgate.gateway.v1` request messages → the OpenAI request JSON an OpenAI-compatible server expects (the
providers' half): every field the message holds, and its `extra_json` merged back in.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.codec.openai_roles import ROLE_NAMES
from tollgate.gateway.v1 import gateway_pb2 as pb


def merge_extra(out: dict[str, Any], extra_json: str) -> dict[str, Any]:
    """`out` with the fields of `extra_json` it does not already have."""
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
    return merge_extra(body, params.extra_json)


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
        out["json_schema"] = merge_extra(schema, fmt.json_schema.extra_json)
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
        out["function"] = merge_extra(fn, tool.function.extra_json)
    return merge_extra(out, tool.extra_json)


def encode_message(msg: pb.ChatMessage) -> dict[str, Any]:
    """One entry of `messages`."""
    out: dict[str, Any] = {"role": ROLE_NAMES.get(msg.role, "user")}
    # Each field read once (a read is a call into upb): this runs for every turn of a conversation.
    if parts := msg.content_parts:
        out["content"] = [encode_part(p) for p in parts]
    else:
        content = msg.content
        out["content"] = content if content or msg.HasField("content") else None
    for key in ("name", "tool_call_id", "refusal", "reasoning_content"):
        if msg.HasField(key):
            out[key] = getattr(msg, key)
    if calls := msg.tool_calls:
        out["tool_calls"] = [encode_tool_call(c) for c in calls]
    return merge_extra(out, msg.extra_json)


def encode_tool_call(call: pb.ToolCall) -> dict[str, Any]:
    """A complete tool call, in a request's assistant message or a completion's."""
    out = {
        "id": call.id,
        "type": call.type or "function",
        "function": {"name": call.function.name, "arguments": call.function.arguments},
    }
    return merge_extra(out, call.extra_json)


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
        out = {"type": "image_url", "image_url": merge_extra(image, part.image_url.extra_json)}
    elif which == "input_audio":
        out = {"type": "input_audio", "input_audio": {"data": part.input_audio.data, "format": part.input_audio.format}}
    elif which == "file":
        file = {k: getattr(part.file, k) for k in ("file_id", "file_data", "filename") if getattr(part.file, k)}
        out = {"type": "file", "file": file}
    else:
        return dict(orjson.loads(part.other_json or "{}"))
    return merge_extra(out, part.extra_json)


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
    return merge_extra(body, request.extra_json)
