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
from collections.abc import Iterable

import orjson
from google.protobuf.message import Message

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

_FLOAT_RANGES = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
_INT_RANGES = {
    "max_tokens": (1, 2**63 - 1),
    "max_completion_tokens": (1, 2**63 - 1),
    "n": (1, MAX_N),
    "top_logprobs": (0, 20),
    "top_k": (0, 2**63 - 1),
}
_TOOL_CHOICE_MODES = ("none", "auto", "required")
_RESPONSE_FORMATS = ("text", "json_object", "json_schema")
_ENCODING_FORMATS = ("float", "base64")
_CONTENT_OPTIONAL = (pb.ROLE_ASSISTANT,)  # an assistant turn may be tool calls alone


def bad(param: str, message: str) -> InvalidRequestError:
    """An invalid-parameter error naming the field (the same shape the codecs raise for a bad JSON type)."""
    return InvalidRequestError(f"{param}: {message}", code="invalid_parameter", param=param)


def validate_chat(params: pb.ChatCompletionParams) -> None:
    """Raise `InvalidRequestError` for the first thing wrong with a chat request (or a token count's)."""
    check_model(params.model)
    if not params.messages:
        raise bad("messages", "must not be empty")
    for i, message in enumerate(params.messages):
        _check_message(message, f"messages[{i}]")
    _check_numbers(params)
    if len(params.stop) > MAX_STOP:
        raise bad("stop", f"at most {MAX_STOP} stop sequences")
    for token, weight in params.logit_bias.items():
        _check_range(weight, f"logit_bias.{token}", -100.0, 100.0)
    if params.HasField("user") and len(params.user) > USER_MAX:
        raise bad("user", f"at most {USER_MAX} characters")
    _check_metadata(params.metadata.items())
    if params.tool_choice.WhichOneof("choice") == "mode" and params.tool_choice.mode not in _TOOL_CHOICE_MODES:
        raise bad("tool_choice", f"expected one of {', '.join(_TOOL_CHOICE_MODES)}, got {params.tool_choice.mode!r}")
    kind = params.response_format.type
    if kind and kind not in _RESPONSE_FORMATS:
        raise bad("response_format.type", f"expected text, json_object or json_schema, got {kind!r}")
    check_json_fields(params, "")


def validate_embeddings(request: pb.CreateEmbeddingsRequest) -> None:
    """Raise `InvalidRequestError` for the first thing wrong with an embeddings request."""
    check_model(request.model)
    count = len(request.input) + len(request.input_tokens)
    if count == 0:
        raise bad("input", "must not be empty")
    if count > MAX_EMBEDDING_INPUTS:
        raise bad("input", f"at most {MAX_EMBEDDING_INPUTS} inputs")
    for i, tokens in enumerate(request.input_tokens):
        if not tokens.ids:
            raise bad(f"input[{i}]", "must not be empty")
        if min(tokens.ids) < 0:
            raise bad(f"input[{i}]", "token ids are not negative")
    if request.encoding_format and request.encoding_format not in _ENCODING_FORMATS:
        raise bad("encoding_format", f"expected float or base64, got {request.encoding_format!r}")
    if request.HasField("dimensions"):
        _check_range(request.dimensions, "dimensions", 1, MAX_DIMENSIONS)
    if request.HasField("user") and len(request.user) > USER_MAX:
        raise bad("user", f"at most {USER_MAX} characters")
    check_json_fields(request, "")


def check_json_fields(message: Message, path: str) -> None:
    """Every `*_json` field set in `message` (at any depth) holds a JSON object, as the codecs that write it back
    expect; the HTTP codec always makes one, a gRPC caller might not."""
    for field, value in message.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        kind = field.message_type
        if kind is not None and not kind.GetOptions().map_entry:
            if field.is_repeated:
                for i, item in enumerate(value):
                    check_json_fields(item, f"{name}[{i}]")
            else:
                check_json_fields(value, name)
        elif field.name.endswith("_json") and isinstance(value, str):
            try:
                parsed = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise bad(name, "expected a JSON object as text, got text that is not JSON") from None
            if not isinstance(parsed, dict):
                raise bad(name, "expected a JSON object as text")


def check_model(model: str) -> None:
    """A model name: present, of a sane length, and not a credential (which would be logged and recorded)."""
    if not model:
        raise InvalidRequestError("model: required; name the model to use", code="missing_model", param="model")
    if len(model) > MODEL_MAX:
        raise bad("model", f"at most {MODEL_MAX} characters, got {len(model)}")
    if looks_like_credential(model):
        raise bad("model", "looks like an API key, not a model name; send keys in the Authorization header")


def _check_numbers(params: pb.ChatCompletionParams) -> None:
    # HasField is typed with the literal field names; these tables hold exactly such names.
    for key, (low, high) in _FLOAT_RANGES.items():
        if params.HasField(key):  # type: ignore[arg-type]
            _check_range(getattr(params, key), key, low, high)
    for key, (ilow, ihigh) in _INT_RANGES.items():
        if params.HasField(key):  # type: ignore[arg-type]
            _check_range(getattr(params, key), key, ilow, ihigh)


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


def _check_message(message: pb.ChatMessage, param: str) -> None:
    if message.role not in pb.Role.values() or message.role == pb.ROLE_UNSPECIFIED:
        raise bad(f"{param}.role", "required: one of system, user, assistant, tool, developer, function")
    has_content = message.HasField("content") or len(message.content_parts) > 0
    if not has_content and message.role not in _CONTENT_OPTIONAL:
        raise bad(f"{param}.content", "required for this role")
    if message.role == pb.ROLE_TOOL and not message.HasField("tool_call_id"):
        raise bad(f"{param}.tool_call_id", "required for a tool message")
    for j, part in enumerate(message.content_parts):
        which = part.WhichOneof("part")
        if which is None:
            raise bad(f"{param}.content[{j}]", "an empty content part")
        if which == "file" and not part.file.file_id and not part.file.file_data:
            raise bad(f"{param}.content[{j}].file", "needs a file_id or file_data")
