"""What the fake OpenAI server answers on the endpoints beside chat, in the documented shapes: legacy completions
(https://platform.openai.com/docs/api-reference/completions), images (…/images/create), audio transcriptions and
speech (…/audio), moderations (…/moderations), and vLLM's rerank (the Cohere/Jina shape, `POST /rerank`).

Deterministic, so tests assert exact text and counts: a completion is the fixed sentence completed with the prompt,
one word a token; a transcription names the bytes it got; speech is bytes derived from the input; moderation flags
an input that says "kill"; rerank scores a document by the share of the query's words it holds. Anything the real
API would reject raises `BadRequest`. Like the rest of the fake, it shares no code with the gateway.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.testing.openai_replies import UNPARSEABLE, BadRequest, positive_int

_REPLY_PREFIX = "This is a completion from the fake OpenAI server of: "
PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent", "self-harm",
    "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence", "violence/graphic",
)  # fmt: skip
SPEECH_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
SPEECH_BYTES_PER_CHAR = 200  # the fake's audio is this many bytes per input character


def _model(body: Any) -> str:
    if not isinstance(body, dict):
        raise BadRequest(UNPARSEABLE, None)
    model = body.get("model")
    if not isinstance(model, str):
        raise BadRequest("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    return model


def _words(text: str) -> int:
    return max(1, len(text.split()))


# ---------------------------------------------------------------------------------------------- legacy completions


@dataclass(frozen=True, slots=True)
class TextCompletion:
    """A validated completion request: each choice's text pieces, its finish reason, and the usage."""

    completion_id: str
    created: int
    model: str
    choices: list[tuple[list[str], str, str]]  # (pieces, finish_reason, the echoed prompt or "")
    usage: dict[str, int]
    stream: bool
    include_usage: bool
    logprobs: int | None


