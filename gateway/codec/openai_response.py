"""OpenAI response JSON ⇄ `tollgate.gateway.v1` response messages, field by field.

`decode_*` reads what an OpenAI-compatible server answered. It is lenient about absent fields (servers differ) and
lets a wrong type raise `KeyError`/`TypeError`/`ValueError`/`AttributeError`, which the provider turns into one
`UpstreamError` at its boundary. `encode_*` writes the dicts a client of the OpenAI API expects.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from gateway.codec.openai_encode import encode_tool_call, merge_extra
from gateway.codec.openai_roles import ROLE_NAMES, ROLES
from tollgate.gateway.v1 import gateway_pb2 as pb

FINISH_REASONS: dict[str, pb.FinishReason.ValueType] = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "tool_calls": pb.FINISH_REASON_TOOL_CALLS,
    "content_filter": pb.FINISH_REASON_CONTENT_FILTER,
    "function_call": pb.FINISH_REASON_FUNCTION_CALL,
}
FINISH_REASON_NAMES: dict[int, str | None] = {v: k for k, v in FINISH_REASONS.items()}
FINISH_REASON_NAMES[pb.FINISH_REASON_UNSPECIFIED] = None

_TOOL_CALL_KEYS = frozenset(("id", "type", "function", "index"))


def _extra_text(raw: dict[str, Any], known: frozenset[str]) -> str:
    """Fields beyond `known` as JSON text (rare: only when a server adds its own)."""
    if known.issuperset(raw):
        return ""
    return orjson.dumps({k: v for k, v in raw.items() if k not in known}).decode()


# Known finish reasons map exactly; a server's own ones (vLLM's "abort", …) still end the choice.
_finish = FINISH_REASONS.get

# ---------------------------------------------------------------------------------------------------- decode


def decode_usage(raw: dict[str, Any], out: pb.Usage) -> None:
    """Usage, with the cached and reasoning token details where the server reports them."""
    out.prompt_tokens = int(raw.get("prompt_tokens") or 0)
    out.completion_tokens = int(raw.get("completion_tokens") or 0)
    out.total_tokens = int(raw.get("total_tokens") or out.prompt_tokens + out.completion_tokens)
    if prompt := raw.get("prompt_tokens_details"):
        out.cached_tokens = int(prompt.get("cached_tokens") or 0)
        out.prompt_audio_tokens = int(prompt.get("audio_tokens") or 0)
    if completion := raw.get("completion_tokens_details"):
        out.reasoning_tokens = int(completion.get("reasoning_tokens") or 0)
        out.completion_audio_tokens = int(completion.get("audio_tokens") or 0)


def _decode_logprobs(raw: dict[str, Any], out: pb.Logprobs) -> None:
    for key in ("content", "refusal"):
        for item in raw.get(key) or ():
            token = getattr(out, key).add(token=item["token"], logprob=item["logprob"], bytes=item.get("bytes") or ())
            for top in item.get("top_logprobs") or ():
                token.top_logprobs.add(token=top["token"], logprob=top["logprob"], bytes=top.get("bytes") or ())


def decode_completion(raw: dict[str, Any]) -> pb.CreateChatCompletionResponse:
    """A whole chat completion."""
    out = pb.CreateChatCompletionResponse(
        id=raw.get("id") or "", created=int(raw.get("created") or 0), model=raw.get("model") or ""
    )
    for i, c in enumerate(raw["choices"]):
        choice = out.choices.add(index=c.get("index", i))
        _decode_message(c.get("message") or {}, choice.message)
        if reason := c.get("finish_reason"):
            choice.finish_reason = _finish(reason, pb.FINISH_REASON_STOP)
        if logprobs := c.get("logprobs"):
            _decode_logprobs(logprobs, choice.logprobs)
    if usage := raw.get("usage"):
        decode_usage(usage, out.usage)
    if fingerprint := raw.get("system_fingerprint"):
        out.system_fingerprint = fingerprint
    if tier := raw.get("service_tier"):
        out.service_tier = tier
    return out


def _decode_message(raw: dict[str, Any], out: pb.ChatMessage) -> None:
    out.role = ROLES.get(raw.get("role") or "assistant", pb.ROLE_ASSISTANT)
    if (content := raw.get("content")) is not None:
        out.content = content
    for key in ("refusal", "reasoning_content"):
        if (text := raw.get(key)) is not None:
            setattr(out, key, text)
    for call in raw.get("tool_calls") or ():
        fn = call["function"]
        out.tool_calls.add(
            id=call.get("id") or "",
            type=call.get("type") or "function",
            function=pb.FunctionCall(name=fn["name"], arguments=fn.get("arguments") or ""),
            extra_json=_extra_text(call, _TOOL_CALL_KEYS),
        )


def decode_chunk(raw: dict[str, Any]) -> pb.StreamChatCompletionResponse:
    """One chunk of a stream (the hot path of streaming: keep it lean)."""
    out = pb.StreamChatCompletionResponse(
        id=raw.get("id") or "", created=int(raw.get("created") or 0), model=raw.get("model") or ""
    )
    for c in raw.get("choices") or ():
        choice = out.choices.add(index=c.get("index") or 0)
        if delta := c.get("delta"):
            _decode_delta(delta, choice.delta)
        else:
            choice.delta.SetInParent()
        if reason := c.get("finish_reason"):
            choice.finish_reason = _finish(reason, pb.FINISH_REASON_STOP)
        if logprobs := c.get("logprobs"):
            _decode_logprobs(logprobs, choice.logprobs)
    if usage := raw.get("usage"):
        decode_usage(usage, out.usage)
    if fingerprint := raw.get("system_fingerprint"):
        out.system_fingerprint = fingerprint
    if tier := raw.get("service_tier"):
        out.service_tier = tier
    return out


def _decode_delta(raw: dict[str, Any], out: pb.Delta) -> None:
    if role := raw.get("role"):
        out.role = ROLES.get(role, pb.ROLE_ASSISTANT)
    if (content := raw.get("content")) is not None:
        out.content = content
    if calls := raw.get("tool_calls"):
        for call in calls:
            piece = out.tool_calls.add(index=call.get("index") or 0)
            if call_id := call.get("id"):
                piece.id = call_id
            if kind := call.get("type"):
                piece.type = kind
            if fn := call.get("function"):
                if (name := fn.get("name")) is not None:
                    piece.function.name = name
                if (arguments := fn.get("arguments")) is not None:
                    piece.function.arguments = arguments
            piece.extra_json = _extra_text(call, _TOOL_CALL_KEYS)
    # Spelled out rather than looped over the two names: this runs for every chunk.
    if (refusal := raw.get("refusal")) is not None:
        out.refusal = refusal
    if (reasoning := raw.get("reasoning_content")) is not None:
        out.reasoning_content = reasoning


def decode_embeddings(raw: dict[str, Any]) -> pb.CreateEmbeddingsResponse:
    """An embeddings list."""
    out = pb.CreateEmbeddingsResponse(model=raw.get("model") or "")
    for i, item in enumerate(raw["data"]):
        vector = item["embedding"]
        embedding = out.data.add(index=item.get("index", i))
        if isinstance(vector, str):
            embedding.base64 = vector
        else:
            embedding.values.extend(vector)
    if usage := raw.get("usage"):
        decode_usage(usage, out.usage)
    return out


# ---------------------------------------------------------------------------------------------------- encode


def encode_usage(usage: pb.Usage) -> dict[str, Any]:
    """Usage as OpenAI reports it, details included."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "audio_tokens": usage.prompt_audio_tokens},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": usage.completion_audio_tokens,
        },
    }


