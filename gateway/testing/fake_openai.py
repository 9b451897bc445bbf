"""A fake OpenAI server: the provider tollgate is tested and benchmarked against.

`FakeOpenAI` speaks the documented shapes of OpenAI's chat completions (plain, streamed and tool-calling),
embeddings and models endpoints, answers deterministically (so tests can assert exact text and token counts) and
can inject the failures a gateway must survive: error statuses with `Retry-After`, hangs, connection resets and
streams that stall mid-way. It records every request and counts streams the client abandoned.

It deliberately shares no code with the gateway, so a gateway bug cannot hide behind the same bug in its double.

Run it standalone for benchmarks::

    python -m gateway.testing.fake_openai --host 127.0.0.1 --port 9000 --chunks 20

which prints ``listening <base_url>`` once it accepts connections and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import hashlib
import itertools
import json
import math
import signal
import sys
import time
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Self

import orjson
from aiohttp import web

__all__ = ["FakeOpenAI", "Fault", "RecordedRequest", "main"]

# Every answer is this sentence completed with the last user message, cut or cycled to the wanted length.
_REPLY_PREFIX = "This is a reply from the fake OpenAI server to: "
_PREFIX_WORDS = tuple(_REPLY_PREFIX.split())
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_SSE_DONE = b"data: [DONE]\n\n"
_NULL = b"null"
_EMPTY_DELTA = b"{}"
_TEXT_OPENING = b'{"role":"assistant","content":""}'
_MAX_N = 128
_DEFAULT_DIMENSIONS = 8
_MAX_DIMENSIONS = 8192
_TOOL_ARGUMENT_PIECES = 4
_MODEL_CREATED = 1700000000
_UNPARSEABLE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library "
    "correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
)
# Large embedding batches must fit; aiohttp's 1 MiB default would turn them into 413s the real API never sends.
_CLIENT_MAX_SIZE = 64 * 1024 * 1024
# Benchmarks open many connections at once; the default backlog of 128 would drop some of them.
_BACKLOG = 4096
# How long stop() lets in-flight requests finish before cancelling them (aiohttp waits up to twice this); a
# stalled stream never would finish on its own.
_SHUTDOWN_GRACE = 0.25


@dataclass
class Fault:
    """One injected failure, consumed by the next matching request."""

    status: int = 0  # >0: answer with this HTTP status and an OpenAI error body
    error_type: str = "server_error"
    message: str = "injected fault"
    retry_after: str | None = None  # sets the Retry-After header
    hang: float = 0.0  # >0: sleep this many seconds before answering (to trigger client timeouts)
    reset: bool = False  # close the connection without an answer
    stall_after_chunks: int = -1  # >=0 (streams only): send that many chunks, then sleep forever (idle stall)
    path: str = "/v1/chat/completions"  # which endpoint the fault applies to
    code: str | None = None  # the error body's `code`, for status faults


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake server received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    json: Any  # the parsed body, or None when there was none or it was not JSON


class _BadRequest(Exception):
    """A request the real API would reject with 400 `invalid_request_error`."""

    def __init__(self, message: str, param: str | None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True, slots=True)
class _Reply:
    """What each choice of one chat completion says, in both its streamed and its whole form."""

    opening_delta: bytes  # JSON of the first streamed delta (role, and the tool call's header)
    step_deltas: tuple[bytes, ...]  # JSON of each following delta: one content piece or argument piece
    message: dict[str, Any]  # the non-streaming `message`; shared between responses, never mutated
    finish_reason: str
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class _Chat:
    """A validated chat completion request and everything needed to answer it."""

    completion_id: str
    created: int
    model: str
    n: int
    reply: _Reply
    usage: dict[str, Any]
    stream: bool
    include_usage: bool


class _Embedding(NamedTuple):
    floats: list[float]
    b64: str


_Endpoint = Callable[[web.Request, Any, int], Awaitable[web.StreamResponse]]


class FakeOpenAI:
    """An in-process HTTP server that answers like OpenAI's API; see the module docstring.

    The knobs (`chunks`, `chunk_delay`, `latency`, `model_ids`, `api_key`) are plain attributes read on every
    request, so a test may change them while the server runs.
    """

    def __init__(
        self,
        *,
        chunks: int = 20,
        chunk_delay: float = 0.0,
        latency: float = 0.0,
        model_ids: Sequence[str] = ("gpt-4o-mini", "text-embedding-3-small"),
        api_key: str | None = None,
        record_requests: bool = True,
    ) -> None:
        if chunks < 0 or chunk_delay < 0 or latency < 0:
            raise ValueError("chunks, chunk_delay and latency must not be negative")
        self.chunks = chunks
        self.chunk_delay = chunk_delay
        self.latency = latency
        self.model_ids = tuple(model_ids)
        self.api_key = api_key
        # A benchmark serves millions of requests; it turns recording off so memory stays flat.
        self.record_requests = record_requests
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.disconnects = 0
        self.completed_streams = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._routes: dict[tuple[str, str], _Endpoint] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): self._models,
        }

    # ------------------------------------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on `host`:`port` (0 picks a free port) and return the base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        if self._runner is not None:
            raise RuntimeError("FakeOpenAI is already running")
        app = web.Application(client_max_size=_CLIENT_MAX_SIZE)
        # One catch-all route: dispatch is a dict lookup, and unknown paths still get an OpenAI-shaped 404.
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # handler_cancellation: a client that goes away cancels its handler, which is how a stalled stream
        # (which never writes again) notices the disconnect.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_GRACE)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, backlog=_BACKLOG).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        url_host = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{url_host}:{bound_port}/v1"
        return self.base_url

    async def stop(self) -> None:
        """Stop listening and cancel whatever is still in flight after a short grace period."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        """Start on a free port of 127.0.0.1."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop the server."""
        await self.stop()

    def add_fault(self, fault: Fault) -> None:
        """Queue `fault` for the next request to `fault.path` (faults are consumed first in, first out)."""
        self.faults.append(fault)

    # ------------------------------------------------------------------------------------------------ dispatch

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await _read_json(request)
        if self.record_requests:
            headers = {name.lower(): value for name, value in request.headers.items()}
            self.requests.append(RecordedRequest(request.method, request.path, headers, body))
        stall = -1
        fault = self._pop_fault(request.path) if self.faults else None
        if fault is not None:
            early = await _apply_fault(request, fault)
            if early is not None:
                return early
            stall = fault.stall_after_chunks
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error_response(401, "Incorrect API key provided.", code="invalid_api_key")
        endpoint = self._routes.get((request.method, request.path))
        if endpoint is None:
            return self._fallback(request)
        try:
            return await endpoint(request, body, stall)
        except _BadRequest as exc:
            return _error_response(400, exc.message, param=exc.param, code=exc.code)

    def _pop_fault(self, path: str) -> Fault | None:
        for index, fault in enumerate(self.faults):
            if fault.path == path:
                return self.faults.pop(index)
        return None

    def _fallback(self, request: web.Request) -> web.Response:
        prefix = "/v1/models/"
        if request.method == "GET" and request.path.startswith(prefix):
            return self._model(request.path[len(prefix) :])
        return _error_response(404, f"Invalid URL ({request.method} {request.path})", code="unknown_url")

    # ------------------------------------------------------------------------------------------------ models

    async def _models(self, request: web.Request, body: Any, stall: int) -> web.StreamResponse:
        return _json_response({"object": "list", "data": [_model_object(model) for model in self.model_ids]})

    def _model(self, model: str) -> web.Response:
        if model in self.model_ids:
            return _json_response(_model_object(model))
        message = f"The model '{model}' does not exist or you do not have access to it."
        return _error_response(404, message, param="model", code="model_not_found")

    # ------------------------------------------------------------------------------------------------ chat

    async def _chat(self, request: web.Request, body: Any, stall: int) -> web.StreamResponse:
        chat = self._parse_chat(body)
        if chat.stream:
            return await self._stream(request, chat, stall)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        return _json_response(_completion_object(chat))

    def _parse_chat(self, body: Any) -> _Chat:
        if not isinstance(body, dict):
            raise _BadRequest(_UNPARSEABLE, None)
        model = body.get("model")
        if not isinstance(model, str):
            raise _BadRequest("Missing required parameter: 'model'.", "model", "missing_required_parameter")
        messages = _messages(body)
        n = _positive_int(body, "n", 1, _MAX_N)
        serial = next(self._ids)
        reply = self._reply(body, _last_user_text(messages), f"call_fake_{serial}")
        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
        prompt_tokens = _prompt_tokens(messages)
        # Like OpenAI, every choice's tokens count towards completion_tokens.
        completion_tokens = reply.completion_tokens * n
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        return _Chat(f"chatcmpl-fake-{serial}", int(time.time()), model, n, reply, usage, stream, include_usage)

    def _reply(self, body: dict[str, Any], user_text: str, call_id: str) -> _Reply:
        tool = _tool_name(body)
        if tool is not None:
            return _tool_reply(user_text, tool, call_id)
        limit = _token_limit(body)
        if limit is not None and limit < self.chunks:
            return _text_reply(user_text, limit, "length")
        return _text_reply(user_text, self.chunks, "stop")

    async def _stream(self, request: web.Request, chat: _Chat, stall: int) -> web.StreamResponse:
        response = web.StreamResponse(headers=_SSE_HEADERS)
        try:
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            await response.prepare(request)
            await self._write_events(response, chat, stall)
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client goes away while we wait (latency, delay, stall).
            self.disconnects += 1
            raise
        except ConnectionResetError:
            # aiohttp's ClientConnectionResetError: the client went away between two of our writes.
            self.disconnects += 1
        return response

    async def _write_events(self, response: web.StreamResponse, chat: _Chat, stall: int) -> None:
        frame = _ChunkFramer(chat)
        reply = chat.reply
        n = chat.n
        await _write_choices(response, frame, n, reply.opening_delta, _NULL)
        delay = self.chunk_delay
        for index, delta in enumerate(reply.step_deltas):
            if index == stall:
                await _forever()
            if delay > 0:
                await asyncio.sleep(delay)
            await _write_choices(response, frame, n, delta, _NULL)
        if stall >= len(reply.step_deltas):
            await _forever()
        await _write_choices(response, frame, n, _EMPTY_DELTA, orjson.dumps(reply.finish_reason))
        if chat.include_usage:
            await response.write(frame.usage(chat.usage))
        await response.write(_SSE_DONE)
        self.completed_streams += 1

    # ------------------------------------------------------------------------------------------------ embeddings

    async def _embeddings(self, request: web.Request, body: Any, stall: int) -> web.StreamResponse:
        if not isinstance(body, dict):
            raise _BadRequest(_UNPARSEABLE, None)
        model = body.get("model")
        if not isinstance(model, str):
            raise _BadRequest("Missing required parameter: 'model'.", "model", "missing_required_parameter")
        items = _embedding_items(body.get("input"))
        dimensions = _positive_int(body, "dimensions", _DEFAULT_DIMENSIONS, _MAX_DIMENSIONS)
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise _BadRequest(f"Invalid value for 'encoding_format': {encoding!r}.", "encoding_format")
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        data = []
        for index, (text, _) in enumerate(items):
            vector = _embedding(text, dimensions)
            data.append(
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": vector.b64 if encoding == "base64" else vector.floats,
                }
            )
        tokens = sum(count for _, count in items)
        return _json_response(
            {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        )


# ---------------------------------------------------------------------------------------------------- responses


def _json_response(payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json")


def _error_response(
    status: int,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return _json_response(body, status, headers)


async def _apply_fault(request: web.Request, fault: Fault) -> web.StreamResponse | None:
    """Hang, reset or fail as `fault` says; None lets the request carry on normally."""
    if fault.hang > 0:
        await asyncio.sleep(fault.hang)
    if fault.reset:
        transport = request.transport
        if transport is not None:
            transport.close()
        # aiohttp fails to write this to the closed transport, takes it for a client disconnect and sends nothing.
        return web.Response()
    if fault.status > 0:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        return _error_response(
            fault.status, fault.message, error_type=fault.error_type, code=fault.code, headers=headers
        )
    return None


async def _read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _model_object(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": _MODEL_CREATED, "owned_by": "fake"}


def _completion_object(chat: _Chat) -> dict[str, Any]:
    reply = chat.reply
    choices = [
        {"index": index, "message": reply.message, "logprobs": None, "finish_reason": reply.finish_reason}
        for index in range(chat.n)
    ]
    return {
        "id": chat.completion_id,
        "object": "chat.completion",
        "created": chat.created,
        "model": chat.model,
        "choices": choices,
        "usage": chat.usage,
        "system_fingerprint": "fp_fake",
    }


class _ChunkFramer:
    """Builds ``data: <chat.completion.chunk>\\n\\n`` events for one stream.

    The fields every chunk shares are serialised once per stream and each event is spliced from bytes, so the hot
    path never re-serialises a whole chunk object.
    """

    __slots__ = ("_head", "_tail")

    def __init__(self, chat: _Chat) -> None:
        self._head = b"".join(
            (
                b'data: {"id":',
                orjson.dumps(chat.completion_id),
                b',"object":"chat.completion.chunk","created":',
                str(chat.created).encode(),
                b',"model":',
                orjson.dumps(chat.model),
                b',"system_fingerprint":"fp_fake","choices":',
            )
        )
        # With include_usage, OpenAI puts "usage": null on every chunk before the usage chunk.
        self._tail = b',"usage":null}\n\n' if chat.include_usage else b"}\n\n"

    def choice(self, index: int, delta: bytes, finish_reason: bytes) -> bytes:
        """An event carrying one choice's `delta` (JSON) and `finish_reason` (JSON)."""
        return b"".join(
            (
                self._head,
                b'[{"index":',
                str(index).encode(),
                b',"delta":',
                delta,
                b',"logprobs":null,"finish_reason":',
                finish_reason,
                b"}]",
                self._tail,
            )
        )

    def usage(self, usage: dict[str, Any]) -> bytes:
        """The closing usage event: no choices, just the token counts."""
        return b"".join((self._head, b'[],"usage":', orjson.dumps(usage), b"}\n\n"))


async def _write_choices(
    response: web.StreamResponse, frame: _ChunkFramer, n: int, delta: bytes, finish_reason: bytes
) -> None:
    # Like OpenAI with n > 1, each event carries a single choice; choices take turns.
    for index in range(n):
        await response.write(frame.choice(index, delta, finish_reason))


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()


# ---------------------------------------------------------------------------------------------------- chat input


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if messages is None:
        raise _BadRequest("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not all(isinstance(message, dict) for message in messages):
        raise _BadRequest("Invalid type for 'messages': expected an array of objects.", "messages", "invalid_type")
    if not messages:
        message = "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array."
        raise _BadRequest(message, "messages", "empty_array")
    return messages


def _positive_int(body: dict[str, Any], name: str, default: int, maximum: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        bounds = "a positive integer" if maximum == sys.maxsize else f"an integer between 1 and {maximum}"
        raise _BadRequest(f"Invalid '{name}': expected {bounds}.", name)
    return value


def _token_limit(body: dict[str, Any]) -> int | None:
    """The smaller of `max_completion_tokens` and the legacy `max_tokens`, if either is set."""
    limits = [_positive_int(body, name, sys.maxsize, sys.maxsize) for name in ("max_completion_tokens", "max_tokens")]
    limit = min(limits)
    return None if limit == sys.maxsize else limit


def _tool_name(body: dict[str, Any]) -> str | None:
    """The function to call, or None for a text answer (no tools, or tool_choice "none")."""
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise _BadRequest("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    # A named tool_choice picks its function, as the real API does; otherwise the first tool is called.
    if isinstance(choice, dict):
        named = _function_name(choice)
        if named is not None:
            return named
    name = _function_name(tools[0]) if isinstance(tools[0], dict) else None
    if name is None:
        raise _BadRequest("Missing required parameter: 'tools[0].function.name'.", "tools[0].function.name")
    return name


def _function_name(holder: dict[str, Any]) -> str | None:
    function = holder.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else None


def _content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a content array joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    # A stand-in for a tokenizer: one token per word, plus the 3 tokens OpenAI's chat format spends per message.
    return sum(len(_content_text(message.get("content")).split()) + 3 for message in messages)


@functools.lru_cache(maxsize=4096)
def _text_reply(user_text: str, count: int, finish_reason: str) -> _Reply:
    """`count` pieces of one word and a space each, cycling through the prefix and the user's words."""
    words = _PREFIX_WORDS + tuple(user_text.split())
    pieces = [words[index % len(words)] + " " for index in range(count)]
    return _Reply(
        opening_delta=_TEXT_OPENING,
        step_deltas=tuple(b'{"content":' + orjson.dumps(piece) + b"}" for piece in pieces),
        message={"role": "assistant", "content": "".join(pieces), "refusal": None, "annotations": []},
        finish_reason=finish_reason,
        completion_tokens=count,
    )


@functools.lru_cache(maxsize=4096)
def _tool_arguments(user_text: str) -> tuple[str, tuple[bytes, ...]]:
    """The call's arguments JSON text, and the stream deltas that deliver it in about four pieces."""
    arguments = json.dumps({"echo": user_text}, ensure_ascii=False)
    size = -(-len(arguments) // _TOOL_ARGUMENT_PIECES)
    pieces = [arguments[start : start + size] for start in range(0, len(arguments), size)]
    deltas = tuple(
        b'{"tool_calls":[{"index":0,"function":{"arguments":' + orjson.dumps(piece) + b"}}]}" for piece in pieces
    )
    return arguments, deltas


def _tool_reply(user_text: str, name: str, call_id: str) -> _Reply:
    arguments, deltas = _tool_arguments(user_text)
    header = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    return _Reply(
        opening_delta=orjson.dumps({"role": "assistant", "content": None, "tool_calls": [header]}),
        step_deltas=deltas,
        message={"role": "assistant", "content": None, "refusal": None, "annotations": [], "tool_calls": [call]},
        finish_reason="tool_calls",
        completion_tokens=len(deltas),
    )


# ---------------------------------------------------------------------------------------------------- embeddings


_INVALID_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."


def _embedding_items(value: Any) -> list[tuple[str, int]]:
    """(text to hash, token count) for each input item: a string, strings, one token array or token arrays."""
    if isinstance(value, str):
        return [_text_item(value)]
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return [_text_item(item) for item in value]
        if all(_is_token(item) for item in value):
            return [_tokens_item(value)]
        if all(isinstance(item, list) and item and all(_is_token(token) for token in item) for item in value):
            return [_tokens_item(item) for item in value]
    raise _BadRequest(_INVALID_INPUT, "input")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text_item(text: str) -> tuple[str, int]:
    if not text:
        raise _BadRequest(_INVALID_INPUT, "input")
    return text, len(text.split())


def _tokens_item(tokens: list[int]) -> tuple[str, int]:
    return " ".join(map(str, tokens)), len(tokens)


@functools.lru_cache(maxsize=8192)
def _embedding(text: str, dimensions: int) -> _Embedding:
    """A unit vector derived from sha256 of `text`, as floats and as OpenAI's base64 of little-endian float32."""
    seed = text.encode("utf-8", "surrogatepass")
    blocks = range(-(-dimensions // 32))
    raw = b"".join(hashlib.sha256(seed + block.to_bytes(4, "little")).digest() for block in blocks)
    # byte / 127.5 - 1 is never 0, so the norm is never 0 either.
    values = [byte / 127.5 - 1.0 for byte in raw[:dimensions]]
    norm = math.sqrt(sum(value * value for value in values))
    vector = array("f", (value / norm for value in values))
    # Floats rounded through float32, so they equal what the base64 form decodes to.
    floats = vector.tolist()
    if sys.byteorder != "little":
        vector.byteswap()
    return _Embedding(floats, base64.b64encode(vector.tobytes()).decode("ascii"))


# ---------------------------------------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gateway.testing.fake_openai", description="A fake OpenAI server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per streamed answer")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before the first byte")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer <key>'")
    parser.add_argument("--record", action="store_true", help="keep every request in memory (off for benchmarks)")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    server = FakeOpenAI(
        chunks=args.chunks,
        chunk_delay=args.chunk_delay,
        latency=args.latency,
        api_key=args.api_key,
        record_requests=args.record,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    base_url = await server.start(args.host, args.port)
    # The benchmark waits for exactly this line before it sends traffic.
    sys.stdout.write(f"listening {base_url}\n")
    sys.stdout.flush()
    try:
        await stopping.wait()
    finally:
        await server.stop()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, absent on some platforms
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fake server from the command line until SIGTERM or SIGINT."""
    args = _parse_args(argv)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(args))


if __name__ == "__main__":
    main()
