"""What the fake OpenAI server answers to `POST /v1/responses`: the request checked as OpenAI checks it, and a
deterministic response, whole or as the documented stream events
(https://platform.openai.com/docs/api-reference/responses-streaming).

Like the chat fake: the text echoes the last user message in a fixed sentence (`chunks` words, one per
`response.output_text.delta`); with function tools (and `tool_choice` not "none", and no function output to answer)
the first tool is called with `{"echo": <last user text>}`; with `reasoning.summary` set, a reasoning item with a
summary comes first. Tokens are words. The fake keeps nothing: a `previous_response_id` is "not found", as it would
be upstream for a response stored elsewhere.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.testing.openai_replies import UNPARSEABLE, BadRequest

__all__ = ["ResponsesReply", "parse_responses"]

_PREFIX_WORDS = tuple(["This", "is", "a", "reply", "from", "the", "fake", "OpenAI", "server", "to:"])
_MIN_OUTPUT_TOKENS = 16  # OpenAI refuses a smaller max_output_tokens
_ARGUMENT_PIECES = 4
_ECHOED = ("instructions", "tools", "tool_choice", "temperature", "top_p", "max_output_tokens", "metadata", "store")


@dataclass
class ResponsesReply:
    """One answered Responses request: its events in order (the last holds the whole response) and whether the
    client asked for them streamed."""

    stream: bool
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def response(self) -> dict[str, Any]:
        """The whole response (what a non-streaming request gets)."""
        whole: dict[str, Any] = self.events[-1]["response"]
        return whole

    @property
    def deltas(self) -> int:
        """How many events carry a delta (where a stream fault may cut)."""
        return sum(1 for e in self.events if e["type"].endswith(".delta"))


def parse_responses(body: Any, serial: int, chunks: int) -> ResponsesReply:
    """Validate a Responses request as OpenAI does, and answer it; `serial` numbers its ids."""
    if not isinstance(body, dict):
        raise BadRequest(UNPARSEABLE, None)
    model = body.get("model")
    if not isinstance(model, str):
        raise BadRequest("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    items = _input_items(body.get("input"))
    if (previous := body.get("previous_response_id")) is not None:
        raise BadRequest(f"Previous response with id '{previous}' not found.", "previous_response_id")
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < _MIN_OUTPUT_TOKENS):
        message = f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= {_MIN_OUTPUT_TOKENS}."
        raise BadRequest(message, "max_output_tokens", "integer_below_min_value")
    stream = body.get("stream") is True
    builder = _Builder(body, model, serial)
    user_text = _last_user_text(items)
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("summary") is not None:
        builder.reasoning(f"Thinking about: {user_text}")
    tool = _tool_name(body, items)
    if tool is not None:
        builder.function_call(tool, json.dumps({"echo": user_text}, ensure_ascii=False), f"call_fake_{serial}")
    else:
        count = min(chunks, limit) if limit is not None else chunks
        words = _PREFIX_WORDS + tuple(user_text.split())
        builder.message([words[i % len(words)] + " " for i in range(count)], incomplete=count < chunks)
    builder.finish(_input_tokens(body, items))
    return ResponsesReply(stream, builder.events)


def _input_items(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise BadRequest("Invalid type for 'input': expected a string or an array of objects.", "input", "invalid_type")
    for index, item in enumerate(value):
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message" and item.get("role") not in ("user", "assistant", "system", "developer"):
            raise BadRequest(f"Invalid value for 'input[{index}].role'.", f"input[{index}].role", "invalid_value")
        if kind in ("function_call", "function_call_output") and not isinstance(item.get("call_id"), str):
            raise BadRequest(f"Missing required parameter: 'input[{index}].call_id'.", f"input[{index}].call_id")
        if kind is None:
            raise BadRequest(f"Missing required parameter: 'input[{index}].type'.", f"input[{index}].type")
    return value


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str) and "text" in p
        )
    return ""


def _last_user_text(items: list[dict[str, Any]]) -> str:
    for item in reversed(items):
        if item.get("role") == "user":
            return _text_of(item.get("content"))
    return ""


def _input_tokens(body: dict[str, Any], items: list[dict[str, Any]]) -> int:
    # One token per word of every message and function output, and of the instructions.
    words = len(str(body.get("instructions") or "").split())
    for item in items:
        words += len(_text_of(item.get("content")).split()) + len(str(item.get("output") or "").split())
    return words


def _tool_name(body: dict[str, Any], items: list[dict[str, Any]]) -> str | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise BadRequest("Invalid type for 'tools': expected an array of objects.", "tools", "invalid_type")
    functions = [t for t in tools if t.get("type") == "function"]
    if not functions or body.get("tool_choice") == "none":
        return None
    if items and items[-1].get("type") == "function_call_output":
        return None  # the tool answered: the model answers in text
    name = functions[0].get("name")
    if not isinstance(name, str):
        raise BadRequest("Missing required parameter: 'tools[0].name'.", "tools[0].name", "missing_required_parameter")
    return name


class _Builder:
    """Makes the events of one response, numbering them."""

    def __init__(self, body: dict[str, Any], model: str, serial: int) -> None:
        self.events: list[dict[str, Any]] = []
        self._seq: Iterator[int] = itertools.count()
        self._serial = serial
        self._output: list[dict[str, Any]] = []
        self._output_tokens = 0
        self._reasoning_tokens = 0
        self._incomplete = False
        self._response: dict[str, Any] = {
            "id": f"resp_fake_{serial}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "error": None,
            "incomplete_details": None,
            "model": model,
            "output": [],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "usage": None,
            **{key: body[key] for key in _ECHOED if key in body},
        }
        self._emit("response.created", response=self._snapshot())
        self._emit("response.in_progress", response=self._snapshot())

    def _emit(self, kind: str, **fields: Any) -> None:
        self.events.append({"type": kind, "sequence_number": next(self._seq), **fields})

    def _snapshot(self) -> dict[str, Any]:
        return {**self._response, "output": [dict(item) for item in self._output]}

    def reasoning(self, text: str) -> None:
        index, item_id = len(self._output), f"rs_fake_{self._serial}"
        item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": []}
        self._emit("response.output_item.added", output_index=index, item=dict(item))
        at = {"item_id": item_id, "output_index": index, "summary_index": 0}
        self._emit("response.reasoning_summary_part.added", **at, part={"type": "summary_text", "text": ""})
        for word in text.split():
            self._emit("response.reasoning_summary_text.delta", **at, delta=word + " ")
        full = " ".join(text.split()) + " "
        self._emit("response.reasoning_summary_text.done", **at, text=full)
        self._emit("response.reasoning_summary_part.done", **at, part={"type": "summary_text", "text": full})
        item["summary"] = [{"type": "summary_text", "text": full}]
        self._emit("response.output_item.done", output_index=index, item=item)
        self._output.append(item)
        self._reasoning_tokens = len(text.split())

    def message(self, pieces: list[str], *, incomplete: bool) -> None:
        index, item_id = len(self._output), f"msg_fake_{self._serial}"
        item: dict[str, Any] = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant"}
        self._emit("response.output_item.added", output_index=index, item={**item, "content": []})
        at = {"item_id": item_id, "output_index": index, "content_index": 0}
        self._emit("response.content_part.added", **at, part={"type": "output_text", "text": "", "annotations": []})
        for piece in pieces:
            self._emit("response.output_text.delta", **at, delta=piece, logprobs=[])
        text = "".join(pieces)
        part = {"type": "output_text", "text": text, "annotations": []}
        self._emit("response.output_text.done", **at, text=text, logprobs=[])
        self._emit("response.content_part.done", **at, part=part)
        item.update(status="incomplete" if incomplete else "completed", content=[part])
        self._emit("response.output_item.done", output_index=index, item=item)
        self._output.append(item)
        self._output_tokens = len(pieces)
        self._incomplete = incomplete

    def function_call(self, name: str, arguments: str, call_id: str) -> None:
        index, item_id = len(self._output), f"fc_fake_{self._serial}"
        item = {"id": item_id, "type": "function_call", "status": "in_progress", "arguments": "", "call_id": call_id}
        item["name"] = name
        self._emit("response.output_item.added", output_index=index, item=dict(item))
        size = -(-len(arguments) // _ARGUMENT_PIECES)
        pieces = [arguments[start : start + size] for start in range(0, len(arguments), size)]
        for piece in pieces:
            self._emit("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=piece)
        self._emit("response.function_call_arguments.done", item_id=item_id, output_index=index, arguments=arguments)
        item.update(status="completed", arguments=arguments)
        self._emit("response.output_item.done", output_index=index, item=item)
        self._output.append(item)
        self._output_tokens = len(pieces)

    def finish(self, input_tokens: int) -> None:
        output_tokens = self._output_tokens + self._reasoning_tokens
        self._response["status"] = "incomplete" if self._incomplete else "completed"
        if self._incomplete:
            self._response["incomplete_details"] = {"reason": "max_output_tokens"}
        self._response["usage"] = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": self._reasoning_tokens},
            "total_tokens": input_tokens + output_tokens,
        }
        kind = "response.incomplete" if self._incomplete else "response.completed"
        self._emit(kind, response=self._snapshot())
