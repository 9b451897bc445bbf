"""One set of rules for what a request may ask, checked on the `tollgate.gateway.v1` messages themselves.

The engine runs `validate_chat` or `validate_embeddings` first thing in every call, so the HTTP door (whose codecs
check only JSON types) and a direct gRPC caller get the same answer for the same bad value: an `InvalidRequestError`
(HTTP 400, gRPC INVALID_ARGUMENT) whose `param` is the field's path, e.g. `temperature` or `messages[2].role`.
A refused request has not been metered yet, so its strings never become metric labels or usage records.

Client-supplied names have bounded lengths, and a model name shaped like a credential (a key pasted into the wrong
field) is refused without being repeated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import orjson

from gateway.credentials import looks_like_credential
from gateway.errors import InvalidRequestError
from tollgate.gateway.v1 import gateway_pb2 as pb

MODEL_MAX = 256  # characters of a model name; real ones are far shorter
USER_MAX = 256  # characters of `user`, the caller's id for its end user
MAX_N = 128  # choices in one request
MAX_STOP = 4
MAX_EMBEDDING_INPUTS = 2048
MAX_DIMENSIONS = 65536
METADATA_PAIRS, METADATA_KEY_MAX, METADATA_VALUE_MAX = 16, 64, 512  # OpenAI's documented limits

_TOOL_CHOICE_MODES = ("none", "auto", "required")
_RESPONSE_FORMATS = ("text", "json_object", "json_schema")
_ENCODING_FORMATS = ("float", "base64")
_CONTENT_OPTIONAL = (pb.ROLE_ASSISTANT,)  # an assistant turn may be tool calls alone
_ROLES = frozenset(pb.Role.values()) - {pb.ROLE_UNSPECIFIED}


def bad(param: str, message: str) -> InvalidRequestError:
    """An invalid-parameter error naming the field (the same shape the codecs raise for a bad JSON type)."""
    return InvalidRequestError(f"{param}: {message}", code="invalid_parameter", param=param)


def validate_chat(params: pb.ChatCompletionParams) -> None:
    """Raise `InvalidRequestError` for the first thing wrong with a chat request (or a token count's)."""
    check_model(params.model)
    messages = params.messages
    if not messages:
        raise bad("messages", "must not be empty")
    for i, message in enumerate(messages):
        _check_message(message, i)
    # One pass over the fields that are set: a typical request sets a handful of the thirty.
    for field, value in params.ListFields():
        check = _CHAT_CHECKS.get(field.name)
        if check is not None:
            check(value, field.name)


def validate_embeddings(request: pb.CreateEmbeddingsRequest) -> None:
    """Raise `InvalidRequestError` for the first thing wrong with an embeddings request."""
    check_model(request.model)
    check_inputs("input", len(request.input), request.input_tokens, MAX_EMBEDDING_INPUTS, "inputs")
    if request.encoding_format and request.encoding_format not in _ENCODING_FORMATS:
        raise bad("encoding_format", f"expected float or base64, got {request.encoding_format!r}")
    if request.HasField("dimensions"):
        _check_range(request.dimensions, "dimensions", 1, MAX_DIMENSIONS)
    if request.HasField("user"):
        _check_length(request.user, "user")
    _check_json(request.extra_json, "extra_json")


class TokenList(Protocol):
    """One input given as token ids (embeddings' `TokenIds`, a legacy completion's `PromptTokens`)."""

    @property
    def ids(self) -> Sequence[int]: ...


def check_inputs(param: str, texts: int, token_lists: Sequence[TokenList], most: int, what: str) -> None:
    """An input given as strings or as lists of token ids (embeddings' `input`, a legacy completion's `prompt`):
    at least one, at most `most`, no empty or negative token list."""
    count = texts + len(token_lists)
    if count == 0:
        raise bad(param, "must not be empty")
    if count > most:
        raise bad(param, f"at most {most} {what}")
    for i, tokens in enumerate(token_lists):
        if not tokens.ids:
            raise bad(f"{param}[{i}]", "must not be empty")
        if min(tokens.ids) < 0:
            raise bad(f"{param}[{i}]", "token ids are not negative")


def check_model(model: str) -> None:
    """A model name: present, of a sane length, and not a credential (which would be logged and recorded)."""
    if not model:
        raise InvalidRequestError("model: required; name the model to use", code="missing_model", param="model")
    if len(model) > MODEL_MAX:
        raise bad("model", f"at most {MODEL_MAX} characters, got {len(model)}")
    if looks_like_credential(model):
        raise bad("model", "looks like an API key, not a model name; send keys in the Authorization header")


def _check_range(value: float, param: str, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise bad(param, f"must be between {low:g} and {high:g}, got {value:g}")


def _check_metadata(pairs: Iterable[tuple[str, str]]) -> None:
    for count, (key, value) in enumerate(pairs, 1):
        if count > METADATA_PAIRS:
            raise bad("metadata", f"at most {METADATA_PAIRS} pairs")
        if len(key) > METADATA_KEY_MAX:
            raise bad("metadata", f"keys have at most {METADATA_KEY_MAX} characters")
        if len(value) > METADATA_VALUE_MAX:
            raise bad(f"metadata.{key}", f"at most {METADATA_VALUE_MAX} characters")


def _check_message(message: pb.ChatMessage, i: int) -> None:
    """`messages[i]`. A conversation sends every earlier turn again, so this runs tens of times a request: each field
    is read once (a read is a call into upb, an empty list's loop ≈ 0.4 µs) and an error's path made only for it."""
    role = message.role
    if role not in _ROLES:
        raise bad(f"messages[{i}].role", "required: one of system, user, assistant, tool, developer, function")
    parts = message.content_parts
    if not parts and role not in _CONTENT_OPTIONAL and not message.HasField("content"):
        raise bad(f"messages[{i}].content", "required for this role")
    if role == pb.ROLE_TOOL and not message.HasField("tool_call_id"):
        raise bad(f"messages[{i}].tool_call_id", "required for a tool message")
    if parts:
        for j, part in enumerate(parts):
            _check_part(part, f"messages[{i}].content[{j}]")
    if calls := message.tool_calls:
        for j, call in enumerate(calls):
            _check_json(call.extra_json, f"messages[{i}].tool_calls[{j}].extra_json")
    if extra := message.extra_json:
        _check_json(extra, f"messages[{i}].extra_json")


def _check_part(part: pb.ContentPart, param: str) -> None:
    which = part.WhichOneof("part")
    if which is None:
        raise bad(param, "an empty content part")
    if which == "file" and not part.file.file_id and not part.file.file_data:
        raise bad(f"{param}.file", "needs a file_id or file_data")
    if which == "other_json":
        _check_json(part.other_json, f"{param}.other_json")
    elif which == "image_url":
        _check_json(part.image_url.extra_json, f"{param}.image_url.extra_json")
    _check_json(part.extra_json, f"{param}.extra_json")


def _check_json(text: str, param: str) -> None:
    """A `*_json` field, when set, holds a JSON object: what the codecs that write it back expect. The HTTP codec
    always makes one; a gRPC caller might send anything."""
    if not text:
        return
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise bad(param, "expected a JSON object as text, got text that is not JSON") from None
    if not isinstance(value, dict):
        raise bad(param, "expected a JSON object as text")


def _check_length(text: str, param: str) -> None:
    if len(text) > USER_MAX:
        raise bad(param, f"at most {USER_MAX} characters")


def _check_stop(stop: Sequence[str], param: str) -> None:
    if len(stop) > MAX_STOP:
        raise bad(param, f"at most {MAX_STOP} stop sequences")


def _check_logit_bias(bias: Mapping[str, float], param: str) -> None:
    for token, weight in bias.items():
        _check_range(weight, f"{param}.{token}", -100.0, 100.0)


def _check_tool_choice(choice: pb.ToolChoice, param: str) -> None:
    if choice.WhichOneof("choice") == "mode" and choice.mode not in _TOOL_CHOICE_MODES:
        raise bad(param, f"expected one of {', '.join(_TOOL_CHOICE_MODES)}, got {choice.mode!r}")


def _check_response_format(fmt: pb.ResponseFormat, param: str) -> None:
    if fmt.type and fmt.type not in _RESPONSE_FORMATS:
        raise bad(f"{param}.type", f"expected text, json_object or json_schema, got {fmt.type!r}")
    _check_json(fmt.json_schema.schema_json, f"{param}.json_schema.schema_json")
    _check_json(fmt.json_schema.extra_json, f"{param}.json_schema.extra_json")


def _check_tools(tools: Sequence[pb.Tool], param: str) -> None:
    for i, tool in enumerate(tools):
        _check_json(tool.extra_json, f"{param}[{i}].extra_json")
        _check_json(tool.function.parameters_json, f"{param}[{i}].function.parameters_json")
        _check_json(tool.function.extra_json, f"{param}[{i}].function.extra_json")


def _ranged(low: float, high: float) -> Callable[[float, str], None]:
    return lambda value, param: _check_range(value, param, low, high)


# What each top-level field of ChatCompletionParams must satisfy when it is set (the rest need no check).
_CHAT_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "temperature": _ranged(0.0, 2.0),
    "top_p": _ranged(0.0, 1.0),
    "presence_penalty": _ranged(-2.0, 2.0),
    "frequency_penalty": _ranged(-2.0, 2.0),
    "max_tokens": _ranged(1, 2**63 - 1),
    "max_completion_tokens": _ranged(1, 2**63 - 1),
    "n": _ranged(1, MAX_N),
    "top_logprobs": _ranged(0, 20),
    "top_k": _ranged(0, 2**63 - 1),
    "stop": _check_stop,
    "logit_bias": _check_logit_bias,
    "user": _check_length,
    "metadata": lambda pairs, _: _check_metadata(pairs.items()),
    "tool_choice": _check_tool_choice,
    "response_format": _check_response_format,
    "tools": _check_tools,
    "extra_json": _check_json,
    "thinking_json": _check_json,
    "anthropic_extra_json": _check_json,
}


# Shared with the Responses API's rules (gateway.validation_responses).
check_json, check_range = _check_json, _check_range
