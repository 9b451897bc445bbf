"""Anthropic Messages API request JSON → `tollgate.gateway.v1` chat params, field by field.

The front door's half of the Anthropic API (https://docs.anthropic.com/en/api/messages). Every field it knows is
validated, raising `InvalidRequestError` with the field's path; fields it does not know go to
`anthropic_extra_json` (sent to Anthropic backends only), and content blocks it does not know ride whole as
`other_json` parts, so an Anthropic backend receives exactly what the client sent. The mapping is the inverse of
the Anthropic provider's (gateway.providers.anthropic_encode):
- `system` becomes a leading system message (a string, or text parts keeping `cache_control`);
- a user turn's `tool_result` blocks become `tool` messages, its other blocks one user message;
- an assistant turn's thinking blocks become `thinking_blocks`, its text parts, its `tool_use` blocks tool calls;
- images become image_url parts (base64 → data URL), base64 PDFs file parts;
- `any` → `required`, `disable_parallel_tool_use` → `parallel_tool_calls: false`, `metadata.user_id` → `user`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.codec.json_fields import as_bool, as_dict, as_float, as_int, as_list, as_str, bad, json_text
from gateway.errors import InvalidRequestError
from tollgate.gateway.v1 import gateway_pb2 as pb

_INT64_MAX = 2**63 - 1
_KNOWN = frozenset(
    ("model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k", "stop_sequences", "stream",
     "metadata", "tools", "tool_choice", "thinking")
)  # fmt: skip
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def _rest(block: Mapping[str, Any], known: frozenset[str], param: str) -> str:
    extra = {k: v for k, v in block.items() if k not in known}
    return json_text(extra, param) if extra else ""


def decode_messages_request(body: object, beta: str = "") -> tuple[pb.ChatCompletionParams, bool]:
    """Validate a Messages API body (and the `anthropic-beta` header); return the params and whether to stream."""
    body = as_dict(body, "body")
    model = body.get("model")
    if model is None:
        raise InvalidRequestError("model: Field required", code="missing_model", param="model")
    params = pb.ChatCompletionParams(model=as_str(model, "model"))
    if not params.model:
        raise bad("model", "must not be empty")
    if body.get("max_tokens") is None:
        raise bad("max_tokens", "Field required")
    params.max_tokens = as_int(body["max_tokens"], "max_tokens", 1, _INT64_MAX)
    if (system := body.get("system")) is not None:
        params.messages.append(_system(system))
    for i, message in enumerate(as_list(body.get("messages"), "messages", allow_empty=False)):
        params.messages.extend(_message(message, f"messages[{i}]"))
    _sampling(body, params)
    _tools(body, params)
    stream = body.get("stream") is not None and as_bool(body["stream"], "stream")
    # Usage is always wanted: an Anthropic stream ends with it (message_delta).
    params.stream_options.include_usage = stream
    params.anthropic_beta.extend(flag.strip() for flag in beta.split(",") if flag.strip())
    params.anthropic_extra_json = _rest(body, _KNOWN, "body")
    return params, stream


def _sampling(body: dict[str, Any], params: pb.ChatCompletionParams) -> None:
    for key in ("temperature", "top_p"):
        if (value := body.get(key)) is not None:
            setattr(params, key, as_float(value, key, 0.0, 1.0))
    if (top_k := body.get("top_k")) is not None:
        params.top_k = as_int(top_k, "top_k", 0, _INT64_MAX)
    if (stops := body.get("stop_sequences")) is not None:
        params.stop.extend(as_str(s, f"stop_sequences[{i}]") for i, s in enumerate(as_list(stops, "stop_sequences")))
    if (metadata := body.get("metadata")) is not None:
        user = as_dict(metadata, "metadata").get("user_id")
        if user is not None:
            params.user = as_str(user, "metadata.user_id")
    if (thinking := body.get("thinking")) is not None:
        as_str(as_dict(thinking, "thinking").get("type"), "thinking.type")
        params.thinking_json = json_text(thinking, "thinking")


def _tools(body: dict[str, Any], params: pb.ChatCompletionParams) -> None:
    if (tools := body.get("tools")) is not None:
        params.tools.extend(_tool(t, f"tools[{i}]") for i, t in enumerate(as_list(tools, "tools")))
    if (choice := body.get("tool_choice")) is not None:
        choice = as_dict(choice, "tool_choice")
        kind = as_str(choice.get("type"), "tool_choice.type")
        if kind == "tool":
            params.tool_choice.function_name = as_str(choice.get("name"), "tool_choice.name")
        elif kind in _TOOL_CHOICES:
            params.tool_choice.mode = _TOOL_CHOICES[kind]
        else:
            raise bad("tool_choice.type", f"expected auto, any, tool or none, got {kind!r}")
        if (disable := choice.get("disable_parallel_tool_use")) is not None:
            params.parallel_tool_calls = not as_bool(disable, "tool_choice.disable_parallel_tool_use")


def _tool(value: object, param: str) -> pb.Tool:
    tool = as_dict(value, param)
    kind = tool.get("type")
    if kind is not None and kind != "custom":
        # A server or client tool of Anthropic's own (web search, bash, text editor...): whole, for Anthropic only.
        return pb.Tool(type=as_str(kind, f"{param}.type"), extra_json=json_text(tool, param))
    out = pb.Tool(type="function", extra_json=_rest(tool, frozenset(("name", "description", "input_schema")), param))
    out.function.name = as_str(tool.get("name"), f"{param}.name")
    if (description := tool.get("description")) is not None:
        out.function.description = as_str(description, f"{param}.description")
    schema = as_dict(tool.get("input_schema"), f"{param}.input_schema")
    out.function.parameters_json = json_text(schema, f"{param}.input_schema")
    return out


def _system(value: object) -> pb.ChatMessage:
    out = pb.ChatMessage(role=pb.ROLE_SYSTEM)
    if isinstance(value, str):
        out.content = value
        return out
    for i, raw in enumerate(as_list(value, "system")):
        param = f"system[{i}]"
        block = as_dict(raw, param)
        if block.get("type") != "text":
            raise bad(f"{param}.type", "system blocks must be text blocks")
        out.content_parts.append(_part(block, param))
    return out


def _message(value: object, param: str) -> list[pb.ChatMessage]:
    """One turn: usually one message, but a user turn's tool results each become a tool message."""
    message = as_dict(value, param)
    role = as_str(message.get("role"), f"{param}.role")
    if role not in ("user", "assistant"):
        raise bad(f"{param}.role", f"expected user or assistant, got {role!r}")
    content = message.get("content")
    out = pb.ChatMessage(role=pb.ROLE_USER if role == "user" else pb.ROLE_ASSISTANT)
    if isinstance(content, str):
        out.content = content
        return [out]
    blocks = as_list(content, f"{param}.content", allow_empty=role == "assistant")
    if role == "assistant":
        for j, block in enumerate(blocks):
            _assistant_block(as_dict(block, f"{param}.content[{j}]"), out, f"{param}.content[{j}]")
        if not out.content_parts and not out.tool_calls and not out.thinking_blocks:
            out.content = ""
        return [out]
    turn: list[pb.ChatMessage] = []
    for j, raw in enumerate(blocks):
        path = f"{param}.content[{j}]"
        block = as_dict(raw, path)
        if block.get("type") == "tool_result":
            turn.append(_tool_result(block, path))
            continue
        if not turn or turn[-1].role != pb.ROLE_USER:
            turn.append(pb.ChatMessage(role=pb.ROLE_USER))
        turn[-1].content_parts.append(_part(block, path))
    return turn


