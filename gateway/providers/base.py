"""The one small interface every provider adapter implements, and the fold of a stream into a completion.

An adapter owns all of its provider's JSON and nothing else: it never touches auth, limits or stats. It raises only
`GatewayError`s, having translated its transport's exceptions in one place.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol, runtime_checkable

from gateway.config import BackendConfig
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import responses_pb2 as rpb


class Provider(Protocol):
    """A model provider reached through one backend."""

    backend: BackendConfig

    async def complete(self, model: str, params: pb.ChatCompletionParams) -> pb.CreateChatCompletionResponse:
        """One whole completion from `model` (the provider's name for it)."""
        ...

    def stream(
        self, model: str, params: pb.ChatCompletionParams
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """An async generator of chunks, always ending with a usage chunk when the provider reports usage.

        The upstream request is opened inside the generator, so closing the generator closes the connection.
        """
        ...

    async def embed(self, model: str, request: pb.CreateEmbeddingsRequest) -> pb.CreateEmbeddingsResponse:
        """Embeddings of every input, in order."""
        ...

    async def close(self) -> None:
        """Release pooled connections."""
        ...


@runtime_checkable
class Probeable(Protocol):
    """A provider with a cheap health probe, for active health checks (a provider without one is never probed)."""

    async def probe(self) -> None:
        """Ask the backend something cheap; raise a `GatewayError` when it does not answer well."""
        ...


class _ChoiceFold:
    __slots__ = ("calls", "choice", "content", "reasoning", "refusal", "thinking_from")

    def __init__(self, choice: pb.Choice) -> None:
        self.choice = choice
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        self.calls: dict[int, pb.ToolCall] = {}
        self.thinking_from = 0  # where in `reasoning` the thinking block a signature will close began

    def add(self, piece: pb.ChunkChoice) -> None:
        delta = piece.delta
        if delta.role:
            self.choice.message.role = delta.role
        if delta.HasField("content"):
            self.content.append(delta.content)
        if delta.HasField("reasoning_content"):
            self.reasoning.append(delta.reasoning_content)
        if delta.HasField("refusal"):
            self.refusal.append(delta.refusal)
        if delta.HasField("thinking_signature") or delta.HasField("redacted_thinking"):
            self._thinking_block(delta)
        for call in delta.tool_calls:
            self._tool_call(call)
        if piece.finish_reason:
            self.choice.finish_reason = piece.finish_reason
            self.choice.native_finish_reason = piece.native_finish_reason
            if piece.HasField("stop_sequence"):
                self.choice.stop_sequence = piece.stop_sequence
        if piece.HasField("logprobs"):
            self.choice.logprobs.content.extend(piece.logprobs.content)
            self.choice.logprobs.refusal.extend(piece.logprobs.refusal)

    def _tool_call(self, call: pb.ToolCallDelta) -> None:
        whole = self.calls.setdefault(call.index, pb.ToolCall(type="function"))
        if call.HasField("id"):
            whole.id = call.id
        if call.HasField("type"):
            whole.type = call.type
        whole.function.name += call.function.name
        whole.function.arguments += call.function.arguments
        if call.extra_json:  # a provider's own fields (Gemini's thought signature) ride on the call
            whole.extra_json = call.extra_json

    def _thinking_block(self, delta: pb.Delta) -> None:
        """Anthropic's thinking blocks: a signature closes the reasoning since the last one; redacted ones are whole."""
        blocks = self.choice.message.thinking_blocks
        if delta.HasField("redacted_thinking"):
            blocks.add(redacted_data=delta.redacted_thinking)
        if delta.HasField("thinking_signature"):
            text = "".join(self.reasoning[self.thinking_from :])
            blocks.add(thinking=text, signature=delta.thinking_signature)
            self.thinking_from = len(self.reasoning)

    def finish(self) -> pb.Choice:
        message = self.choice.message
        if self.content or not self.calls:
            message.content = "".join(self.content)
        if self.reasoning:
            message.reasoning_content = "".join(self.reasoning)
        if self.refusal:
            message.refusal = "".join(self.refusal)
        message.tool_calls.extend(self.calls[i] for i in sorted(self.calls))
        return self.choice


async def collect(chunks: AsyncIterator[pb.StreamChatCompletionResponse]) -> pb.CreateChatCompletionResponse:
    """Fold a stream of chunks into the completion a non-streaming call would have returned."""
    out = pb.CreateChatCompletionResponse()
    folds: dict[int, _ChoiceFold] = {}
    async for chunk in chunks:
        if not out.id:
            out.id, out.created, out.model = chunk.id, chunk.created, chunk.model
        if chunk.HasField("system_fingerprint"):
            out.system_fingerprint = chunk.system_fingerprint
        for piece in chunk.choices:
            fold = folds.get(piece.index)
            if fold is None:
                fold = folds[piece.index] = _ChoiceFold(pb.Choice(index=piece.index))
                fold.choice.message.role = pb.ROLE_ASSISTANT
            fold.add(piece)
        if chunk.HasField("usage"):
            out.usage.CopyFrom(chunk.usage)
    out.choices.extend(folds[i].finish() for i in sorted(folds))
    return out


@runtime_checkable
class TokenCounter(Protocol):
    """A provider that can count a request's input tokens without answering it (Anthropic's count_tokens)."""

    async def count_tokens(self, model: str, params: pb.ChatCompletionParams) -> int:
        """The input tokens `params` would use with `model`."""
        ...


@runtime_checkable
class ResponsesProvider(Protocol):
    """A provider whose backend serves OpenAI's Responses API itself (`provider: openai`): a Responses request is
    sent to it unchanged, where other providers get it translated to chat."""

    async def respond(self, model: str, params: rpb.ResponseParams) -> rpb.Response:
        """The backend's whole response for `params`."""
        ...

    def respond_stream(
        self, model: str, params: rpb.ResponseParams
    ) -> AsyncGenerator[rpb.StreamResponseResponse, None]:
        """The backend's stream events for `params`. The upstream request is opened inside the generator, so
        closing it closes the connection."""
        ...


@runtime_checkable
class Continuer(Protocol):
    """A provider that can continue an answer from the text already given (mid-stream failover): its backend's
    `continuation` says how, and "none" that it cannot."""

    backend: BackendConfig

    def continue_stream(
        self, model: str, params: pb.ChatCompletionParams, prefix: str
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """The rest of the answer to `params` whose first `prefix` was already said: a stream like `stream`'s,
        whose text starts where `prefix` ends (the model may still rephrase the seam)."""
        ...


def can_continue(provider: Provider) -> bool:
    """Whether `provider` can continue an answer from a prefix of it."""
    return isinstance(provider, Continuer) and provider.backend.continuation not in ("", "none")


def with_prefix(params: pb.ChatCompletionParams, prefix: str) -> pb.ChatCompletionParams:
    """A copy of `params` ending with `prefix` as the assistant's own beginning of its answer."""
    out = pb.ChatCompletionParams()
    out.CopyFrom(params)
    out.messages.add(role=pb.ROLE_ASSISTANT, content=prefix)
    return out
