"""The `mock` provider: a built-in demo backend that answers by itself, with realistic chunks, usage and timing.

It is what `make run` serves with no API key, clearly labelled as a demo, and a backend that costs nothing for load
tests. Options: `chunks` (content chunks per answer), `first_token_delay` and `chunk_delay` (durations), `text`.

So that the features a client uses can be tried against it, it answers in the shape the request asks for:
- **tools**: it calls a tool when `tool_choice` is `required` (the first tool) or names a function (that one), and
  under `auto` (or no `tool_choice`) when the last message is the user's and names one of the tools (the first
  named); the arguments are a minimal instance of the tool's `parameters` schema, streamed in two pieces, and the
  choice ends with `tool_calls`. After a tool's result (the last message a `tool` one) it answers in text.
- **response_format**: `json_object` gives `{"answer": <the canned text>}`; `json_schema` a minimal instance of the
  schema (gateway.providers.schema_instance).
- **count_tokens**: the same estimate as its usage, about four characters a token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import struct
import time
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import Any

import orjson

from gateway.config import BackendConfig, ConfigError, parse_duration
from gateway.providers.base import collect, with_prefix
from gateway.providers.schema_instance import instance
from tollgate.gateway.v1 import gateway_pb2 as pb

DEFAULT_TEXT = "This is tollgate's demo backend: no model was called. Configure a real backend to get real answers."


def _option(options: Mapping[str, Any], key: str, path: str, default: float) -> float:
    return parse_duration(options[key], f"{path}.{key}") if key in options else default


class MockProvider:
    """Streams a canned answer: the same words for every request, split into `chunks` pieces."""

    def __init__(self, backend: BackendConfig, path: str = "backend") -> None:
        self.backend = backend
        opts = dict(backend.options)
        unknown = sorted(set(opts) - {"chunks", "chunk_delay", "first_token_delay", "text"})
        if unknown:
            raise ConfigError(f"{path}.options.{unknown[0]}: unknown option for the mock provider")
        words = str(opts.get("text", DEFAULT_TEXT)).split() or ["demo"]
        chunks = opts.get("chunks", len(words))
        if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
            raise ConfigError(f"{path}.options.chunks: expected a positive whole number, got {chunks!r}")
        self._first_delay = _option(opts, "first_token_delay", f"{path}.options", 0.0)
        self._chunk_delay = _option(opts, "chunk_delay", f"{path}.options", 0.0)
        self._pieces = [w + " " for w in itertools.islice(itertools.cycle(words), chunks)]
        self._pieces[-1] = self._pieces[-1].rstrip()
        self._ids = itertools.count(1)

    async def close(self) -> None:
        """Nothing to release."""

    async def count_tokens(self, model: str, params: pb.ChatCompletionParams) -> int:
        """An estimate of the request's input tokens: the same one as the usage of its answer."""
        return _prompt_tokens(params)

    def _answer(self, params: pb.ChatCompletionParams) -> tuple[list[pb.Delta], pb.FinishReason.ValueType, int]:
        """The deltas of one choice, how it finishes, and its completion tokens."""
        tool = _tool_to_call(params)
        if tool is not None:
            arguments = orjson.dumps(instance(_json(tool.function.parameters_json))).decode()
            half = len(arguments) // 2
            first = pb.ToolCallDelta(index=0, id=f"call_mock_{next(self._ids)}", type="function")
            first.function.name, first.function.arguments = tool.function.name, arguments[:half]
            rest = pb.ToolCallDelta(index=0, function=pb.FunctionCallDelta(arguments=arguments[half:]))
            deltas = [pb.Delta(tool_calls=[first]), pb.Delta(tool_calls=[rest])]
            return deltas, pb.FINISH_REASON_TOOL_CALLS, 1 + len(arguments) // 4
        text = _json_text(params.response_format, "".join(self._pieces))
        if text is not None:  # never cut short by max_tokens: half a JSON document is no use to try a client with
            pieces = [text[i : i + 16] for i in range(0, len(text), 16)]
            return [pb.Delta(content=p) for p in pieces], pb.FINISH_REASON_STOP, len(pieces)
        limit = params.max_completion_tokens or params.max_tokens or len(self._pieces)
        pieces = self._pieces[:limit]
        reason = pb.FINISH_REASON_LENGTH if len(pieces) < len(self._pieces) else pb.FINISH_REASON_STOP
        return [pb.Delta(content=p) for p in pieces], reason, len(pieces)

    def stream(
        self, model: str, params: pb.ChatCompletionParams
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """The answer as chunks (text, JSON or a tool call, see the module's doc), then a usage chunk."""
        deltas, reason, tokens = self._answer(params)
        return self._chunks(model, params, deltas, reason, tokens)

    def continue_stream(
        self, model: str, params: pb.ChatCompletionParams, prefix: str
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """The rest of the answer after `prefix` (all of it when `prefix` is not how it begins), like a provider's
        prefill: the prefix counts as input, and only the new pieces as output."""
        deltas, reason, _ = self._answer(params)
        rest = _after(deltas, prefix)
        return self._chunks(model, with_prefix(params, prefix), rest, reason, len(rest))

    async def _chunks(
        self,
        model: str,
        params: pb.ChatCompletionParams,
        deltas: list[pb.Delta],
        reason: pb.FinishReason.ValueType,
        tokens: int,
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        response_id, created, indexes = f"chatcmpl-mock-{next(self._ids)}", int(time.time()), range(params.n or 1)

        def chunk(
            deltas: Iterable[pb.ChunkChoice] = (), usage: pb.Usage | None = None
        ) -> pb.StreamChatCompletionResponse:
            return pb.StreamChatCompletionResponse(
                id=response_id, created=created, model=model, choices=deltas, usage=usage
            )

        if self._first_delay:
            await asyncio.sleep(self._first_delay)
        yield chunk(pb.ChunkChoice(index=i, delta=pb.Delta(role=pb.ROLE_ASSISTANT, content="")) for i in indexes)
        for delta in deltas:
            if self._chunk_delay:
                await asyncio.sleep(self._chunk_delay)
            yield chunk(pb.ChunkChoice(index=i, delta=delta) for i in indexes)
        yield chunk(pb.ChunkChoice(index=i, delta=pb.Delta(), finish_reason=reason) for i in indexes)
        prompt, completion = _prompt_tokens(params), tokens * len(indexes)
        yield chunk(
            usage=pb.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
        )

    async def complete(self, model: str, params: pb.ChatCompletionParams) -> pb.CreateChatCompletionResponse:
        """The same answer, folded."""
        return await collect(self.stream(model, params))

    async def embed(self, model: str, request: pb.CreateEmbeddingsRequest) -> pb.CreateEmbeddingsResponse:
        """A deterministic vector per input, derived from its text."""
        out = pb.CreateEmbeddingsResponse(model=model)
        texts = list(request.input) or [" ".join(map(str, t.ids)) for t in request.input_tokens]
        size = request.dimensions or 16
        for i, text in enumerate(texts):
            digest = hashlib.sha256(text.encode()).digest()
            values = [(b / 127.5) - 1.0 for b in itertools.islice(itertools.cycle(digest), size)]
            embedding = out.data.add(index=i)
            if request.encoding_format == "base64":
                embedding.base64 = base64.b64encode(struct.pack(f"<{size}f", *values)).decode()
            else:
                embedding.values.extend(values)
        tokens = sum(len(t.split()) for t in texts)
        out.usage.prompt_tokens = out.usage.total_tokens = tokens
        return out


def _prompt_tokens(params: pb.ChatCompletionParams) -> int:
    # About four characters a token, as tokenizers average on English text; tools and schemas are input too.
    chars = sum(len(m.content) + sum(len(p.text) for p in m.content_parts) for m in params.messages)
    chars += sum(
        len(t.function.name) + len(t.function.description) + len(t.function.parameters_json) for t in params.tools
    )
    chars += len(params.response_format.json_schema.schema_json)
    return max(1, chars // 4) + 3 * len(params.messages)


def _after(deltas: list[pb.Delta], prefix: str) -> list[pb.Delta]:
    """The text deltas that follow `prefix` (a delta it ends inside keeps its rest); all of them when the text does
    not begin with `prefix`."""
    if not "".join(d.content for d in deltas).startswith(prefix):
        return deltas
    rest: list[pb.Delta] = []
    seen = 0
    for delta in deltas:
        end = seen + len(delta.content)
        if end > len(prefix):
            rest.append(pb.Delta(content=delta.content[max(0, len(prefix) - seen) :]))
        seen = end
    return rest


def _tool_to_call(params: pb.ChatCompletionParams) -> pb.Tool | None:
    """The tool the mock calls, by the rule in the module's doc; None to answer in text."""
    tools = [t for t in params.tools if t.function.name]
    choice = params.tool_choice.WhichOneof("choice")
    mode = params.tool_choice.mode if choice == "mode" else ""
    if not tools or mode == "none":
        return None
    if choice == "function_name":
        return next((t for t in tools if t.function.name == params.tool_choice.function_name), tools[0])
    if mode == "required":
        return tools[0]
    last = params.messages[-1] if params.messages else None
    if last is None or last.role != pb.ROLE_USER:
        return None
    said = (last.content + " ".join(p.text for p in last.content_parts)).lower()
    return next((t for t in tools if t.function.name.lower() in said), None)


def _json_text(response_format: pb.ResponseFormat, text: str) -> str | None:
    """The answer as JSON text when the request asks for JSON, else None."""
    if response_format.type == "json_object":
        return orjson.dumps({"answer": text}).decode()
    if response_format.type == "json_schema":
        return orjson.dumps(instance(_json(response_format.json_schema.schema_json))).decode()
    return None


def _json(text: str) -> Any:
    """A schema given as JSON text; `{}` when there is none (or it does not parse: the codec checked it already)."""
    try:
        return orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return {}
