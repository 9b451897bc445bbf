"""The rules for what a request to the endpoints beside chat may ask (legacy completions, images, audio, moderations,
rerank), checked on the messages themselves: the same answer for the same bad value from either door, as
`gateway.validation` gives chat. Built from its checks; a field without a rule here needs none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
from google.protobuf.message import Message

from gateway.errors import RequestTooLargeError
from gateway.validation import (
    MAX_N,
    _check_json,
    _check_length,
    _check_logit_bias,
    _check_stop,
    _ranged,
    bad,
    check_inputs,
    check_model,
)
from tollgate.gateway.v1 import endpoints_pb2 as ep

MAX_PROMPTS = 2048  # prompts in one legacy completion request, as OpenAI allows
MAX_IMAGES = 10  # images in one request (OpenAI's limit for every image model)
MAX_DOCUMENTS = 10_000  # documents in one rerank request
MAX_SPEECH_INPUT = 4096  # characters of speech input (OpenAI's limit)
TEXT_MAX = 32 * 1024  # characters of a short text field (a voice, a size, a prompt for transcription…)

_TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
_SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
_IMAGE_FORMATS = ("url", "b64_json")
_GRANULARITIES = ("word", "segment")
Check = Callable[[Any, str], None]


def _one_of(*allowed: str) -> Check:
    def check(value: str, param: str) -> None:
        if value not in allowed:
            raise bad(param, f"expected one of {', '.join(allowed)}, got {value[:40]!r}")

    return check


def _short(value: str, param: str) -> None:
    if len(value) > TEXT_MAX:
        raise bad(param, f"at most {TEXT_MAX} characters")


def _header_safe(value: str, param: str) -> None:
    """A value that goes into an upstream request's headers (a file's name and media type): no control characters."""
    _short(value, param)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise bad(param, "must not hold control characters")


def _each(check: Check) -> Check:
    def check_all(values: list[Any], param: str) -> None:
        for i, value in enumerate(values):
            check(value, f"{param}[{i}]")

    return check_all


def _run(message: Message, checks: Mapping[str, Check]) -> None:
    """The checks of the fields `message` holds."""
    for field, value in message.ListFields():
        check = checks.get(field.name)
        if check is not None:
            check(value, field.name)


_COMPLETION_CHECKS: dict[str, Check] = {
    "temperature": _ranged(0.0, 2.0),
    "top_p": _ranged(0.0, 1.0),
    "presence_penalty": _ranged(-2.0, 2.0),
    "frequency_penalty": _ranged(-2.0, 2.0),
    "max_tokens": _ranged(0, 2**63 - 1),  # 0 is allowed: with echo, the prompt's logprobs alone
    "n": _ranged(1, MAX_N),
    "best_of": _ranged(1, MAX_N),
    "logprobs": _ranged(0, 5),
    "stop": _check_stop,
    "logit_bias": _check_logit_bias,
    "user": _check_length,
    "extra_json": _check_json,
}


def validate_completion(params: ep.CompletionParams) -> None:
    """A legacy completion request."""
    check_model(params.model)
    check_inputs("prompt", len(params.prompt), params.prompt_tokens, MAX_PROMPTS, "prompts")
    _run(params, _COMPLETION_CHECKS)
    if params.HasField("best_of") and params.best_of < max(1, params.n):
        raise bad("best_of", "must be at least n")


_IMAGE_CHECKS: dict[str, Check] = {
    "n": _ranged(1, MAX_IMAGES),
    "response_format": _one_of(*_IMAGE_FORMATS),
    "size": _short,
    "quality": _short,
    "style": _short,
    "background": _short,
    "output_format": _short,
    "user": _check_length,
    "extra_json": _check_json,
}


def validate_image(request: ep.CreateImageRequest) -> None:
    """An image generation request."""
    check_model(request.model)
    if not request.prompt:
        raise bad("prompt", "must not be empty")
    _run(request, _IMAGE_CHECKS)


_TRANSCRIPTION_CHECKS: dict[str, Check] = {
    "response_format": _one_of(*_TRANSCRIPTION_FORMATS),
    "temperature": _ranged(0.0, 1.0),
    "language": _short,
    "prompt": _short,
    "filename": _header_safe,
    "content_type": _header_safe,
    "timestamp_granularities": _each(_one_of(*_GRANULARITIES)),
    "extra_json": _check_json,
}


def validate_transcription(request: ep.CreateTranscriptionRequest, max_bytes: int) -> None:
    """A transcription request: a file of at most `max_bytes` (the front door refuses bigger uploads before they
    are read; a gRPC caller's message is checked here)."""
    check_model(request.model)
    if not request.file:
        raise bad("file", "must not be empty")
    if len(request.file) > max_bytes:
        raise RequestTooLargeError(f"file: at most {max_bytes} bytes, got {len(request.file)}", param="file")
    _run(request, _TRANSCRIPTION_CHECKS)


_SPEECH_CHECKS: dict[str, Check] = {
    "voice": _short,
    "response_format": _one_of(*_SPEECH_FORMATS),
    "speed": _ranged(0.25, 4.0),
    "instructions": _short,
    "extra_json": _check_json,
}


def validate_speech(request: ep.StreamSpeechRequest) -> None:
    """A speech request."""
    check_model(request.model)
    if not request.input:
        raise bad("input", "must not be empty")
    if len(request.input) > MAX_SPEECH_INPUT:
        raise bad("input", f"at most {MAX_SPEECH_INPUT} characters")
    if not request.voice:
        raise bad("voice", "must not be empty")
    _run(request, _SPEECH_CHECKS)


def validate_moderation(request: ep.CreateModerationRequest) -> None:
    """A moderation request."""
    check_model(request.model)
    if not request.input and not request.input_parts_json:
        raise bad("input", "must not be empty")
    if len(request.input) > MAX_PROMPTS:
        raise bad("input", f"at most {MAX_PROMPTS} inputs")
    if request.input_parts_json:
        _check_parts(request.input_parts_json)
    _check_json(request.extra_json, "extra_json")


def _check_parts(text: str) -> None:
    try:
        parts = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise bad("input_parts_json", "expected a JSON array as text, got text that is not JSON") from None
    if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
        raise bad("input_parts_json", "expected a non-empty JSON array of objects")


def validate_rerank(request: ep.RerankRequest) -> None:
    """A rerank request."""
    check_model(request.model)
    if not request.query:
        raise bad("query", "must not be empty")
    if not request.documents:
        raise bad("documents", "must not be empty")
    if len(request.documents) > MAX_DOCUMENTS:
        raise bad("documents", f"at most {MAX_DOCUMENTS} documents")
    if request.HasField("top_n"):
        _ranged(1, 2**63 - 1)(request.top_n, "top_n")
    _check_json(request.extra_json, "extra_json")