def _assistant_block(block: dict[str, Any], out: pb.ChatMessage, param: str) -> None:
    kind = block.get("type")
    if kind == "thinking":
        out.thinking_blocks.add(
            thinking=as_str(block.get("thinking"), f"{param}.thinking"),
            signature=as_str(block.get("signature", ""), f"{param}.signature"),
        )
    elif kind == "redacted_thinking":
        out.thinking_blocks.add(redacted_data=as_str(block.get("data"), f"{param}.data"))
    elif kind == "tool_use":
        call = out.tool_calls.add(
            id=as_str(block.get("id"), f"{param}.id"),
            type="function",
            extra_json=_rest(block, frozenset(("type", "id", "name", "input")), param),
        )
        call.function.name = as_str(block.get("name"), f"{param}.name")
        call.function.arguments = json_text(as_dict(block.get("input"), f"{param}.input"), f"{param}.input")
    else:
        out.content_parts.append(_part(block, param))


def _tool_result(block: dict[str, Any], param: str) -> pb.ChatMessage:
    out = pb.ChatMessage(role=pb.ROLE_TOOL, tool_call_id=as_str(block.get("tool_use_id"), f"{param}.tool_use_id"))
    content = block.get("content", "")
    if isinstance(content, str):
        out.content = content
    else:
        parts = as_list(content, f"{param}.content")
        out.content_parts.extend(_part(p, f"{param}.content[{k}]") for k, p in enumerate(parts))
        if not parts:
            out.content = ""
    out.extra_json = _rest(block, frozenset(("type", "tool_use_id", "content")), param)  # is_error, cache_control
    return out


def _part(value: object, param: str) -> pb.ContentPart:
    block = as_dict(value, param)
    kind = as_str(block.get("type"), f"{param}.type")
    out = pb.ContentPart()
    if kind == "text":
        out.text = as_str(block.get("text"), f"{param}.text")
        out.extra_json = _rest(block, frozenset(("type", "text")), param)  # cache_control, citations
        return out
    source = block.get("source")
    if kind in ("image", "document") and isinstance(source, dict):
        url = _source_url(source, kind, param)
        if url is not None:
            if kind == "image":
                out.image_url.url = url
            else:
                out.file.file_data = url
            out.extra_json = _rest(block, frozenset(("type", "source")), param)
            return out
    # Any other block (a file source, search results, server tool results...) rides whole to Anthropic.
    out.other_json = json_text(block, param)
    return out


def _source_url(source: dict[str, Any], kind: str, param: str) -> str | None:
    """A base64 image or PDF as a data URL, an image URL as itself; None for sources with no URL form."""
    if source.get("type") == "base64" and set(source) == {"type", "media_type", "data"}:
        media_type = as_str(source["media_type"], f"{param}.source.media_type")
        data = as_str(source["data"], f"{param}.source.data")
        if kind == "image" or media_type == "application/pdf":
            return f"data:{media_type};base64,{data}"
    if kind == "image" and source.get("type") == "url" and set(source) == {"type", "url"}:
        return as_str(source["url"], f"{param}.source.url")
    return None
