"""`tollgate.gateway.v1` responses → what a client of Anthropic's Messages API expects: the Message object, the
stream's events, and error bodies.

Shapes: https://docs.anthropic.com/en/api/messages (Message), https://docs.anthropic.com/en/api/messages-streaming
(events, framed `event: <type>\\ndata: <json>\\n\\n`), https://docs.anthropic.com/en/api/errors (errors). A stop reason
the provider named (an Anthropic backend's) is passed through as it was; otherwise it is mapped from the finish
reason. Usage splits prompt tokens back into input, cache-read and cache-creation tokens.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from gateway.errors import GatewayError
from tollgate.gateway.v1 import gateway_pb2 as pb

log = logging.getLogger("tollgate.frontdoor")

STOP_REASONS: dict[int, str] = {
    pb.FINISH_REASON_STOP: "end_turn",
    pb.FINISH_REASON_LENGTH: "max_tokens",
    pb.FINISH_REASON_TOOL_CALLS: "tool_use",
    pb.FINISH_REASON_FUNCTION_CALL: "tool_use",
    pb.FINISH_REASON_CONTENT_FILTER: "refusal",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_body(exc: GatewayError, request_id: str) -> dict[str, Any]:
    """`{"type": "error", "error": {"type", "message"}, "request_id"}`, the type chosen by the status."""
    status = exc.http_status
    kind = _ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": exc.message}, "request_id": request_id}


def encode_usage(usage: pb.Usage) -> dict[str, int]:
    """Usage as Anthropic reports it: input tokens exclude the cached and cache-written ones."""
    return {
        "input_tokens": max(0, usage.prompt_tokens - usage.cached_tokens - usage.cache_creation_tokens),
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    }


def _stop_reason(choice: pb.Choice | pb.ChunkChoice) -> str:
    if choice.native_finish_reason:
        return choice.native_finish_reason
    if choice.HasField("stop_sequence"):
        return "stop_sequence"
    return STOP_REASONS.get(choice.finish_reason, "end_turn")


def _tool_input(arguments: str) -> Any:
    """The arguments as a JSON object; an OpenAI-compatible model may produce invalid JSON, which becomes {}."""
    try:
        value = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        log.warning("a tool call's arguments are not JSON; sent as {}")
        return {}
    return value if isinstance(value, dict) else {}


def _thinking_blocks(message: pb.ChatMessage) -> list[dict[str, Any]]:
    if not message.thinking_blocks:
        # Reasoning from an OpenAI-compatible server has no signature: it is shown, not meant to be sent back.
        if message.reasoning_content:
            return [{"type": "thinking", "thinking": message.reasoning_content, "signature": ""}]
        return []
    return [
        {"type": "redacted_thinking", "data": t.redacted_data}
        if t.redacted_data
        else {"type": "thinking", "thinking": t.thinking, "signature": t.signature}
        for t in message.thinking_blocks
    ]


def encode_message(completion: pb.CreateChatCompletionResponse) -> dict[str, Any]:
    """The Message object of a whole answer (the first choice: the Messages API has no others)."""
    choice = completion.choices[0] if completion.choices else pb.Choice()
    message = choice.message
    content = _thinking_blocks(message)
    if message.content:
        content.append({"type": "text", "text": message.content})
    if message.HasField("refusal") and message.refusal:
        content.append({"type": "text", "text": message.refusal})
    content.extend(
        {"type": "tool_use", "id": c.id, "name": c.function.name, "input": _tool_input(c.function.arguments)}
        for c in message.tool_calls
    )
    return {
        "id": completion.id,
        "type": "message",
        "role": "assistant",
        "model": completion.model,
        "content": content,
        "stop_reason": _stop_reason(choice),
        "stop_sequence": choice.stop_sequence if choice.HasField("stop_sequence") else None,
        "usage": encode_usage(completion.usage),
    }


def event(kind: str, data: dict[str, Any]) -> bytes:
    """One SSE event in Anthropic's framing."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


_PING = event("ping", {})


