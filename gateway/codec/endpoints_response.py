"""Answers of the endpoints beside chat: what an OpenAI-compatible server (or vLLM's rerank) answered → messages
(`decode_*`, the providers' half: lenient about absent fields, a wrong type raises what the provider reports as one
malformed answer), and messages → the JSON a client of that API expects (`encode_*`, the front door's half).
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson

from tollgate.gateway.v1 import endpoints_pb2 as ep


def _extra_text(raw: dict[str, Any], known: frozenset[str]) -> str:
    extra = {k: v for k, v in raw.items() if k not in known}
    return orjson.dumps(extra).decode() if extra else ""


def _merge(out: dict[str, Any], extra_json: str) -> dict[str, Any]:
    if extra_json:
        for key, value in orjson.loads(extra_json).items():
            out.setdefault(key, value)
    return out


def decode_token_usage(raw: object, out: ep.TokenUsage) -> None:
    """Usage in any of the shapes these endpoints report it: prompt/completion tokens (completions, rerank) or
    input/output tokens (images, transcriptions)."""
    if not isinstance(raw, dict):
        return
    out.prompt_tokens = int(raw.get("prompt_tokens") or raw.get("input_tokens") or 0)
    out.completion_tokens = int(raw.get("completion_tokens") or raw.get("output_tokens") or 0)
    out.total_tokens = int(raw.get("total_tokens") or out.prompt_tokens + out.completion_tokens)


def encode_token_usage(usage: ep.TokenUsage) -> dict[str, Any]:
    """Usage as legacy completions report it."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


# ---------------------------------------------------------------------------------------------- legacy completions


TextOut = TypeVar("TextOut", ep.CreateCompletionResponse, ep.StreamCompletionResponse)


def _decode_choices(raw: dict[str, Any], out: Any) -> None:
    for choice in raw.get("choices") or ():
        item = out.choices.add(index=int(choice.get("index") or 0), text=str(choice.get("text") or ""))
        if reason := choice.get("finish_reason"):
            item.finish_reason = str(reason)
        if (logprobs := choice.get("logprobs")) is not None:
            item.logprobs_json = orjson.dumps(logprobs).decode()


def decode_text_completion(raw: dict[str, Any]) -> ep.CreateCompletionResponse:
    """A `text_completion` object."""
    return _decode_text(raw, ep.CreateCompletionResponse())


def decode_text_chunk(raw: dict[str, Any]) -> ep.StreamCompletionResponse:
    """One streamed `text_completion` chunk (the last, with `stream_options.include_usage`, carries the usage)."""
    return _decode_text(raw, ep.StreamCompletionResponse())


def _decode_text(raw: dict[str, Any], out: TextOut) -> TextOut:
    """A whole completion and a chunk have the same fields: id, created, model, choices, usage, fingerprint."""
    out.id, out.created = str(raw.get("id") or ""), int(raw.get("created") or 0)
    out.model = str(raw.get("model") or "")
    _decode_choices(raw, out)
    if usage := raw.get("usage"):
        decode_token_usage(usage, out.usage)
    if fingerprint := raw.get("system_fingerprint"):
        out.system_fingerprint = str(fingerprint)
    return out


def _encode_choices(choices: Any) -> list[dict[str, Any]]:
    return [
        {
            "text": c.text,
            "index": c.index,
            "logprobs": orjson.loads(c.logprobs_json) if c.logprobs_json else None,
            "finish_reason": c.finish_reason or None,
        }
        for c in choices
    ]


def encode_text_completion(completion: ep.CreateCompletionResponse) -> dict[str, Any]:
    """A whole legacy completion, as the `text_completion` object."""
    out: dict[str, Any] = {
        "id": completion.id,
        "object": "text_completion",
        "created": completion.created,
        "model": completion.model,
        "choices": _encode_choices(completion.choices),
        "usage": encode_token_usage(completion.usage),
    }
    if completion.HasField("system_fingerprint"):
        out["system_fingerprint"] = completion.system_fingerprint
    return out


def encode_text_chunk(chunk: ep.StreamCompletionResponse) -> dict[str, Any]:
    """A streamed chunk; `usage` only on the usage chunk (a stream whose client asked for it)."""
    out: dict[str, Any] = {
        "id": chunk.id,
        "object": "text_completion",
        "created": chunk.created,
        "model": chunk.model,
        "choices": _encode_choices(chunk.choices),
    }
    if chunk.HasField("system_fingerprint"):
        out["system_fingerprint"] = chunk.system_fingerprint
    if chunk.HasField("usage"):
        out["usage"] = encode_token_usage(chunk.usage)
    return out


# ---------------------------------------------------------------------------------------------- images

_IMAGE_KEYS = frozenset(("created", "data", "usage"))


def decode_images(raw: dict[str, Any]) -> ep.CreateImageResponse:
    """An images answer: each image's url or b64_json (and revised_prompt), usage when the model reports it."""
    out = ep.CreateImageResponse(created=int(raw.get("created") or 0), extra_json=_extra_text(raw, _IMAGE_KEYS))
    for item in raw.get("data") or ():
        image = out.data.add(url=str(item.get("url") or ""), b64_json=str(item.get("b64_json") or ""))
        if (revised := item.get("revised_prompt")) is not None:
            image.revised_prompt = str(revised)
    if usage := raw.get("usage"):
        decode_token_usage(usage, out.usage)
    return out