def _encode_logprobs(logprobs: pb.Logprobs) -> dict[str, Any]:
    def token(t: pb.TokenLogprob | pb.TopLogprob) -> dict[str, Any]:
        out: dict[str, Any] = {"token": t.token, "logprob": t.logprob if math.isfinite(t.logprob) else -9999.0}
        out["bytes"] = list(t.bytes) if t.bytes else None
        if isinstance(t, pb.TokenLogprob):
            out["top_logprobs"] = [token(top) for top in t.top_logprobs]
        return out

    return {
        "content": [token(t) for t in logprobs.content] if logprobs.content else None,
        "refusal": [token(t) for t in logprobs.refusal] if logprobs.refusal else None,
    }


def encode_completion(completion: pb.CreateChatCompletionResponse) -> dict[str, Any]:
    """A whole chat completion, as the `chat.completion` object."""
    choices = []
    for c in completion.choices:
        m = c.message
        message: dict[str, Any] = {
            "role": ROLE_NAMES.get(m.role, "assistant"),
            "content": m.content if m.HasField("content") else None,
        }
        message["refusal"] = m.refusal if m.HasField("refusal") else None
        if m.HasField("reasoning_content"):
            message["reasoning_content"] = m.reasoning_content
        if m.tool_calls:
            message["tool_calls"] = [encode_tool_call(t) for t in m.tool_calls]
        choices.append(
            {
                "index": c.index,
                "message": message,
                "logprobs": _encode_logprobs(c.logprobs) if c.HasField("logprobs") else None,
                "finish_reason": FINISH_REASON_NAMES.get(c.finish_reason, "stop"),
            }
        )
    return _envelope(completion, "chat.completion", choices)


