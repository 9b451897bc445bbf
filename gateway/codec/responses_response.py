"""A Responses API response and its stream events ⇄ `tollgate.gateway.v1` messages: the front door encodes what the
client is shown, the OpenAI provider decodes what its backend sent.

A response echoes the request's parameters (instructions, tools, temperature…); those are the client's own request
(`Response.request`), never the backend's echo, because the gateway keeps the conversation (the backend is called
statelessly) and a translated backend echoes nothing.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.codec.json_fields import as_dict, as_int, as_list, as_str
from gateway.codec.responses_items import (
    decode_content,
    decode_item,
    encode_content,
    encode_item,
    encode_tool,
    extra_of,
    has,
    merged,
)
from gateway.codec.responses_request import encode_text_format, encode_tool_choice
from tollgate.gateway.v1 import responses_pb2 as rpb

# What a response echoes of its request: taken from the client's request, dropped from a backend's answer.
_ECHOED = frozenset(
    (
        "object",
        "instructions",
        "max_output_tokens",
        "parallel_tool_calls",
        "previous_response_id",
        "reasoning",
        "store",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_p",
        "truncation",
        "user",
        "metadata",
        "output_text",
    )
)
# Request fields beyond the typed ones that a response echoes too, when the request had them.
_ECHOED_EXTRA = ("truncation", "service_tier", "top_logprobs", "background", "max_tool_calls", "text", "reasoning")
_EVENT_INDEXES = ("output_index", "content_index", "summary_index")
_EVENT_STRINGS = ("delta", "text", "arguments", "refusal")


# ---------------------------------------------------------------------------------------------------- usage


def encode_usage(usage: rpb.ResponseUsage) -> dict[str, Any]:
    """Usage as the Responses API names it."""
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def decode_usage(raw: object) -> rpb.ResponseUsage:
    """A backend's usage object."""
    usage = as_dict(raw, "usage")
    inputs = usage.get("input_tokens_details") or {}
    outputs = usage.get("output_tokens_details") or {}
    return rpb.ResponseUsage(
        input_tokens=as_int(usage.get("input_tokens", 0), "usage.input_tokens"),
        output_tokens=as_int(usage.get("output_tokens", 0), "usage.output_tokens"),
        total_tokens=as_int(usage.get("total_tokens", 0), "usage.total_tokens"),
        cached_tokens=as_int(as_dict(inputs, "usage.input_tokens_details").get("cached_tokens") or 0, "cached_tokens"),
        reasoning_tokens=as_int(
            as_dict(outputs, "usage.output_tokens_details").get("reasoning_tokens") or 0, "reasoning_tokens"
        ),
    )


# ---------------------------------------------------------------------------------------------------- response


def encode_response(response: rpb.Response) -> dict[str, Any]:
    """The response object a client is shown, with the request parameters it echoes."""
    request = response.request
    error = response.error if response.HasField("error") else None
    out: dict[str, Any] = {
        "id": response.id,
        "object": "response",
        "created_at": response.created_at,
        "status": response.status,
        "error": {"code": error.code, "message": error.message} if error is not None else None,
        "incomplete_details": {"reason": response.incomplete_reason} if response.incomplete_reason else None,
        "instructions": request.instructions if request.HasField("instructions") else None,
        "max_output_tokens": request.max_output_tokens if request.HasField("max_output_tokens") else None,
        "model": response.model,
        "output": [encode_item(item) for item in response.output],
        "parallel_tool_calls": request.parallel_tool_calls if request.HasField("parallel_tool_calls") else True,
        "previous_response_id": request.previous_response_id or None,
        "reasoning": {
            "effort": request.reasoning_effort if request.HasField("reasoning_effort") else None,
            "summary": request.reasoning_summary if request.HasField("reasoning_summary") else None,
        },
        "store": request.store if request.HasField("store") else True,
        "temperature": request.temperature if request.HasField("temperature") else 1.0,
        "text": {"format": encode_text_format(request.text_format) or {"type": "text"}},
        "tool_choice": encode_tool_choice(request.tool_choice) or "auto",
        "tools": [encode_tool(t) for t in request.tools],
        "top_p": request.top_p if request.HasField("top_p") else 1.0,
        "truncation": "disabled",
        "usage": encode_usage(response.usage) if response.HasField("usage") else None,
        "user": request.user if request.HasField("user") else None,
        "metadata": dict(request.metadata),
    }
    if request.extra_json:
        extra = orjson.loads(request.extra_json)
        out.update({k: extra[k] for k in _ECHOED_EXTRA if k in extra})
    return merged(out, response.extra_json)


def decode_response(raw: object, param: str = "response") -> rpb.Response:
    """A backend's response object; what it echoes of the request is dropped (the gateway echoes the client's)."""
    body = as_dict(raw, param)
    out = rpb.Response()

    def typed(key: str, value: Any) -> bool:
        path = f"{param}.{key}"
        if key in _ECHOED:
            return True
        if key in ("id", "model", "status"):
            setattr(out, key, as_str(value, path))
        elif key == "created_at":
            out.created_at = as_int(value, path)
        elif key == "output":
            out.output.extend(decode_item(item, f"{path}[{i}]") for i, item in enumerate(as_list(value, path)))
        elif key == "usage":
            out.usage.CopyFrom(decode_usage(value))
        elif key == "error":
            error = as_dict(value, path)
            out.error.code = str(error.get("code") or "")
            out.error.message = str(error.get("message") or "")
        elif key == "incomplete_details":
            out.incomplete_reason = str(as_dict(value, path).get("reason") or "")
        else:
            return False
        return True

    out.extra_json = extra_of({k: v for k, v in body.items() if k not in _ECHOED}, typed, param)
    return out


# ---------------------------------------------------------------------------------------------------- events


def encode_event(event: rpb.StreamResponseResponse) -> dict[str, Any]:
    """One stream event as JSON, with the fields its type uses."""
    out: dict[str, Any] = {"type": event.type, "sequence_number": event.sequence_number}
    if event.HasField("response"):
        out["response"] = encode_response(event.response)
    for key in _EVENT_INDEXES:
        if has(event, key):
            out[key] = getattr(event, key)
    if event.item_id:
        out["item_id"] = event.item_id
    if event.HasField("item"):
        out["item"] = encode_item(event.item)
    if event.HasField("part"):
        out["part"] = encode_content(event.part)
    for key in _EVENT_STRINGS:
        if has(event, key):
            out[key] = getattr(event, key)
    if event.HasField("error"):
        error = event.error
        out.update(code=error.code or None, message=error.message, param=error.param or None)
    return merged(out, event.extra_json)


def decode_event(raw: object) -> rpb.StreamResponseResponse:
    """One stream event a backend sent."""
    body = as_dict(raw, "event")
    out = rpb.StreamResponseResponse(type=as_str(body.get("type"), "event.type"))
    is_error = out.type == "error"

    def typed(key: str, value: Any) -> bool:  # one branch per field
        if key == "type":
            return True
        if key == "sequence_number" or key in _EVENT_INDEXES:
            setattr(out, key, as_int(value, key))
        elif key == "response":
            out.response.CopyFrom(decode_response(value))
        elif key == "item_id":
            out.item_id = as_str(value, key)
        elif key == "item":
            out.item.CopyFrom(decode_item(value, key))
        elif key == "part":
            out.part.CopyFrom(decode_content(value, key))
        elif key in _EVENT_STRINGS and isinstance(value, str):
            setattr(out, key, value)
        elif is_error and key in ("code", "message", "param"):
            setattr(out.error, key, str(value))
        else:
            return False
        return True

    out.extra_json = extra_of(body, typed, "event")
    return out
