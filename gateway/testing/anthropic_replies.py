"""What the fake Anthropic server answers: request validation, deterministic replies and their SSE events.

Shapes from https://docs.anthropic.com/en/api/messages (request and Message object) and
https://docs.anthropic.com/en/api/messages-streaming (events, including input_json_delta split across deltas and
thinking with signature_delta). Shares no code with the gateway, so a gateway bug cannot hide behind the same bug here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson


class InvalidRequest(Exception):
    """A body the real API would answer with 400 invalid_request_error."""


@dataclass
class Reply:
    """One answer: its content blocks, why it stopped, and its usage."""

    message_id: str
    model: str
    blocks: list[dict[str, Any]]
    stop_reason: str
    stop_sequence: str | None
    usage: dict[str, int]
    text_pieces: list[str] = field(default_factory=list)  # how the text block streams


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidRequest(message)


def validate(body: Any) -> None:
    """The checks the real API makes on every request that the gateway must satisfy."""
    _require(isinstance(body, dict), "body: expected a JSON object")
    _require(isinstance(body.get("model"), str) and body["model"] != "", "model: Field required")
    max_tokens = body.get("max_tokens")
    _require(isinstance(max_tokens, int) and not isinstance(max_tokens, bool), "max_tokens: Field required")
    _require(max_tokens >= 1, "max_tokens: must be greater than or equal to 1")
    messages = body.get("messages")
    _require(isinstance(messages, list) and len(messages) > 0, "messages: at least one message is required")
    for i, message in enumerate(messages):
        _validate_message(message, f"messages.{i}")
    system = body.get("system")
    _require(system is None or isinstance(system, str | list), "system: expected a string or a list of text blocks")
    for i, block in enumerate(system if isinstance(system, list) else ()):
        is_text = isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
        _require(is_text, f"system.{i}: expected a text block")
    thinking = body.get("thinking")
    _require(thinking is None or isinstance(thinking, dict), "thinking: expected an object")
    if isinstance(thinking, dict):
        _require(
            thinking.get("type") in ("enabled", "disabled"), "thinking.type: Input should be 'enabled' or 'disabled'"
        )
        budget = thinking.get("budget_tokens")
        valid_budget = isinstance(budget, int) and not isinstance(budget, bool) and budget >= 1
        _require(thinking["type"] == "disabled" or valid_budget, "thinking.budget_tokens: Field required")
    if messages[-1]["role"] == "assistant":  # a prefill, which the answer continues
        prefill = "".join(_texts(messages[-1]["content"]))
        _require(prefill == prefill.rstrip(), "messages: final assistant content cannot end with trailing whitespace")
    first_ok = messages[0]["role"] == "user" or isinstance(system, str | list)
    _require(first_ok, "messages: the first message must use the user role")
    for i, tool in enumerate(body.get("tools") or ()):
        is_custom = isinstance(tool, dict) and tool.get("type", "custom") == "custom"
        _require(not is_custom or isinstance(tool.get("input_schema"), dict), f"tools.{i}.input_schema: Field required")


def _validate_message(message: Any, path: str) -> None:
    _require(isinstance(message, dict), f"{path}: expected an object")
    _require(message.get("role") in ("user", "assistant"), f"{path}.role: Input should be 'user' or 'assistant'")
    content = message.get("content")
    _require(isinstance(content, str | list), f"{path}.content: expected a string or a list of blocks")
    for j, block in enumerate(content if isinstance(content, list) else ()):
        _require(isinstance(block, dict) and isinstance(block.get("type"), str), f"{path}.content.{j}: bad block")
        if block["type"] == "text":
            _require(bool(block.get("text")), f"{path}.content.{j}.text: text content blocks must be non-empty")


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for block in content:
        if block.get("type") == "text":
            out.append(block["text"])
        elif block.get("type") == "tool_result":
            out.extend(_texts(block.get("content") or ""))
    return out


def _words(text: str) -> int:
    return len(text.split())


def _has_cache_control(value: Any) -> bool:
    if isinstance(value, dict):
        return "cache_control" in value or any(_has_cache_control(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_cache_control(v) for v in value)
    return False


def input_tokens(body: dict[str, Any]) -> int:
    """Input tokens: one per word of every text, system and tool results included, plus one per message."""
    system = body.get("system") or ""
    total = sum(_words(t) for t in _texts(system))
    for message in body["messages"]:
        total += 1 + sum(_words(t) for t in _texts(message["content"]))
    return total + 10 * len(body.get("tools") or ())


def _prefill(messages: list[dict[str, Any]]) -> str:
    """The beginning of the answer a trailing assistant message gives (empty: none)."""
    last = messages[-1]
    return "".join(_texts(last["content"])) if last["role"] == "assistant" else ""


def _last_user_text(messages: list[dict[str, Any]]) -> tuple[str, bool]:
    """The last user turn's text, and whether that turn carried tool results."""
    last = messages[-2] if messages[-1]["role"] == "assistant" and len(messages) > 1 else messages[-1]
    has_results = isinstance(last["content"], list) and any(b.get("type") == "tool_result" for b in last["content"])
    return " ".join(_texts(last["content"])), has_results


def _tool_to_call(body: dict[str, Any], answered: bool) -> str | None:
    tools = [t for t in body.get("tools") or () if "input_schema" in t]
    choice = body.get("tool_choice") or {"type": "auto"}
    if not tools or choice.get("type") == "none":
        return None
    if choice.get("type") == "tool":
        return str(choice["name"])
    if choice.get("type") == "any" or not answered:
        return str(tools[0]["name"])
    return None


