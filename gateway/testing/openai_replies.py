"""What the fake OpenAI server answers: request bodies validated and turned into deterministic replies.

Chat completions echo the last user message in a fixed sentence, tool calls echo it as arguments and embeddings
are unit vectors hashed from the input, so tests can assert exact text and token counts. Anything the real API
would reject raises `BadRequest`. `gateway.testing.fake_openai` serves these answers over HTTP.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import re
import sys
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

__all__ = [
    "DEFAULT_DIMENSIONS",
    "MAX_DIMENSIONS",
    "UNPARSEABLE",
    "BadRequest",
    "Chat",
    "Embedding",
    "Reply",
    "embedding",
    "embedding_items",
    "parse_chat",
    "positive_int",
]

# Every answer is this sentence completed with the last user message, cut or cycled to the wanted length.
_REPLY_PREFIX = "This is a reply from the fake OpenAI server to: "
_PREFIX_WORDS = tuple(_REPLY_PREFIX.split())
_TEXT_OPENING = b'{"role":"assistant","content":""}'
_MAX_N = 128
DEFAULT_DIMENSIONS = 8  # embedding length when the request sets no `dimensions`
MAX_DIMENSIONS = 8192  # the largest `dimensions` accepted
_TOOL_ARGUMENT_PIECES = 4
# The 400 message for a body that is not a JSON object.
UNPARSEABLE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library "
    "correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
)


class BadRequest(Exception):
    """A request the real API would reject with 400 `invalid_request_error`."""

    def __init__(self, message: str, param: str | None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True, slots=True)
class Reply:
    """What each choice of one chat completion says, in both its streamed and its whole form."""

    opening_delta: bytes  # JSON of the first streamed delta (role, and the tool call's header)
    step_deltas: tuple[bytes, ...]  # JSON of each following delta: one content piece or argument piece
    message: dict[str, Any]  # the non-streaming `message`; shared between responses, never mutated
    finish_reason: str
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Chat:
    """A validated chat completion request and everything needed to answer it."""

    completion_id: str
    created: int
    model: str
    n: int
    reply: Reply
    usage: dict[str, Any]
    stream: bool
    include_usage: bool


class Embedding(NamedTuple):
    """One embedding vector, as floats and as OpenAI's base64 of little-endian float32."""

    floats: list[float]
    b64: str


# ---------------------------------------------------------------------------------------------------- chat


