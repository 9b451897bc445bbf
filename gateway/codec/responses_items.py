"""Responses API items, content parts and tools: JSON ⇄ `tollgate.gateway.v1` messages, both ways.

Used by the front door (a client's request, the response it is shown) and by the OpenAI provider (the request it
sends, the response it reads), so one codec serves both directions. A field the messages type is read with its JSON
type checked (a wrong one is a 400 naming its path); any other field, and any field whose value is null, is kept in
`extra_json` and merged back on the way out, so an item round-trips unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from google.protobuf.message import Message

from gateway.codec.json_fields import as_bool, as_dict, as_list, as_str, bad, json_text
from tollgate.gateway.v1 import responses_pb2 as rpb

_STRINGS = ("id", "status", "role", "call_id", "name", "arguments")
_TEXT_KEYS = {"refusal": "refusal"}  # the part types whose text has another key than "text"


def extra_of(raw: dict[str, Any], typed: Callable[[str, Any], bool], param: str) -> str:
    """The fields of `raw` that `typed(key, value)` did not take (nulls too), as JSON text; empty when none."""
    extra = {k: v for k, v in raw.items() if v is None or not typed(k, v)}
    return json_text(extra, param) if extra else ""


def has(message: Message, name: str) -> bool:
    """Whether `message` has field `name` set (a name from a table, so through the generic type)."""
    return message.HasField(name)


def merged(out: dict[str, Any], extra_json: str) -> dict[str, Any]:
    """`out` with the fields kept in `extra_json` added back (typed fields win)."""
    if extra_json:
        for key, value in orjson.loads(extra_json).items():
            out.setdefault(key, value)
    return out


# ---------------------------------------------------------------------------------------------------- content


def decode_content(raw: object, param: str) -> rpb.ResponseContent:
    """One content part (or summary part)."""
    part = as_dict(raw, param)
    kind = as_str(part.get("type"), f"{param}.type")
    text_key = _TEXT_KEYS.get(kind, "text")
    out = rpb.ResponseContent(type=kind)

    def typed(key: str, value: Any) -> bool:
        if key == "type":
            return True
        if key == text_key:
            out.text = as_str(value, f"{param}.{key}")
            return True
        return False

    out.extra_json = extra_of(part, typed, param)
    return out


def encode_content(part: rpb.ResponseContent) -> dict[str, Any]:
    """One content part as JSON; output text always carries its annotations, as OpenAI's does."""
    out: dict[str, Any] = {"type": part.type}
    if part.text or part.type in ("input_text", "output_text", "summary_text", "reasoning_text", "refusal"):
        out[_TEXT_KEYS.get(part.type, "text")] = part.text
    merged(out, part.extra_json)
    if part.type == "output_text":
        out.setdefault("annotations", [])
    return out


# ---------------------------------------------------------------------------------------------------- items


def decode_item(raw: object, param: str) -> rpb.ResponseItem:
    """One input or output item; an item without a type but with a role is a message, as the API reads it."""
    item = as_dict(raw, param)
    kind = item.get("type")
    if kind is None and "role" in item:
        kind = "message"
    out = rpb.ResponseItem(type=as_str(kind, f"{param}.type"))

    def typed(key: str, value: Any) -> bool:
        path = f"{param}.{key}"
        if key == "type":
            return True
        if key in _STRINGS:
            setattr(out, key, as_str(value, path))
        elif key == "content":
            _decode_content_field(out, value, path)
        elif key == "output" and isinstance(value, str):
            out.output = value
        elif key == "summary":
            out.summary.extend(decode_content(p, f"{path}[{i}]") for i, p in enumerate(as_list(value, path)))
        else:
            return False
        return True

    out.extra_json = extra_of(item, typed, param)
    return out


def _decode_content_field(out: rpb.ResponseItem, value: Any, path: str) -> None:
    if isinstance(value, str):
        out.content_text = value
    else:
        out.content.extend(decode_content(p, f"{path}[{i}]") for i, p in enumerate(as_list(value, path)))


def encode_item(item: rpb.ResponseItem) -> dict[str, Any]:
    """One item as JSON, with the fields its type always has."""
    out: dict[str, Any] = {"type": item.type}
    kind = item.type
    if item.id:
        out["id"] = item.id
    if item.status:
        out["status"] = item.status
    if kind == "message" or item.role:
        out["role"] = item.role
    if kind == "message" or item.content or item.HasField("content_text"):
        out["content"] = (
            item.content_text if item.HasField("content_text") else [encode_content(c) for c in item.content]
        )
    if kind in ("function_call", "function_call_output") or item.call_id:
        out["call_id"] = item.call_id
    if kind == "function_call" or item.name or item.arguments:
        out["name"], out["arguments"] = item.name, item.arguments
    if item.HasField("output"):
        out["output"] = item.output
    if kind == "reasoning" or item.summary:
        out["summary"] = [encode_content(s) for s in item.summary]
    return merged(out, item.extra_json)


# ---------------------------------------------------------------------------------------------------- tools


def decode_tool(raw: object, param: str) -> rpb.ResponseTool:
    """A function tool (flat, as the Responses API has it), or a built-in tool kept whole in `extra_json`."""
    tool = as_dict(raw, param)
    out = rpb.ResponseTool(type=as_str(tool.get("type"), f"{param}.type"))
    function = out.type == "function"

    def typed(key: str, value: Any) -> bool:
        path = f"{param}.{key}"
        if key == "type":
            return True
        if not function:
            return False
        if key in ("name", "description"):
            setattr(out, key, as_str(value, path))
        elif key == "parameters":
            out.parameters_json = json_text(as_dict(value, path), path)
        elif key == "strict":
            out.strict = as_bool(value, path)
        else:
            return False
        return True

    out.extra_json = extra_of(tool, typed, param)
    if function and not out.name:
        raise bad(f"{param}.name", "required for a function tool")
    return out


def encode_tool(tool: rpb.ResponseTool) -> dict[str, Any]:
    """A tool as JSON."""
    out: dict[str, Any] = {"type": tool.type}
    if tool.type == "function":
        out["name"] = tool.name
        if tool.HasField("description"):
            out["description"] = tool.description
        if tool.parameters_json:
            out["parameters"] = orjson.loads(tool.parameters_json)
        if tool.HasField("strict"):
            out["strict"] = tool.strict
    return merged(out, tool.extra_json)
