"""Anthropic Messages API answers → `tollgate.gateway.v1` responses: whole messages, stream events, errors.

Shapes from https://docs.anthropic.com/en/api/messages (the Message object: content blocks, stop_reason,
stop_sequence, usage with cache tokens), https://docs.anthropic.com/en/api/messages-streaming (the event flow:
message_start, content_block_start / delta / stop, message_delta, message_stop, ping, error) and
https://docs.anthropic.com/en/api/errors (error types and statuses).

Like the OpenAI response codec, decoding lets a body of the wrong shape raise `KeyError`/`TypeError`/`ValueError`/
`AttributeError`, which the provider turns into one `UpstreamError` at its boundary.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import GatewayError, UpstreamError
from gateway.providers.openai_compat import upstream_error
from tollgate.gateway.v1 import gateway_pb2 as pb

STOP_REASONS: dict[str, pb.FinishReason.ValueType] = {
    "end_turn": pb.FINISH_REASON_STOP,
    "stop_sequence": pb.FINISH_REASON_STOP,
    "pause_turn": pb.FINISH_REASON_STOP,
    "max_tokens": pb.FINISH_REASON_LENGTH,
    "model_context_window_exceeded": pb.FINISH_REASON_LENGTH,
    "tool_use": pb.FINISH_REASON_TOOL_CALLS,
    "refusal": pb.FINISH_REASON_CONTENT_FILTER,
}
# The documented error types, each with the status the API answers it with, except two: overloaded_error is 529
# there, which no HTTP client knows, and is a 503 here; billing_error (402) is the gateway's account's problem, not
# the client's, and is a 500 (an upstream failure another target may not have).
ERROR_STATUSES: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 500,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 503,
}


def decode_usage(raw: dict[str, Any], out: pb.Usage) -> None:
    """Anthropic usage; prompt_tokens counts every input token, cached and cache-written ones included."""
    read = int(raw.get("cache_read_input_tokens") or 0)
    written = int(raw.get("cache_creation_input_tokens") or 0)
    out.cached_tokens = read
    out.cache_creation_tokens = written
    out.prompt_tokens = int(raw.get("input_tokens") or 0) + read + written
    out.completion_tokens = int(raw.get("output_tokens") or 0)
    out.total_tokens = out.prompt_tokens + out.completion_tokens


def _finish(choice: pb.Choice | pb.ChunkChoice, stop_reason: str | None, stop_sequence: str | None) -> None:
    if stop_reason:
        choice.finish_reason = STOP_REASONS.get(stop_reason, pb.FINISH_REASON_STOP)
        choice.native_finish_reason = stop_reason
    if stop_sequence is not None:
        choice.stop_sequence = stop_sequence


def decode_message(raw: dict[str, Any], created: int) -> pb.CreateChatCompletionResponse:
    """A whole Message object (the non-streaming answer)."""
    out = pb.CreateChatCompletionResponse(id=raw["id"], created=created, model=raw.get("model") or "")
    choice = out.choices.add(index=0)
    message = choice.message
    message.role = pb.ROLE_ASSISTANT
    texts: list[str] = []
    for block in raw["content"]:
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "thinking":
            message.thinking_blocks.add(thinking=block["thinking"], signature=block.get("signature") or "")
        elif kind == "redacted_thinking":
            message.thinking_blocks.add(redacted_data=block["data"])
        elif kind == "tool_use":
            message.tool_calls.add(
                id=block["id"],
                type="function",
                function=pb.FunctionCall(name=block["name"], arguments=orjson.dumps(block["input"]).decode()),
            )
    if texts or not message.tool_calls:
        message.content = "".join(texts)
    if thinking := [t.thinking for t in message.thinking_blocks if not t.redacted_data]:
        message.reasoning_content = "".join(thinking)
    _finish(choice, raw.get("stop_reason"), raw.get("stop_sequence"))
    if usage := raw.get("usage"):
        decode_usage(usage, out.usage)
    return out


class StreamTranslator:
    """Anthropic stream events → OpenAI-shaped chunks, one event at a time (the hot path of streaming).

    `feed` returns the chunk an event makes, or None for events that carry nothing a chunk can (pings, block
    stops); `done` says whether message_stop arrived.
    """

    __slots__ = ("_created", "_id", "_model", "_tools", "_usage", "done")

    def __init__(self, created: int) -> None:
        self._created = created
        self._id = ""
        self._model = ""
        self._tools: dict[int, int] = {}  # content block index → tool call index
        self._usage: dict[str, Any] = {}
        self.done = False

    def _chunk(self) -> pb.StreamChatCompletionResponse:
        return pb.StreamChatCompletionResponse(id=self._id, created=self._created, model=self._model)

    def _delta(self) -> tuple[pb.StreamChatCompletionResponse, pb.Delta]:
        chunk = self._chunk()
        choice = chunk.choices.add(index=0)
        return chunk, choice.delta

    def feed(self, event: dict[str, Any], backend: str) -> pb.StreamChatCompletionResponse | None:
        """The chunk one parsed event makes."""
        kind = event["type"]
        if kind == "content_block_delta":
            return self._block_delta(event["index"], event["delta"])
        if kind == "content_block_start":
            return self._block_start(event["index"], event["content_block"])
        if kind == "message_start":
            message = event["message"]
            self._id, self._model = message["id"], message.get("model") or ""
            self._usage.update(message.get("usage") or {})
            chunk, delta = self._delta()
            delta.role = pb.ROLE_ASSISTANT
            delta.content = ""
            return chunk
        if kind == "message_delta":
            self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            body = event.get("delta") or {}
            chunk, delta = self._delta()
            _finish(chunk.choices[0], body.get("stop_reason"), body.get("stop_sequence"))
            return chunk
        if kind == "message_stop":
            self.done = True
            chunk = self._chunk()
            decode_usage(self._usage, chunk.usage)
            return chunk
        if kind == "error":
            raise anthropic_error(0, event, None, backend)
        return None  # ping, content_block_stop, and event types newer than this code

    def _block_start(self, index: int, block: dict[str, Any]) -> pb.StreamChatCompletionResponse | None:
        kind = block["type"]
        if kind == "tool_use":
            position = self._tools[index] = len(self._tools)
            chunk, delta = self._delta()
            call = delta.tool_calls.add(index=position, id=block["id"], type="function")
            call.function.name = block["name"]
            call.function.arguments = ""
            return chunk
        if kind == "redacted_thinking":
            chunk, delta = self._delta()
            delta.redacted_thinking = block["data"]
            return chunk
        if kind == "text" and block.get("text"):
            chunk, delta = self._delta()
            delta.content = block["text"]
            return chunk
        return None  # an empty text or thinking block fills in through its deltas

    def _block_delta(self, index: int, body: dict[str, Any]) -> pb.StreamChatCompletionResponse | None:
        kind = body["type"]
        chunk, delta = self._delta()
        if kind == "text_delta":
            delta.content = body["text"]
        elif kind == "input_json_delta":
            position = self._tools.get(index)
            if position is None or not body["partial_json"]:
                # A server tool's input (server_tool_use: Anthropic runs it) is no call for the client; and the API
                # opens each tool's input with an empty piece.
                return None
            call = delta.tool_calls.add(index=position)
            call.function.arguments = body["partial_json"]
        elif kind == "thinking_delta":
            delta.reasoning_content = body["thinking"]
        elif kind == "signature_delta":
            delta.thinking_signature = body["signature"]
        else:
            return None  # citations_delta and newer kinds have no OpenAI counterpart
        return chunk


def anthropic_error(status: int, body: Any, retry_after: str | None, backend: str) -> GatewayError:
    """The client-facing error for an Anthropic error body (`{"type": "error", "error": {"type", "message"}}`),
    recognised by its documented type; the HTTP status decides only when the type is unknown."""
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(kind, str):
        kind = None
    status = ERROR_STATUSES.get(kind or "", status)
    if status < 400:
        return UpstreamError(f"backend '{backend}' sent an error event of unknown type")
    shaped = {"error": {"message": message if isinstance(message, str) else "", "code": kind}}
    return upstream_error(status, shaped, retry_after, backend)