def parse_chat(body: Any, ids: Iterator[int], chunks: int) -> Chat:
    """Validate a chat completion request; `ids` numbers it, `chunks` is the text reply's length."""
    if not isinstance(body, dict):
        raise BadRequest(UNPARSEABLE, None)
    model = body.get("model")
    if not isinstance(model, str):
        raise BadRequest("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    messages = _messages(body)
    n = positive_int(body, "n", 1, _MAX_N)
    serial = next(ids)
    prefix = _continued(body, messages)
    if prefix is None:
        reply = _reply(body, _last_user_text(messages), f"call_fake_{serial}", chunks)
    else:
        reply = _continuation(body, _last_user_text(messages), chunks, prefix)
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
    return Chat(f"chatcmpl-fake-{serial}", int(time.time()), model, n, reply, usage, stream, include_usage)


def _reply(body: dict[str, Any], user_text: str, call_id: str, chunks: int) -> Reply:
    messages = body["messages"]
    # After a tool's result the model answers in text, as a real one would (rather than calling it again).
    tool = None if messages[-1].get("role") == "tool" else _tool_name(body)
    if tool is not None:
        return _tool_reply(user_text, tool, call_id)
    limit = _token_limit(body)
    if limit is not None and limit < chunks:
        return _text_reply(user_text, limit, "length")
    return _text_reply(user_text, chunks, "stop")


def _continued(body: dict[str, Any], messages: list[dict[str, Any]]) -> str | None:
    """The beginning of the answer the request asks to have continued (vLLM's `continue_final_message`, Mistral's
    and DeepSeek's `"prefix": true` on the last message), or None for a new answer."""
    last = messages[-1]
    if body.get("continue_final_message") is not True and last.get("prefix") is not True:
        return None
    if body.get("continue_final_message") is True and body.get("add_generation_prompt", True) is not False:
        # vLLM's own rule: the last message is either continued or followed by a new turn.
        raise BadRequest("Cannot set both `continue_final_message` and `add_generation_prompt` to True.", None)
    if last.get("role") != "assistant":
        raise BadRequest("Only an assistant message can be continued.", "messages")
    return _content_text(last.get("content"))


def _continuation(body: dict[str, Any], user_text: str, chunks: int, prefix: str) -> Reply:
    """The rest of the text answer after `prefix`, when the answer begins with it (else the whole answer: a model
    given a beginning it would not have written answers in its own words)."""
    limit = _token_limit(body)
    count, finish_reason = (limit, "length") if limit is not None and limit < chunks else (chunks, "stop")
    pieces = _pieces(user_text, count)
    if "".join(pieces).startswith(prefix):
        rest, seen = [], 0
        for piece in pieces:
            if seen + len(piece) > len(prefix):
                rest.append(piece[max(0, len(prefix) - seen) :])
            seen += len(piece)
        pieces = rest
    return _reply_of(pieces, finish_reason)


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if messages is None:
        raise BadRequest("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not all(isinstance(message, dict) for message in messages):
        raise BadRequest("Invalid type for 'messages': expected an array of objects.", "messages", "invalid_type")
    if not messages:
        message = "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array."
        raise BadRequest(message, "messages", "empty_array")
    return messages


def positive_int(body: dict[str, Any], name: str, default: int, maximum: int) -> int:
    """The integer field `name` of `body`, between 1 and `maximum`, or `default` when it is absent."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        bounds = "a positive integer" if maximum == sys.maxsize else f"an integer between 1 and {maximum}"
        raise BadRequest(f"Invalid '{name}': expected {bounds}.", name)
    return value


def _token_limit(body: dict[str, Any]) -> int | None:
    """The smaller of `max_completion_tokens` and the legacy `max_tokens`, if either is set."""
    limits = [positive_int(body, name, sys.maxsize, sys.maxsize) for name in ("max_completion_tokens", "max_tokens")]
    limit = min(limits)
    return None if limit == sys.maxsize else limit


def _tool_name(body: dict[str, Any]) -> str | None:
    """The function to call, or None for a text answer (no tools, or tool_choice "none")."""
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise BadRequest("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
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
        raise BadRequest("Missing required parameter: 'tools[0].function.name'.", "tools[0].function.name")
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
def _text_reply(user_text: str, count: int, finish_reason: str) -> Reply:
    """`count` pieces of one word and a space each, cycling through the prefix and the user's words."""
    return _reply_of(_pieces(user_text, count), finish_reason)


def _pieces(user_text: str, count: int) -> list[str]:
    words = _PREFIX_WORDS + tuple(user_text.split())
    return [words[index % len(words)] + " " for index in range(count)]


def _reply_of(pieces: list[str], finish_reason: str) -> Reply:
    count = len(pieces)
    return Reply(
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


def _tool_reply(user_text: str, name: str, call_id: str) -> Reply:
    arguments, deltas = _tool_arguments(user_text)
    header = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    return Reply(
        opening_delta=orjson.dumps({"role": "assistant", "content": None, "tool_calls": [header]}),
        step_deltas=deltas,
        message={"role": "assistant", "content": None, "refusal": None, "annotations": [], "tool_calls": [call]},
        finish_reason="tool_calls",
        completion_tokens=len(deltas),
    )


# ---------------------------------------------------------------------------------------------------- embeddings


_INVALID_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."


def embedding_items(value: Any) -> list[tuple[str, int]]:
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
    raise BadRequest(_INVALID_INPUT, "input")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text_item(text: str) -> tuple[str, int]:
    if not text:
        raise BadRequest(_INVALID_INPUT, "input")
    return text, len(text.split())


def _tokens_item(tokens: list[int]) -> tuple[str, int]:
    return " ".join(map(str, tokens)), len(tokens)


WORD_DIMENSIONS = 512  # embedding length of word embeddings when the request sets no `dimensions`
_WORD = re.compile(r"\w+")


@functools.lru_cache(maxsize=8192)
def word_embedding(text: str, dimensions: int) -> Embedding:
    """A unit vector by feature hashing of the lower-cased words of `text`: texts that share most of their words are
    close (cosine = shared words over the geometric mean of the word counts, barring collisions), unrelated ones far.
    For testing similarity search; real embeddings also capture meaning, this only captures wording."""
    values = [0.0] * dimensions
    for word in _WORD.findall(text.lower()):
        digest = hashlib.sha256(word.encode("utf-8", "surrogatepass")).digest()
        values[int.from_bytes(digest[:4], "little") % dimensions] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(value * value for value in values)) or 1.0
    return _as_embedding([value / norm for value in values])


@functools.lru_cache(maxsize=8192)
def embedding(text: str, dimensions: int) -> Embedding:
    """A unit vector derived from sha256 of `text`, as floats and as OpenAI's base64 of little-endian float32."""
    seed = text.encode("utf-8", "surrogatepass")
    blocks = range(-(-dimensions // 32))
    raw = b"".join(hashlib.sha256(seed + block.to_bytes(4, "little")).digest() for block in blocks)
    # byte / 127.5 - 1 is never 0, so the norm is never 0 either.
    values = [byte / 127.5 - 1.0 for byte in raw[:dimensions]]
    norm = math.sqrt(sum(value * value for value in values))
    return _as_embedding([value / norm for value in values])


def _as_embedding(values: list[float]) -> Embedding:
    vector = array("f", values)
    # Floats rounded through float32, so they equal what the base64 form decodes to.
    floats = vector.tolist()
    if sys.byteorder != "little":
        vector.byteswap()
    return Embedding(floats, base64.b64encode(vector.tobytes()).decode("ascii"))
