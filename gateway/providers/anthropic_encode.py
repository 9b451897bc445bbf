"""`tollgate.gateway.v1` chat params → the body of Anthropic's Messages API (`POST /v1/messages`).

Shapes from https://docs.anthropic.com/en/api/messages (request body: system, messages and their content blocks,
tools, tool_choice, stop_sequences, metadata, thinking). OpenAI's chat schema maps onto it like this:
- leading system / developer messages become `system` (a string, or text blocks when the client sent parts, so
  `cache_control` survives); a later one is appended to `system`, which is the only place Anthropic takes it;
- `tool` messages become `tool_result` blocks of a user turn, consecutive ones (and a user message right after
  them) merged into that one turn;
- an assistant message becomes its thinking blocks, its text, then its `tool_use` blocks;
- images: a data URL becomes a base64 source, any other URL a url source;
- `required` → `any`, `parallel_tool_calls: false` → `disable_parallel_tool_use`, `user` → `metadata.user_id`.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.codec.json_fields import bad
from tollgate.gateway.v1 import gateway_pb2 as pb

_SYSTEM_ROLES = (pb.ROLE_SYSTEM, pb.ROLE_DEVELOPER)
_TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}


def _extra(extra_json: str) -> dict[str, Any]:
    return dict(orjson.loads(extra_json)) if extra_json else {}


def _with_extra(block: dict[str, Any], extra_json: str) -> dict[str, Any]:
    """A block with the client's fields beyond the mapped ones (`cache_control`, `is_error`...) merged in."""
    if extra_json:
        for key, value in orjson.loads(extra_json).items():
            block.setdefault(key, value)
    return block


def encode_messages_request(
    params: pb.ChatCompletionParams, model: str, *, stream: bool, default_max_tokens: int
) -> dict[str, Any]:
    """The Messages API body for `params`, asking for `model`."""
    system, messages = _conversation(params.messages)
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": _max_tokens(params, default_max_tokens)}
    if system:
        body["system"] = system
    if params.HasField("n") and params.n != 1:
        raise bad("n", "an Anthropic backend answers exactly one choice")
    for key in ("temperature", "top_p", "top_k"):
        if params.HasField(key):
            body[key] = getattr(params, key)
    if params.stop:
        body["stop_sequences"] = list(params.stop)
    if params.HasField("user"):
        body["metadata"] = {"user_id": params.user}
    if params.tools:
        body["tools"] = [_tool(t) for t in params.tools]
    if choice := _tool_choice(params):
        body["tool_choice"] = choice
    if params.thinking_json:
        body["thinking"] = orjson.loads(params.thinking_json)
    if stream:
        body["stream"] = True
    # Fields an Anthropic client sent that have no OpenAI counterpart, then an OpenAI client's own extras (a
    # `top_k` or `thinking` it knows Anthropic takes): both are the client's to send.
    _with_extra(body, params.anthropic_extra_json)
    return _with_extra(body, params.extra_json)


def _max_tokens(params: pb.ChatCompletionParams, default: int) -> int:
    # Anthropic requires max_tokens; OpenAI clients usually leave it out.
    if params.HasField("max_completion_tokens"):
        return params.max_completion_tokens
    return params.max_tokens if params.HasField("max_tokens") else default


def _tool(tool: pb.Tool) -> dict[str, Any]:
    if tool.type != "function":
        # An Anthropic-native tool (web search, bash...) sent by an Anthropic client rides whole in extra_json.
        return _extra(tool.extra_json)
    fn = tool.function
    out: dict[str, Any] = {"name": fn.name}
    if fn.HasField("description"):
        out["description"] = fn.description
    # Anthropic requires a schema; a function without parameters takes an empty object.
    out["input_schema"] = orjson.loads(fn.parameters_json) if fn.parameters_json else {"type": "object"}
    return _with_extra(out, tool.extra_json)


def _tool_choice(params: pb.ChatCompletionParams) -> dict[str, Any] | None:
    which = params.tool_choice.WhichOneof("choice")
    choice: dict[str, Any] | None = None
    if which == "mode":
        choice = {"type": _TOOL_CHOICES.get(params.tool_choice.mode, "auto")}
    elif which == "function_name":
        choice = {"type": "tool", "name": params.tool_choice.function_name}
    if params.HasField("parallel_tool_calls") and not params.parallel_tool_calls and params.tools:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    return choice


# ---------------------------------------------------------------------------------------------------- messages