class MessageStreamEncoder:
    """OpenAI-shaped chunks → the Messages API's stream events, one chunk at a time.

    Content blocks open and close as the kind of delta changes (text, thinking, a tool call), so each block is
    contiguous, as the API's are. The closing message_delta waits for the usage chunk, which comes last.
    """

    __slots__ = ("_block", "_index", "_stop", "_tool", "_usage")

    def __init__(self) -> None:
        self._index = -1  # the open block's index
        self._block = ""  # the open block's kind, "" when none is open
        self._tool = -1  # the open tool_use block's tool call index
        self._stop: tuple[str, str | None] = ("end_turn", None)
        self._usage = pb.Usage()

    def start(self, chunk: pb.StreamChatCompletionResponse) -> bytes:
        """message_start and a ping, then the first chunk's events."""
        message: dict[str, Any] = {
            "id": chunk.id,
            "type": "message",
            "role": "assistant",
            "model": chunk.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": encode_usage(pb.Usage()),
        }
        return event("message_start", {"message": message}) + _PING + self.feed(chunk)

    def feed(self, chunk: pb.StreamChatCompletionResponse) -> bytes:
        """The events one chunk makes (often one, sometimes none)."""
        out: list[bytes] = []
        for choice in chunk.choices:
            if choice.index == 0:
                self._delta(choice.delta, out)
                if choice.finish_reason:
                    self._close(out)
                    sequence = choice.stop_sequence if choice.HasField("stop_sequence") else None
                    self._stop = (_stop_reason(choice), sequence)
        if chunk.HasField("usage"):
            self._usage = chunk.usage
        return b"".join(out)

    def finish(self) -> bytes:
        """The closing events: message_delta with the stop reason and usage, then message_stop."""
        out: list[bytes] = []
        self._close(out)
        stop_reason, stop_sequence = self._stop
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        out.append(event("message_delta", {"delta": delta, "usage": encode_usage(self._usage)}))
        out.append(event("message_stop", {}))
        return b"".join(out)

    def _open(self, kind: str, block: dict[str, Any], out: list[bytes]) -> None:
        self._close(out)
        self._index += 1
        self._block = kind
        out.append(event("content_block_start", {"index": self._index, "content_block": block}))

    def _close(self, out: list[bytes]) -> None:
        if self._block:
            out.append(event("content_block_stop", {"index": self._index}))
            self._block = ""
            self._tool = -1

    def _add(self, delta: dict[str, Any], out: list[bytes]) -> None:
        out.append(event("content_block_delta", {"index": self._index, "delta": delta}))

    def _delta(self, delta: pb.Delta, out: list[bytes]) -> None:
        if delta.HasField("redacted_thinking"):
            self._open("redacted_thinking", {"type": "redacted_thinking", "data": delta.redacted_thinking}, out)
            self._close(out)
        if delta.HasField("reasoning_content") and delta.reasoning_content:
            if self._block != "thinking":
                self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
            self._add({"type": "thinking_delta", "thinking": delta.reasoning_content}, out)
        if delta.HasField("thinking_signature"):
            if self._block != "thinking":
                self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
            self._add({"type": "signature_delta", "signature": delta.thinking_signature}, out)
            self._close(out)
        if delta.HasField("content") and delta.content:
            if self._block != "text":
                self._open("text", {"type": "text", "text": ""}, out)
            self._add({"type": "text_delta", "text": delta.content}, out)
        for call in delta.tool_calls:
            if self._block != "tool_use" or call.index != self._tool:
                block = {"type": "tool_use", "id": call.id, "name": call.function.name, "input": {}}
                self._open("tool_use", block, out)
                self._tool = call.index
            if call.function.arguments:
                self._add({"type": "input_json_delta", "partial_json": call.function.arguments}, out)


def error_event(exc: GatewayError, request_id: str) -> bytes:
    """An error after the stream began: the API's in-band `error` event."""
    return b"event: error\ndata: " + orjson.dumps(error_body(exc, request_id)) + b"\n\n"