def _envelope(
    message: pb.CreateChatCompletionResponse | pb.StreamChatCompletionResponse, kind: str, choices: list[Any]
) -> dict[str, Any]:
    """The fields a completion and a chunk share around their choices."""
    out: dict[str, Any] = {
        "id": message.id,
        "object": kind,
        "created": message.created,
        "model": message.model,
        "choices": choices,
    }
    has = message.HasField
    if has("usage"):
        out["usage"] = encode_usage(message.usage)
    if has("system_fingerprint"):
        out["system_fingerprint"] = message.system_fingerprint
    if has("service_tier"):
        out["service_tier"] = message.service_tier
    return out


def encode_chunk(chunk: pb.StreamChatCompletionResponse) -> dict[str, Any]:
    """One `chat.completion.chunk` (the hot path of streaming: keep it lean)."""
    choices = [
        {
            "index": c.index,
            "delta": _encode_delta(c.delta),
            "logprobs": _encode_logprobs(c.logprobs) if c.HasField("logprobs") else None,
            "finish_reason": _reason_name(c.finish_reason),
        }
        for c in chunk.choices
    ]
    return _envelope(chunk, "chat.completion.chunk", choices)


_reason_name = FINISH_REASON_NAMES.get


def _encode_delta(delta: pb.Delta) -> dict[str, Any]:
    out: dict[str, Any] = {}
    has = delta.HasField  # bound once: up to four questions a chunk
    if delta.role:
        out["role"] = ROLE_NAMES.get(delta.role, "assistant")
    if has("content"):
        out["content"] = delta.content
    if delta.tool_calls:
        calls = []
        for t in delta.tool_calls:
            call: dict[str, Any] = {"index": t.index}
            if t.HasField("id"):
                call["id"] = t.id
            if t.HasField("type"):
                call["type"] = t.type
            if t.HasField("function"):
                fn: dict[str, Any] = {}
                if t.function.HasField("name"):
                    fn["name"] = t.function.name
                if t.function.HasField("arguments"):
                    fn["arguments"] = t.function.arguments
                call["function"] = fn
            calls.append(merge_extra(call, t.extra_json) if t.extra_json else call)
        out["tool_calls"] = calls
    if has("refusal"):
        out["refusal"] = delta.refusal
    if has("reasoning_content"):
        out["reasoning_content"] = delta.reasoning_content
    return out


def encode_embeddings(response: pb.CreateEmbeddingsResponse) -> dict[str, Any]:
    """An embeddings list."""
    data = [
        {"object": "embedding", "index": e.index, "embedding": e.base64 if e.base64 else list(e.values)}
        for e in response.data
    ]
    usage = {"prompt_tokens": response.usage.prompt_tokens, "total_tokens": response.usage.total_tokens}
    return {"object": "list", "data": data, "model": response.model, "usage": usage}


def encode_model(model: pb.Model) -> dict[str, Any]:
    """One model object."""
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}


def encode_models(response: pb.ListModelsResponse) -> dict[str, Any]:
    """The models list."""
    return {"object": "list", "data": [encode_model(m) for m in response.models]}