def _conversation(messages: Any) -> tuple[str | list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[tuple[str, pb.ChatMessage]] = []
    out: list[dict[str, Any]] = []
    merge_into_user = False  # whether the last turn is tool results that a user message may join
    for i, msg in enumerate(messages):
        param = f"messages[{i}]"
        if msg.role in _SYSTEM_ROLES:
            system.append((param, msg))
            merge_into_user = False
        elif msg.role == pb.ROLE_TOOL:
            block = _tool_result(msg, param)
            if merge_into_user:
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
            merge_into_user = True
        elif msg.role == pb.ROLE_USER:
            if merge_into_user:
                out[-1]["content"].extend(_blocks(msg, param))
            else:
                out.append({"role": "user", "content": _content(msg, param)})
            merge_into_user = False
        elif msg.role == pb.ROLE_ASSISTANT:
            out.append({"role": "assistant", "content": _assistant_content(msg, param)})
            merge_into_user = False
        else:
            raise bad(f"{param}.role", "an Anthropic backend takes no function messages; use tool messages")
    return _system(system), out


def _system(messages: list[tuple[str, pb.ChatMessage]]) -> str | list[dict[str, Any]]:
    """The system messages (with their paths, for errors) as `system`."""
    if not messages:
        return ""
    first = messages[0][1]
    if len(messages) == 1 and first.HasField("content") and not first.extra_json:
        return first.content
    blocks: list[dict[str, Any]] = []
    for param, msg in messages:
        blocks.extend(_blocks(msg, param))
    return blocks


def _content(msg: pb.ChatMessage, param: str) -> str | list[dict[str, Any]]:
    """A string stays a string; parts become blocks."""
    if msg.content_parts:
        return [_part(p, f"{param}.content[{j}]") for j, p in enumerate(msg.content_parts)]
    return msg.content


def _blocks(msg: pb.ChatMessage, param: str) -> list[dict[str, Any]]:
    """The message's content as blocks (a string becomes one text block, message-level `cache_control` on it)."""
    content = _content(msg, param)
    if isinstance(content, list):
        return content
    return [_with_extra({"type": "text", "text": content}, msg.extra_json)]


def _tool_result(msg: pb.ChatMessage, param: str) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg.tool_call_id, "content": _content(msg, param)}
    return _with_extra(block, msg.extra_json)  # is_error, cache_control


def _assistant_content(msg: pb.ChatMessage, param: str) -> str | list[dict[str, Any]]:
    if not msg.thinking_blocks and not msg.tool_calls and not msg.content_parts:
        return msg.content
    blocks = [_thinking(t) for t in msg.thinking_blocks]
    if msg.content_parts:
        blocks.extend(_part(p, f"{param}.content[{j}]") for j, p in enumerate(msg.content_parts))
    elif msg.content:  # Anthropic rejects empty text blocks
        blocks.append({"type": "text", "text": msg.content})
    for j, call in enumerate(msg.tool_calls):
        blocks.append(_tool_use(call, f"{param}.tool_calls[{j}]"))
    return blocks


def _thinking(block: pb.ThinkingBlock) -> dict[str, Any]:
    if block.redacted_data:
        return {"type": "redacted_thinking", "data": block.redacted_data}
    return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}


def _tool_use(call: pb.ToolCall, param: str) -> dict[str, Any]:
    try:
        arguments = orjson.loads(call.function.arguments) if call.function.arguments else {}
    except orjson.JSONDecodeError:
        raise bad(f"{param}.function.arguments", "must be a JSON object for an Anthropic backend") from None
    if not isinstance(arguments, dict):
        raise bad(f"{param}.function.arguments", "must be a JSON object for an Anthropic backend")
    block = {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}
    return _with_extra(block, call.extra_json)


def _part(part: pb.ContentPart, param: str) -> dict[str, Any]:
    which = part.WhichOneof("part")
    block: dict[str, Any]
    if which == "text":
        block = {"type": "text", "text": part.text}
    elif which == "image_url":
        block = {"type": "image", "source": _source(part.image_url.url)}
    elif which == "file":
        block = {"type": "document", "source": _file_source(part.file, param)}
    elif which == "other_json":
        return dict(orjson.loads(part.other_json))  # an Anthropic-native block, passed through whole
    else:
        raise bad(f"{param}.type", f"an Anthropic backend cannot take {which} content")
    return _with_extra(block, part.extra_json)


def _source(url: str) -> dict[str, Any]:
    """A data URL becomes a base64 source, any other URL a url source."""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if sep and encoding == "base64" and media_type:
            return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _file_source(file: pb.FilePart, param: str) -> dict[str, Any]:
    if file.file_id:
        return {"type": "file", "file_id": file.file_id}
    source = _source(file.file_data)
    if source["type"] != "base64":
        raise bad(f"{param}.file.file_data", "expected a base64 data URL")
    return source