def _thinking(body: dict[str, Any], user_text: str) -> list[dict[str, Any]]:
    config = body.get("thinking") or {}
    if config.get("type") != "enabled":
        return []
    thought = f"The user said: {user_text}. A short answer will do."
    signature = "sig_" + hashlib.sha256(thought.encode()).hexdigest()[:32]
    return [{"type": "thinking", "thinking": thought, "signature": signature}]


def make_reply(body: dict[str, Any], message_id: str, pieces: int, cache_seen: set[str]) -> Reply:
    """The deterministic answer to a valid body: a tool call when a tool is due, else an echoing text."""
    user_text, answered = _last_user_text(body["messages"])
    blocks = _thinking(body, user_text)
    usage = {"input_tokens": input_tokens(body), "output_tokens": 0}
    if _has_cache_control(body):
        # The cacheable prefix is written on first sight and read after: the documented usage of prompt caching.
        key = hashlib.sha256(orjson.dumps([body.get("system"), body.get("tools")])).hexdigest()
        cached = usage["input_tokens"] // 2
        usage["input_tokens"] -= cached
        usage["cache_read_input_tokens" if key in cache_seen else "cache_creation_input_tokens"] = cached
        cache_seen.add(key)
    name = _tool_to_call(body, answered)
    text_pieces: list[str] = []
    stop_sequence: str | None = None
    if name is not None:
        tool_id = "toolu_" + hashlib.sha256(f"{message_id}{name}".encode()).hexdigest()[:24]
        blocks.append({"type": "tool_use", "id": tool_id, "name": name, "input": {"echo": user_text}})
        stop_reason, output = "tool_use", 12
    else:
        text_pieces, stop_reason, stop_sequence = _text(body, user_text, pieces)
        text_pieces = _after(text_pieces, _prefill(body["messages"]))
        blocks.append({"type": "text", "text": "".join(text_pieces)})
        output = len(text_pieces)
    usage["output_tokens"] = output + sum(_words(b["thinking"]) for b in blocks if b["type"] == "thinking")
    return Reply(message_id, body["model"], blocks, stop_reason, stop_sequence, usage, text_pieces)


def _text(body: dict[str, Any], user_text: str, pieces: int) -> tuple[list[str], str, str | None]:
    """The echoing text in `pieces` words, cut by a stop sequence or by max_tokens (one token a piece)."""
    words = [f"{w} " for w in f"This is a reply from {body['model']} to: {user_text}".split()]
    words = (words * (pieces // max(1, len(words)) + 1))[: max(1, pieces)]
    for i, word in enumerate(words):
        for stop in body.get("stop_sequences") or ():
            if stop in word:
                return [*words[:i], word[: word.index(stop)]], "stop_sequence", stop
    if len(words) > body["max_tokens"]:
        return words[: body["max_tokens"]], "max_tokens", None
    return words, "end_turn", None


def _after(pieces: list[str], prefill: str) -> list[str]:
    """The pieces that follow `prefill` (the one it ends inside keeps its rest); all of them when the text does not
    begin with it (Claude, given a beginning it would not have written, goes on in its own words)."""
    if not prefill or not "".join(pieces).startswith(prefill):
        return pieces
    rest, seen = [], 0
    for piece in pieces:
        if seen + len(piece) > len(prefill):
            rest.append(piece[max(0, len(prefill) - seen) :])
        seen += len(piece)
    return rest


def message_object(reply: Reply) -> dict[str, Any]:
    """The Message object of a non-streaming answer."""
    return {
        "id": reply.message_id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": reply.blocks,
        "stop_reason": reply.stop_reason,
        "stop_sequence": reply.stop_sequence,
        "usage": reply.usage,
    }


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


def _split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _block_events(index: int, block: dict[str, Any], reply: Reply) -> list[bytes]:
    kind = block["type"]
    deltas: list[dict[str, Any]]
    if kind == "text":
        start: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in reply.text_pieces if piece]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in _split(block["thinking"], 3)]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    else:  # tool_use: the arguments arrive as partial JSON, split mid-token on purpose
        start = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": ""}]
        arguments = orjson.dumps(block["input"]).decode()
        deltas += [{"type": "input_json_delta", "partial_json": p} for p in _split(arguments, 3)]
    events = [_event("content_block_start", {"index": index, "content_block": start})]
    events += [_event("content_block_delta", {"index": index, "delta": d}) for d in deltas]
    events.append(_event("content_block_stop", {"index": index}))
    return events


def stream_events(reply: Reply) -> list[bytes]:
    """The whole SSE stream of an answer, event by event, as the streaming docs show it."""
    start_usage = {**reply.usage, "output_tokens": 1}
    message = {**message_object(reply), "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    events = [_event("message_start", {"message": message}), _event("ping", {})]
    for index, block in enumerate(reply.blocks):
        events += _block_events(index, block, reply)
    delta = {"stop_reason": reply.stop_reason, "stop_sequence": reply.stop_sequence}
    events.append(_event("message_delta", {"delta": delta, "usage": {"output_tokens": reply.usage["output_tokens"]}}))
    events.append(_event("message_stop", {}))
    return events


def error_body(error_type: str, message: str) -> dict[str, Any]:
    """The documented error shape."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def error_event(error_type: str, message: str) -> bytes:
    """An error inside a stream, after the 200."""
    return b"event: error\ndata: " + orjson.dumps(error_body(error_type, message)) + b"\n\n"