def parse_text_completion(body: Any, ids: Iterator[int], chunks: int) -> TextCompletion:
    """Validate a legacy completion request; `chunks` is each choice's length in tokens (one word each)."""
    model = _model(body)
    prompts = _prompts(body.get("prompt"))
    n = positive_int(body, "n", 1, 128)
    limit = body.get("max_tokens", 16)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise BadRequest(f"Invalid value for 'max_tokens': {limit!r}.", "max_tokens")
    logprobs = body.get("logprobs")
    if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int) or not 0 <= logprobs <= 5):
        raise BadRequest(f"Invalid value for 'logprobs': {logprobs!r}.", "logprobs")
    echo = body.get("echo") is True
    count = min(chunks, limit)
    finish = "length" if limit < chunks else "stop"
    choices: list[tuple[list[str], str, str]] = []
    for prompt in prompts:
        words = (_REPLY_PREFIX + prompt).split()
        pieces = [words[i % len(words)] + " " for i in range(count)]
        choices.extend((pieces, finish, prompt if echo else "") for _ in range(n))
    prompt_tokens = sum(_words(p) for p in prompts)
    completion_tokens = count * len(choices)
    options = body.get("stream_options")
    stream = body.get("stream") is True
    return TextCompletion(
        completion_id=f"cmpl-fake{next(ids)}",
        created=int(time.time()),
        model=model,
        choices=choices,
        usage={
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        stream=stream,
        include_usage=stream and isinstance(options, dict) and options.get("include_usage") is True,
        logprobs=logprobs,
    )


def _prompts(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(x, str) for x in raw):
            return list(raw)
        if all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
            return [" ".join(f"t{x}" for x in raw)]
        if all(isinstance(x, list) and x for x in raw):
            return [" ".join(f"t{x}" for x in ids) for ids in raw]
    raise BadRequest("Invalid value for 'prompt': expected a string or an array.", "prompt")


def text_logprobs(pieces: list[str], top: int) -> dict[str, Any]:
    """The legacy logprobs object of `pieces`: a fixed log probability per token, offsets into the text."""
    offsets, at = [], 0
    for piece in pieces:
        offsets.append(at)
        at += len(piece)
    return {
        "tokens": pieces,
        "token_logprobs": [-0.25] * len(pieces),
        "top_logprobs": [{piece: -0.25} for piece in pieces] if top else None,
        "text_offset": offsets,
    }


def text_completion_object(completion: TextCompletion) -> dict[str, Any]:
    """The whole `text_completion` answer."""
    choices = []
    for index, (pieces, finish, echoed) in enumerate(completion.choices):
        logprobs = text_logprobs(pieces, completion.logprobs) if completion.logprobs is not None else None
        choices.append(
            {"text": echoed + "".join(pieces), "index": index, "logprobs": logprobs, "finish_reason": finish}
        )
    return {
        "id": completion.completion_id,
        "object": "text_completion",
        "created": completion.created,
        "model": completion.model,
        "system_fingerprint": "fp_fake",
        "choices": choices,
        "usage": completion.usage,
    }


def text_chunk(completion: TextCompletion, index: int, text: str, finish: str | None, logprobs: Any) -> dict[str, Any]:
    """One streamed chunk of one choice (choices take turns, as with n > 1 on OpenAI)."""
    chunk = {
        "id": completion.completion_id,
        "object": "text_completion",
        "created": completion.created,
        "model": completion.model,
        "system_fingerprint": "fp_fake",
        "choices": [{"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}],
    }
    if completion.include_usage:
        chunk["usage"] = None
    return chunk


# ---------------------------------------------------------------------------------------------- images


def images_object(body: Any, serial: int) -> dict[str, Any]:
    """An images answer: dall-e models give URLs (or b64_json when asked), gpt-image models always b64_json and
    token usage."""
    model = _model(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    n = positive_int(body, "n", 1, 10)
    fmt = body.get("response_format", "url")
    gpt_image = model.startswith("gpt-image")
    if gpt_image and "response_format" in body:
        raise BadRequest("Unknown parameter: 'response_format'.", "response_format", "unknown_parameter")
    if fmt not in ("url", "b64_json"):
        raise BadRequest(f"Invalid value for 'response_format': {fmt!r}.", "response_format")
    data = []
    for i in range(n):
        if gpt_image or fmt == "b64_json":
            item: dict[str, Any] = {"b64_json": PNG_1X1}
        else:
            item = {"url": f"https://images.fake.example/img-{serial}-{i}.png"}
        if model == "dall-e-3":
            item["revised_prompt"] = f"A picture of {prompt}"
        data.append(item)
    out: dict[str, Any] = {"created": int(time.time()), "data": data}
    if gpt_image:
        tokens = _words(prompt)
        out["usage"] = {
            "input_tokens": tokens,
            "output_tokens": 272 * n,
            "total_tokens": tokens + 272 * n,
            "input_tokens_details": {"text_tokens": tokens, "image_tokens": 0},
        }
        out["output_format"] = "png"
    return out


# ---------------------------------------------------------------------------------------------- audio


def transcription_answer(form: Any) -> tuple[bytes, str]:
    """The body and content type of a transcription answer, in the asked response_format; `form` is the upload's
    fields, its file as {"filename", "size", "content_type"}."""
    fields: dict[str, Any] = form if isinstance(form, dict) else {}
    file = fields.get("file")
    if not isinstance(file, dict):
        raise BadRequest("Missing required parameter: 'file'.", "file", "missing_required_parameter")
    model = fields.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    size = int(file["size"])
    text = f"Heard {size} bytes of {file['filename']}"
    if prompt := fields.get("prompt"):
        text += f" after: {prompt}"
    duration = round(size / 16000, 3)  # as if 16 kB a second
    fmt = fields.get("response_format", "json")
    if fmt == "text":
        return (text + "\n").encode(), "text/plain; charset=utf-8"
    if fmt in ("srt", "vtt"):
        head = "WEBVTT\n\n" if fmt == "vtt" else "1\n"
        return f"{head}00:00:00,000 --> 00:00:01,000\n{text}\n\n".encode(), "text/plain; charset=utf-8"
    usage: dict[str, Any]
    if model.startswith("gpt-4o"):
        tokens = _words(text)
        usage = {"type": "tokens", "input_tokens": 100, "output_tokens": tokens, "total_tokens": 100 + tokens}
    else:
        usage = {"type": "duration", "seconds": max(1, round(duration))}
    if fmt == "json":
        return orjson.dumps({"text": text, "usage": usage}), "application/json"
    if fmt == "verbose_json":
        segment = {"id": 0, "seek": 0, "start": 0.0, "end": duration, "text": text, "tokens": [1, 2, 3]}
        body = {"task": "transcribe", "language": "english", "duration": duration, "text": text,
                "segments": [segment], "usage": usage}  # fmt: skip
        return orjson.dumps(body), "application/json"
    raise BadRequest(f"Invalid value for 'response_format': {fmt!r}.", "response_format")


def speech_audio(body: Any) -> tuple[bytes, str]:
    """The audio of a speech request and its content type: bytes derived from the input."""
    _model(body)
    text = body.get("input")
    if not isinstance(text, str) or not text:
        raise BadRequest("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    if not isinstance(body.get("voice"), str):
        raise BadRequest("Missing required parameter: 'voice'.", "voice", "missing_required_parameter")
    fmt = body.get("response_format", "mp3")
    if fmt not in SPEECH_TYPES:
        raise BadRequest(f"Invalid value for 'response_format': {fmt!r}.", "response_format")
    return speech_bytes(text), SPEECH_TYPES[fmt]


def speech_bytes(text: str) -> bytes:
    """What the fake says for `text` (tests compare with it)."""
    seed = hashlib.sha256(text.encode()).digest()
    size = len(text) * SPEECH_BYTES_PER_CHAR
    return (seed * (size // len(seed) + 1))[:size]


# ---------------------------------------------------------------------------------------------- moderations


def moderation_object(body: Any, serial: int) -> dict[str, Any]:
    """One result per input; "kill" in an input flags it for violence."""
    model = body.get("model", "omni-moderation-latest") if isinstance(body, dict) else None
    if not isinstance(model, str):
        raise BadRequest(UNPARSEABLE, None)
    raw = body.get("input")
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        texts = list(raw)
    elif isinstance(raw, list) and raw and all(isinstance(x, dict) for x in raw):
        texts = [" ".join(str(x.get("text", "")) for x in raw)]  # multi-modal parts make one input
    else:
        raise BadRequest("Invalid value for 'input': expected a string or an array.", "input")
    results = []
    for text in texts:
        violent = "kill" in text.lower()
        results.append(
            {
                "flagged": violent,
                "categories": {c: violent and c == "violence" for c in MODERATION_CATEGORIES},
                "category_scores": {c: 0.9 if violent and c == "violence" else 0.001 for c in MODERATION_CATEGORIES},
                "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
            }
        )
    return {"id": f"modr-fake{serial}", "model": model, "results": results}


# ---------------------------------------------------------------------------------------------- rerank


def rerank_object(body: Any, serial: int) -> dict[str, Any]:
    """vLLM's rerank answer: results most relevant first (`top_n` of them), each with its document."""
    model = _model(body)
    query = body.get("query")
    documents = body.get("documents")
    if not isinstance(query, str):
        raise BadRequest("Missing required parameter: 'query'.", "query", "missing_required_parameter")
    if not isinstance(documents, list):
        raise BadRequest("Missing required parameter: 'documents'.", "documents", "missing_required_parameter")
    texts = [d if isinstance(d, str) else d.get("text") if isinstance(d, dict) else None for d in documents]
    if not all(isinstance(t, str) for t in texts):
        raise BadRequest("Invalid value for 'documents'.", "documents")
    top_n = positive_int(body, "top_n", len(texts), 1 << 20) if body.get("top_n") else len(texts)
    wanted = set(query.lower().split())
    scored = [
        (len(wanted & set(str(text).lower().split())) / max(1, len(wanted)), index, str(text))
        for index, text in enumerate(texts)
    ]
    scored.sort(key=lambda item: (-item[0], item[1]))
    tokens = _words(query) * len(texts) + sum(_words(str(t)) for t in texts)
    return {
        "id": f"rerank-fake{serial}",
        "model": model,
        "usage": {"total_tokens": tokens},
        "results": [
            {"index": index, "document": {"text": text}, "relevance_score": score}
            for score, index, text in scored[:top_n]
        ],
    }


def b64_png() -> bytes:
    """The 1x1 PNG the fake's images carry, decoded."""
    return base64.b64decode(PNG_1X1)