def encode_images(response: ep.CreateImageResponse) -> dict[str, Any]:
    """An images answer as OpenAI writes it: only the fields each image has."""
    data = []
    for image in response.data:
        item: dict[str, Any] = {}
        if image.url:
            item["url"] = image.url
        if image.b64_json:
            item["b64_json"] = image.b64_json
        if image.HasField("revised_prompt"):
            item["revised_prompt"] = image.revised_prompt
        data.append(item)
    out: dict[str, Any] = {"created": response.created, "data": data}
    if response.HasField("usage"):
        usage = response.usage
        out["usage"] = {
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }
    return _merge(out, response.extra_json)


# ---------------------------------------------------------------------------------------------- audio

_TRANSCRIPTION_KEYS = frozenset(("text", "language", "duration", "usage"))
PLAIN_FORMATS = frozenset(("text", "srt", "vtt"))  # answered as plain text, not JSON


def decode_transcription(body: bytes, response_format: str) -> ep.CreateTranscriptionResponse:
    """A transcription answer: plain text for text/srt/vtt, else the JSON object."""
    out = ep.CreateTranscriptionResponse(response_format=response_format or "json")
    if out.response_format in PLAIN_FORMATS:
        out.text = body.decode()
        return out
    raw = orjson.loads(body)
    out.text = str(raw["text"])
    if (language := raw.get("language")) is not None:
        out.language = str(language)
    if (duration := raw.get("duration")) is not None:
        out.duration = float(duration)
    known = _TRANSCRIPTION_KEYS
    usage = raw.get("usage")
    if isinstance(usage, dict) and usage.get("type", "tokens") == "tokens":
        decode_token_usage(usage, out.usage)
    else:  # whisper's {"type": "duration", "seconds"}: no tokens; the client gets it as the backend wrote it
        known = known - {"usage"}
    out.extra_json = _extra_text(raw, known)
    return out


def encode_transcription(response: ep.CreateTranscriptionResponse) -> dict[str, Any]:
    """A JSON transcription answer (`json` and `verbose_json`; the plain formats are written as text)."""
    out: dict[str, Any] = {"text": response.text}
    if response.language:
        out["language"] = response.language
    if response.HasField("duration"):
        out["duration"] = response.duration
    if response.HasField("usage"):
        usage = response.usage
        out["usage"] = {
            "type": "tokens",
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }
    return _merge(out, response.extra_json)


# ---------------------------------------------------------------------------------------------- moderations

_RESULT_KEYS = frozenset(("flagged", "categories", "category_scores"))


def decode_moderation(raw: dict[str, Any]) -> ep.CreateModerationResponse:
    """A moderation answer: one result per input."""
    out = ep.CreateModerationResponse(id=str(raw.get("id") or ""), model=str(raw.get("model") or ""))
    for result in raw["results"]:
        item = out.results.add(flagged=bool(result.get("flagged")), extra_json=_extra_text(result, _RESULT_KEYS))
        for name, flag in (result.get("categories") or {}).items():
            item.categories[name] = bool(flag)
        for name, score in (result.get("category_scores") or {}).items():
            item.category_scores[name] = float(score)
    return out


def encode_moderation(response: ep.CreateModerationResponse) -> dict[str, Any]:
    """A moderation answer as OpenAI writes it."""
    results = [
        _merge(
            {
                "flagged": r.flagged,
                "categories": dict(r.categories),
                "category_scores": dict(r.category_scores),
            },
            r.extra_json,
        )
        for r in response.results
    ]
    return {"id": response.id, "model": response.model, "results": results}


# ---------------------------------------------------------------------------------------------- rerank


def decode_rerank(raw: dict[str, Any]) -> ep.RerankResponse:
    """vLLM's (Jina's) rerank answer; Cohere's has the same results (`document` may be absent or a string)."""
    out = ep.RerankResponse(id=str(raw.get("id") or ""), model=str(raw.get("model") or ""))
    for result in raw["results"]:
        item = out.results.add(index=int(result["index"]), relevance_score=float(result["relevance_score"]))
        document = result.get("document")
        if isinstance(document, dict):
            item.document = str(document.get("text") or "")
        elif isinstance(document, str):
            item.document = document
    if usage := raw.get("usage"):
        decode_token_usage(usage, out.usage)
        if not out.usage.prompt_tokens:  # rerank reports only total_tokens, all of them input
            out.usage.prompt_tokens = out.usage.total_tokens
    return out


def encode_rerank(response: ep.RerankResponse) -> dict[str, Any]:
    """A rerank answer in the shape vLLM serves (Jina's and Cohere's)."""
    results = []
    for r in response.results:
        item: dict[str, Any] = {"index": r.index, "relevance_score": r.relevance_score}
        if r.HasField("document"):
            item["document"] = {"text": r.document}
        results.append(item)
    return {
        "id": response.id,
        "model": response.model,
        "usage": {"total_tokens": response.usage.total_tokens},
        "results": results,
    }
