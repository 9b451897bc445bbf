"""A fake OpenAI server: the provider tollgate is tested and benchmarked against.

`FakeOpenAI` speaks the documented shapes of OpenAI's chat completions (plain, streamed and tool-calling), Responses
API (`/v1/responses`, whole and streamed), embeddings and models endpoints, and of legacy completions, images, audio
transcriptions and speech, moderations and vLLM's rerank (`gateway.testing.endpoint_replies`), answers
deterministically (so tests can assert exact text and token counts) and can inject the failures a gateway must
survive: error statuses with `Retry-After`, hangs, connection resets and streams that stall mid-way. It records every
request and counts streams the client abandoned.

It deliberately shares no code with the gateway, so a gateway bug cannot hide behind the same bug in its double.

Run it standalone for benchmarks::

    python -m gateway.testing.fake_openai --host 127.0.0.1 --port 9000 --chunks 20

which prints ``listening <base_url>`` once it accepts connections and runs until SIGTERM or SIGINT; with
``--cut reset|stall|error|malformed`` every stream breaks after ``--cut-after`` chunks (for `make chaos`).

Like vLLM, it continues the last assistant message when a request sets ``continue_final_message`` (with
``add_generation_prompt: false``), and like Mistral and DeepSeek when that message has ``"prefix": true``: the
answer is then the rest of what it would have said after that beginning.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from gateway.testing import endpoint_replies as replies
from gateway.testing.loopback import LoopbackServer, serve_until_stopped
from gateway.testing.openai_replies import (
    DEFAULT_DIMENSIONS,
    MAX_DIMENSIONS,
    UNPARSEABLE,
    WORD_DIMENSIONS,
    BadRequest,
    Chat,
    embedding,
    embedding_items,
    parse_chat,
    positive_int,
    word_embedding,
)
from gateway.testing.responses_replies import ResponsesReply, parse_responses

__all__ = ["FakeOpenAI", "Fault", "RecordedRequest", "main"]

_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_SSE_DONE = b"data: [DONE]\n\n"
_NULL = b"null"
_EMPTY_DELTA = b"{}"
_MODEL_CREATED = 1700000000


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
    # >=0 (streams only): send that many chunks, then break the stream `fail_with`: "reset" (close the connection),
    # "error" (an in-band error event, as OpenAI and vLLM send) or "malformed" (an event that is not JSON).
    fail_after_chunks: int = -1
    fail_with: str = "reset"
    path: str = "/v1/chat/completions"  # which endpoint the fault applies to
    code: str | None = None  # the error body's `code`, for status faults
    times: int = 1  # how many requests it applies to before it is used up (a brown-out or an outage spans many)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake server received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    json: Any  # the parsed body, or None when there was none or it was not JSON


_Endpoint = Callable[[web.Request, Any, "_Cut"], Awaitable[web.StreamResponse]]


class FakeOpenAI(LoopbackServer):
    """An in-process HTTP server that answers like OpenAI's API (`base_url` ends in `/v1`); see the module docstring.

    The knobs (`chunks`, `chunk_delay`, `latency`, `model_ids`, `api_key`) are plain attributes read on every
    request, so a test may change them while the server runs.
    """

    URL_PATH = "/v1"

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
        super().__init__()
        self.chunks = chunks
        self.chunk_delay = chunk_delay
        self.latency = latency
        self.model_ids = tuple(model_ids)
        self.api_key = api_key
        # A benchmark serves millions of requests; it turns recording off so memory stays flat.
        self.record_requests = record_requests
        # False: embeddings are hashes of the whole text (unrelated for any two texts); True: of its words, so that
        # texts worded alike are close (for testing similarity search).
        self.word_embeddings = False
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.disconnects = 0
        self.completed_streams = 0
        self._ids = itertools.count(1)
        self._routes: dict[tuple[str, str], _Endpoint] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/completions"): self._completions,
            ("POST", "/v1/images/generations"): self._images,
            ("POST", "/v1/audio/transcriptions"): self._transcriptions,
            ("POST", "/v1/audio/speech"): self._speech,
            ("POST", "/v1/moderations"): self._moderations,
            ("POST", "/v1/rerank"): self._rerank,
            ("POST", "/rerank"): self._rerank,  # vLLM serves it without the prefix too
            ("POST", "/v1/responses"): self._responses,
            # Azure's v1 API serves the Responses API here (the server's root as an Azure endpoint).
            ("POST", "/openai/v1/responses"): self._responses,
        }

    def add_fault(self, fault: Fault) -> None:
        """Queue `fault` for the next request to `fault.path` (faults are consumed first in, first out)."""
        self.faults.append(fault)

    # ------------------------------------------------------------------------------------------------ dispatch

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await (_read_form(request) if request.content_type == "multipart/form-data" else _read_json(request))
        if self.record_requests:
            headers = {name.lower(): value for name, value in request.headers.items()}
            self.requests.append(RecordedRequest(request.method, request.path, headers, body))
        cut = _NO_CUT
        fault = self._pop_fault(request.path) if self.faults else None
        if fault is not None:
            early = await _apply_fault(request, fault)
            if early is not None:
                return early
            cut = _cut_of(fault)
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error_response(401, "Incorrect API key provided.", code="invalid_api_key")
        endpoint = self._routes.get((request.method, request.path))
        if endpoint is None:
            return self._fallback(request)
        try:
            return await endpoint(request, body, cut)
        except BadRequest as exc:
            return _error_response(400, exc.message, param=exc.param, code=exc.code)

    def _pop_fault(self, path: str) -> Fault | None:
        for index, fault in enumerate(self.faults):
            if fault.path == path:
                fault.times -= 1
                return self.faults.pop(index) if fault.times <= 0 else fault
        return None

    def _fallback(self, request: web.Request) -> web.Response:
        prefix = "/v1/models/"
        if request.method == "GET" and request.path.startswith(prefix):
            return self._model(request.path[len(prefix) :])
        return _error_response(404, f"Invalid URL ({request.method} {request.path})", code="unknown_url")

    # ------------------------------------------------------------------------------------------------ models

    async def _models(self, request: web.Request, body: Any, cut: _Cut) -> web.StreamResponse:
        return _json_response({"object": "list", "data": [_model_object(model) for model in self.model_ids]})

    def _model(self, model: str) -> web.Response:
        if model in self.model_ids:
            return _json_response(_model_object(model))
        message = f"The model '{model}' does not exist or you do not have access to it."
        return _error_response(404, message, param="model", code="model_not_found")

    # ------------------------------------------------------------------------------------------------ chat

    async def _chat(self, request: web.Request, body: Any, cut: _Cut) -> web.StreamResponse:
        chat = parse_chat(body, self._ids, self.chunks)
        if chat.stream:
            return await self._stream(request, chat, cut)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        return _json_response(_completion_object(chat))

    async def _stream(self, request: web.Request, chat: Chat, cut: _Cut) -> web.StreamResponse:
        return await self._sse(request, cut, lambda response: self._write_events(response, chat, cut), self.latency)

    async def _sse(
        self,
        request: web.Request,
        cut: _Cut,
        write: Callable[[web.StreamResponse], Awaitable[bool]],
        delay: float = 0.0,
    ) -> web.StreamResponse:
        """A server-sent event stream after `delay`: `write` writes its events and says whether `cut` stopped them
        (the stream is then broken as `cut` says); a client that goes away is counted."""
        response = web.StreamResponse(headers=_SSE_HEADERS)
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            await response.prepare(request)
            if await write(response):
                await _break(request, response, cut.how)
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client goes away while we wait (latency, delay, stall).
            self.disconnects += 1
            raise
        except ConnectionResetError:
            # aiohttp's ClientConnectionResetError: the client went away between two of our writes.
            self.disconnects += 1
        return response

    async def _write_events(self, response: web.StreamResponse, chat: Chat, cut: _Cut) -> bool:
        """Write the stream's events; True when `cut` stopped it after its chunks (the caller breaks it)."""
        frame = _ChunkFramer(chat)
        reply = chat.reply
        n = chat.n
        await _write_choices(response, frame, n, reply.opening_delta, _NULL)
        delay = self.chunk_delay
        for index, delta in enumerate(reply.step_deltas):
            if index == cut.after:
                return True
            if delay > 0:
                await asyncio.sleep(delay)
            await _write_choices(response, frame, n, delta, _NULL)
        if cut.after >= len(reply.step_deltas):
            return True
        await _write_choices(response, frame, n, _EMPTY_DELTA, orjson.dumps(reply.finish_reason))
        if chat.include_usage:
            await response.write(frame.usage(chat.usage))
        await response.write(_SSE_DONE)
        self.completed_streams += 1
        return False

    # ------------------------------------------------------------------------------------------------ responses

    async def _responses(self, request: web.Request, body: Any, cut: _Cut) -> web.StreamResponse:
        reply = parse_responses(body, next(self._ids), self.chunks)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if not reply.stream:
            return _json_response(reply.response)
        return await self._sse(request, cut, lambda response: self._write_response_events(response, reply, cut))

    async def _write_response_events(self, response: web.StreamResponse, reply: ResponsesReply, cut: _Cut) -> bool:
        """Write the events (`event:` then `data:`, as OpenAI frames them); True when `cut` stopped them after that
        many deltas (the caller breaks the stream)."""
        deltas = 0
        for event in reply.events:
            if event["type"].endswith(".delta"):
                if deltas == cut.after:
                    return True
                deltas += 1
                if self.chunk_delay > 0:
                    await asyncio.sleep(self.chunk_delay)
            await response.write(b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n")
        self.completed_streams += 1
        return False

    # ------------------------------------------------------------------------------------------------ embeddings

    async def _embeddings(self, request: web.Request, body: Any, cut: _Cut) -> web.StreamResponse:
        if not isinstance(body, dict):
            raise BadRequest(UNPARSEABLE, None)
        model = body.get("model")
        if not isinstance(model, str):
            raise BadRequest("Missing required parameter: 'model'.", "model", "missing_required_parameter")
        items = embedding_items(body.get("input"))
        default = WORD_DIMENSIONS if self.word_embeddings else DEFAULT_DIMENSIONS
        dimensions = positive_int(body, "dimensions", default, MAX_DIMENSIONS)
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise BadRequest(f"Invalid value for 'encoding_format': {encoding!r}.", "encoding_format")
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        data = []
        for index, (text, _) in enumerate(items):
            vector = (word_embedding if self.word_embeddings else embedding)(text, dimensions)
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

    # ------------------------------------------------------------------------------- completions, images, audio…

    async def _completions(self, request: web.Request, body: Any, cut: _Cut) -> web.StreamResponse:
        completion = replies.parse_text_completion(body, self._ids, self.chunks)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if not completion.stream:
            return _json_response(replies.text_completion_object(completion))
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        try:
            steps = max(len(pieces) for pieces, _, _ in completion.choices)
            for step in range(steps):
                if step == cut.after:
                    await _break(request, response, cut.how)
                    return response
                if self.chunk_delay > 0:
                    await asyncio.sleep(self.chunk_delay)
                for index, (pieces, _, echoed) in enumerate(completion.choices):
                    if step < len(pieces):
                        text = (echoed if step == 0 else "") + pieces[step]
                        logprobs = replies.text_logprobs([pieces[step]], completion.logprobs or 0)
                        chunk = replies.text_chunk(
                            completion, index, text, None, logprobs if completion.logprobs is not None else None
                        )
                        await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            for index, (_, finish, _) in enumerate(completion.choices):
                chunk = replies.text_chunk(completion, index, "", finish, None)
                await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if completion.include_usage:
                usage = {**replies.text_chunk(completion, 0, "", None, None), "choices": [], "usage": completion.usage}
                await response.write(b"data: " + orjson.dumps(usage) + b"\n\n")
            await response.write(_SSE_DONE)
            self.completed_streams += 1
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnects += 1
            raise
        return response

    async def _images(self, request: web.Request, body: Any, cut: _Cut) -> web.StreamResponse:
        return _json_response(replies.images_object(body, next(self._ids)))

    async def _transcriptions(self, request: web.Request, body: Any, cut: _Cut) -> web.StreamResponse:
        payload, content_type = replies.transcription_answer(body)
        return web.Response(body=payload, headers={"Content-Type": content_type})

    async def _speech(self, request: web.Request, body: Any, cut: _Cut) -> web.StreamResponse:
        audio, content_type = replies.speech_audio(body)
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        piece = max(1, len(audio) // 8)
        try:
            for index, start in enumerate(range(0, len(audio), piece)):
                if index == cut.after:
                    await _break(request, response, cut.how)
                    return response
                if self.chunk_delay > 0:
                    await asyncio.sleep(self.chunk_delay)
                await response.write(audio[start : start + piece])
            await response.write_eof()
            self.completed_streams += 1
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnects += 1
            raise
        return response

    async def _moderations(self, request: web.Request, body: Any, cut: _Cut) -> web.StreamResponse:
        return _json_response(replies.moderation_object(body, next(self._ids)))

    async def _rerank(self, request: web.Request, body: Any, cut: _Cut) -> web.StreamResponse:
        return _json_response(replies.rerank_object(body, next(self._ids)))


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


@dataclass(frozen=True, slots=True)
class _Cut:
    """Where a stream is cut (after that many chunks; -1: never) and how: stall, reset, error or malformed."""

    after: int = -1
    how: str = "stall"


_NO_CUT = _Cut()
_IN_BAND_ERROR = (
    b'data: {"error": {"message": "injected fault", "type": "server_error", "param": null, "code": null}}\n\n'
)


def _cut_of(fault: Fault) -> _Cut:
    if fault.stall_after_chunks >= 0:
        return _Cut(fault.stall_after_chunks, "stall")
    if fault.fail_after_chunks >= 0:
        return _Cut(fault.fail_after_chunks, fault.fail_with)
    return _NO_CUT


async def _break(request: web.Request, response: web.StreamResponse, how: str) -> None:
    """Break a stream that has sent its chunks: stall for ever, reset, or end it with a bad event."""
    if how == "stall":
        await _forever()
    elif how == "reset":
        if request.transport is not None:
            request.transport.close()
    else:
        await response.write(_IN_BAND_ERROR if how == "error" else b"data: {not json\n\n")


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


async def _read_form(request: web.Request) -> dict[str, Any]:
    """A multipart upload's fields (repeated ones as lists), its files as their name, size and content type."""
    out: dict[str, Any] = {}
    for name, value in (await request.post()).items():
        if isinstance(value, web.FileField):
            item: Any = {"filename": value.filename, "size": len(value.file.read()), "content_type": value.content_type}
        else:
            item = value
        if name in out:
            out[name] = [*(out[name] if isinstance(out[name], list) else [out[name]]), item]
        else:
            out[name] = item
    return out


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


def _completion_object(chat: Chat) -> dict[str, Any]:
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

    def __init__(self, chat: Chat) -> None:
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
    parser.add_argument(
        "--cut",
        choices=("reset", "stall", "error", "malformed"),
        default=None,
        help="break every stream after --cut-after chunks: a reset, a stall, an error event or a malformed event",
    )
    parser.add_argument("--cut-after", type=int, default=3, help="chunks a stream sends before --cut breaks it")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    server = FakeOpenAI(
        chunks=args.chunks,
        chunk_delay=args.chunk_delay,
        latency=args.latency,
        api_key=args.api_key,
        record_requests=args.record,
    )
    if args.cut is not None:  # every stream, for as long as the server runs
        fault = (
            Fault(stall_after_chunks=args.cut_after) if args.cut == "stall" else Fault(fail_after_chunks=args.cut_after)
        )
        fault.fail_with, fault.times = args.cut, sys.maxsize
        server.add_fault(fault)
    await serve_until_stopped(server, args.host, args.port)


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
