"""Applying a backend's request shaping: one wrapper around any provider, so every provider type shapes alike.

Order: `remove` first, then `defaults` (only where the request has no value), then `overrides`. A field the
request schema knows (`temperature`, `tools`, `response_format`…) is set on the proto params; any other field (a
provider's own, such as Gemini's `safetySettings` or vLLM's `top_k`) goes in `extra_json`, which each adapter sends
on. The caller's params are never changed: failover may send them to another backend, shaped differently.
Embeddings are passed through unshaped.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson
from google.protobuf.message import Message

from gateway.codec.openai_decode import decode_chat_params
from gateway.config import BackendConfig, ConfigError
from gateway.config.shaping import RequestShaping
from gateway.errors import InvalidRequestError
from gateway.providers.base import Continuer, Provider, TokenCounter
from gateway.validation import validate_chat
from tollgate.gateway.v1 import gateway_pb2 as pb

_FIELDS = pb.ChatCompletionParams.DESCRIPTOR.fields_by_name


def _known(name: str) -> bool:
    return name in _FIELDS and name != "extra_json"


def _present(params: Message, name: str) -> bool:
    """Whether the request gave `name` a value (repeated and map fields: a non-empty one)."""
    if _FIELDS[name].is_repeated:
        return len(getattr(params, name)) > 0
    return params.HasField(name)


def _clear(params: Message, name: str) -> None:
    # Through the generic Message type: the field is named by configuration, not by a literal.
    params.ClearField(name)


def _partials(values: Mapping[str, Any], path: str) -> dict[str, pb.ChatCompletionParams]:
    """For each known field, params carrying only that field's value, decoded once by the request codec; a value
    the codec refuses is a `ConfigError` naming its path (`backends[0].defaults.temperature: …`)."""
    out = {}
    for name, value in values.items():
        try:  # every field, a provider's own too: a client's request could not carry a value the codec refuses
            params, _ = decode_chat_params(_probe_body(name, value))
            validate_chat(params)
        except InvalidRequestError as exc:
            # The codec's message starts with the field's own path within the request.
            raise ConfigError(f"{path}.{exc.message}") from None
        if _known(name):
            params.ClearField("model")
            params.ClearField("messages")
            out[name] = params
    return out


def _probe_body(key: str, value: Any) -> dict[str, Any]:
    """The smallest valid request carrying one shaped field, to check it and decode it."""
    return {"model": "shaping", "messages": [{"role": "user", "content": "."}], key: value}


class ShapedProvider:
    """A provider whose chat requests are shaped as its backend's configuration says."""

    def __init__(self, inner: Provider, shaping: RequestShaping) -> None:
        self.inner = inner
        self.backend: BackendConfig = inner.backend
        self._remove = shaping.remove
        self._defaults = _partials(shaping.defaults, f"{shaping.path}.defaults")
        self._overrides = _partials(shaping.overrides, f"{shaping.path}.overrides")
        self._extra_defaults = {k: v for k, v in shaping.defaults.items() if not _known(k)}
        self._extra_overrides = {k: v for k, v in shaping.overrides.items() if not _known(k)}

    def shape(self, params: pb.ChatCompletionParams) -> pb.ChatCompletionParams:
        """A shaped copy of `params`."""
        out = pb.ChatCompletionParams()
        out.CopyFrom(params)
        extra: dict[str, Any] = orjson.loads(out.extra_json) if out.extra_json else {}
        for name in self._remove:
            if _known(name):
                _clear(out, name)
            extra.pop(name, None)
        for name, partial in self._defaults.items():
            if not _present(out, name):
                out.MergeFrom(partial)
        for name, partial in self._overrides.items():
            _clear(out, name)
            out.MergeFrom(partial)
        for key, value in self._extra_defaults.items():
            extra.setdefault(key, value)
        extra.update(self._extra_overrides)
        out.extra_json = orjson.dumps(extra).decode() if extra else ""
        return out

    async def complete(self, model: str, params: pb.ChatCompletionParams) -> pb.CreateChatCompletionResponse:
        """The inner provider's completion of the shaped request."""
        return await self.inner.complete(model, self.shape(params))

    def stream(
        self, model: str, params: pb.ChatCompletionParams
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """The inner provider's stream of the shaped request (the same generator, so closing it closes the socket)."""
        return self.inner.stream(model, self.shape(params))

    def continue_stream(
        self, model: str, params: pb.ChatCompletionParams, prefix: str
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        """The inner provider's continuation of the shaped request (asked only of one that can continue)."""
        if not isinstance(self.inner, Continuer):
            raise TypeError(f"backend '{self.backend.name}' cannot continue an answer")
        return self.inner.continue_stream(model, self.shape(params), prefix)

    async def embed(self, model: str, request: pb.CreateEmbeddingsRequest) -> pb.CreateEmbeddingsResponse:
        """Embeddings, unshaped."""
        return await self.inner.embed(model, request)

    async def close(self) -> None:
        """Close the inner provider."""
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # What shaping does not touch (an active health probe) is the inner provider's own, or missing like it.
        return getattr(self.inner, name)


class ShapedCounter(ShapedProvider):
    """A shaped provider that can also count tokens: it counts the request as it would be sent."""

    def __init__(self, inner: TokenCounter, shaping: RequestShaping) -> None:
        super().__init__(inner, shaping)  # type: ignore[arg-type]  # a TokenCounter here is always a Provider too
        self._counter = inner

    async def count_tokens(self, model: str, params: pb.ChatCompletionParams) -> int:
        """The inner provider's count of the shaped request."""
        return await self._counter.count_tokens(model, self.shape(params))


def with_shaping(provider: Provider) -> Provider:
    """`provider`, wrapped when its backend shapes requests (keeping its token counting, when it has one)."""
    shaping = provider.backend.shaping
    if not shaping:
        return provider
    if isinstance(provider, TokenCounter):
        return ShapedCounter(provider, shaping)
    return ShapedProvider(provider, shaping)
