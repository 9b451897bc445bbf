"""Requests of the endpoints beside chat (legacy completions, images, audio, moderations, rerank): a client's JSON →
`tollgate.gateway.v1` messages (the front door's half), and those messages → the JSON an OpenAI-compatible server
expects (the providers' half).

These messages are flat: besides a few fields with a shape of their own (a prompt given as a string, an array of
strings or token ids; rerank's documents; moderation's multi-modal input), every field is a scalar, a list of strings
or a map, read and written by the message's own descriptor, so a field added to the proto is carried without a line
here. Fields the message does not know ride in `extra_json`, never dropped. Ranges are `gateway.endpoint_rules`'.

Shapes: OpenAI's API reference (https://platform.openai.com/docs/api-reference: completions, images, audio,
moderations) and vLLM's rerank API (https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html#re-rank-api,
the Cohere/Jina shape).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from typing import Any

import orjson
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from gateway.codec.json_fields import as_bool, as_dict, as_float, as_int, as_list, as_str, bad, json_text, type_name
from gateway.codec.openai_encode import merge_extra
from gateway.errors import InvalidRequestError
from tollgate.gateway.v1 import endpoints_pb2 as ep

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Moderation's default model, as OpenAI names it: the SDK sends no `model` unless told.
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"

# Fields of the messages that are the gateway's own bookkeeping, not the API's: a client sending one by that name
# is sending an unknown field, passed on in extra_json like any other.
_INTERNAL = frozenset(
    ("extra_json", "single_prompt", "include_usage", "prompt_tokens", "single_input", "input_parts_json", "file",
     "filename", "content_type")
)  # fmt: skip
_READERS: dict[int, Callable[[object, str], object]] = {
    FieldDescriptor.TYPE_STRING: as_str,
    FieldDescriptor.TYPE_BOOL: as_bool,
    FieldDescriptor.TYPE_INT64: lambda v, p: as_int(v, p, _INT64_MIN, _INT64_MAX),
    FieldDescriptor.TYPE_DOUBLE: lambda v, p: as_float(v, p, -math.inf, math.inf),
}


def _model(body: dict[str, Any], default: str | None = None) -> str:
    model = body.get("model", default)
    if model is None:
        raise InvalidRequestError("model: required; name the model to use", code="missing_model", param="model")
    return as_str(model, "model")


def _read_fields(body: dict[str, Any], out: Message, special: Collection[str]) -> None:
    """Every field of `body` that `out` has (but `special` ones, read by the caller), checked for its JSON type;
    the rest as `extra_json`."""
    fields = out.DESCRIPTOR.fields_by_name
    extra: dict[str, Any] = {}
    for key, value in body.items():
        field = fields.get(key)
        if key in special:
            continue
        if field is None or key in _INTERNAL or (field.message_type is not None and not _is_map(field)):
            extra[key] = value
            continue
        if value is None:
            continue  # null is "not given", as OpenAI reads it
        _read_field(out, field, key, value)
    if extra:
        out.extra_json = json_text(extra, "body")  # type: ignore[attr-defined]  # every request message has it


# A field's descriptor: protobuf's pure-Python FieldDescriptor or upb's, which its stubs type apart.
Field = Any


def _is_map(field: Field) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _read_field(out: Message, field: Field, key: str, value: object) -> None:
    if _is_map(field):
        reader = _READERS[field.message_type.fields_by_name["value"].type]
        target = getattr(out, key)
        for name, item in as_dict(value, key).items():
            target[name] = reader(item, f"{key}.{name}")
    elif field.is_repeated:
        read = _READERS[field.type]
        items = [value] if isinstance(value, str) else as_list(value, key)  # `stop` may be one string
        getattr(out, key).extend(read(item, f"{key}[{i}]") for i, item in enumerate(items))
    else:
        setattr(out, key, _READERS[field.type](value, key))


def _write_fields(message: Message, body: dict[str, Any], skip: Collection[str] = ()) -> dict[str, Any]:
    """`body` with every field `message` holds (but `skip`), then its `extra_json` merged in."""
    for field, value in message.ListFields():
        name = field.name
        if name in skip or name == "extra_json" or name in body:
            continue
        if _is_map(field):
            body[name] = dict(value)
        elif field.is_repeated:
            body[name] = list(value)
        elif field.message_type is None:
            body[name] = value
    return merge_extra(body, message.extra_json)  # type: ignore[attr-defined]  # every request message has it


# ---------------------------------------------------------------------------------------------- legacy completions


def decode_completion_params(body: object) -> tuple[ep.CompletionParams, bool]:
    """A legacy completions body; the params and whether the client asked for a stream."""
    body = as_dict(body, "body")
    params = ep.CompletionParams(model=_model(body))
    _decode_prompt(body.get("prompt"), params)
    stream = body.get("stream") is not None and as_bool(body["stream"], "stream")
    if (options := body.get("stream_options")) is not None:
        options = as_dict(options, "stream_options")
        if not stream:
            raise bad("stream_options", "only allowed when stream is true")
        include = options.get("include_usage")
        params.include_usage = include is not None and as_bool(include, "stream_options.include_usage")
    _read_fields(body, params, ("model", "prompt", "stream", "stream_options"))
    return params, stream


def _decode_prompt(raw: object, params: ep.CompletionParams) -> None:
    """A string, an array of strings, an array of token ids, or an array of those (OpenAI's four forms)."""
    if raw is None:
        raise InvalidRequestError("prompt: required", code="missing_required_parameter", param="prompt")
    if isinstance(raw, str):
        params.prompt.append(raw)
        params.single_prompt = True
        return
    items = as_list(raw, "prompt", allow_empty=False)
    if all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        params.prompt_tokens.add().ids.extend(as_int(x, f"prompt[{i}]") for i, x in enumerate(items))
        params.single_prompt = True
    elif all(isinstance(x, list) for x in items):
        for i, ids in enumerate(items):
            params.prompt_tokens.add().ids.extend(
                as_int(x, f"prompt[{i}][{j}]") for j, x in enumerate(as_list(ids, f"prompt[{i}]", allow_empty=False))
            )
    else:
        params.prompt.extend(as_str(x, f"prompt[{i}]") for i, x in enumerate(items))


def encode_completion_params(params: ep.CompletionParams, model: str, *, stream: bool) -> dict[str, Any]:
    """The upstream body for `params`, asking for `model`; a stream always asks for usage (as chat does)."""
    prompt: Any
    if params.prompt_tokens:
        lists = [list(p.ids) for p in params.prompt_tokens]
        prompt = lists[0] if params.single_prompt else lists
    else:
        prompt = params.prompt[0] if params.single_prompt and params.prompt else list(params.prompt)
    body: dict[str, Any] = {"model": model, "prompt": prompt}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return _write_fields(params, body, ("prompt", "prompt_tokens", "single_prompt", "include_usage"))


# ---------------------------------------------------------------------------------------------- images


def decode_image_request(body: object) -> ep.CreateImageRequest:
    """An image generation body."""
    body = as_dict(body, "body")
    out = ep.CreateImageRequest(model=_model(body))
    if "prompt" not in body:
        raise InvalidRequestError("prompt: required", code="missing_required_parameter", param="prompt")
    _read_fields(body, out, ("model",))
    return out


def encode_image_request(request: ep.CreateImageRequest, model: str) -> dict[str, Any]:
    """The upstream body of an image generation."""
    return _write_fields(request, {"model": model, "prompt": request.prompt})


# ---------------------------------------------------------------------------------------------- audio


def decode_transcription_form(
    fields: dict[str, list[str]], file: tuple[bytes, str, str] | None
) -> ep.CreateTranscriptionRequest:
    """A transcription upload: its form fields (each as the strings sent under its name) and the file (bytes,
    filename, content type)."""
    if file is None:
        raise InvalidRequestError(
            "file: required; upload the audio file", code="missing_required_parameter", param="file"
        )
    model = fields.get("model")
    if not model:
        raise InvalidRequestError("model: required; name the model to use", code="missing_model", param="model")
    out = ep.CreateTranscriptionRequest(model=model[-1], file=file[0], filename=file[1], content_type=file[2])
    extra: dict[str, Any] = {}
    known = out.DESCRIPTOR.fields_by_name
    for key, values in fields.items():
        if key in ("model", "file"):
            continue
        field = known.get(key.removesuffix("[]"))
        if field is None or field.name in _INTERNAL:
            extra[key] = values[-1] if len(values) == 1 else values
        elif field.is_repeated:
            getattr(out, field.name).extend(values)
        else:
            setattr(out, field.name, _form_value(field, values[-1], key))
    if extra:
        out.extra_json = json_text(extra, "body")
    return out


def _form_value(field: Field, text: str, key: str) -> object:
    """A form field's text as its message field's type (forms carry only text)."""
    if field.type == FieldDescriptor.TYPE_DOUBLE:
        try:
            value = float(text)
        except ValueError:
            raise bad(key, f"expected a number, got {text[:40]!r}") from None
        return as_float(value, key, -math.inf, math.inf)
    if field.type == FieldDescriptor.TYPE_BOOL:
        if text not in ("true", "false"):
            raise bad(key, f"expected true or false, got {text[:40]!r}")
        return text == "true"
    return text


def transcription_form(request: ep.CreateTranscriptionRequest, model: str) -> list[tuple[str, str]]:
    """The upstream form fields of a transcription (the file goes beside them), repeated fields as `name[]`."""
    out: list[tuple[str, str]] = [("model", model)]
    for field, value in request.ListFields():
        name = field.name
        if name in ("model", "file", "filename", "content_type", "extra_json"):
            continue
        if field.is_repeated:
            out.extend((f"{name}[]", item) for item in value)
        elif field.type == FieldDescriptor.TYPE_DOUBLE:
            out.append((name, f"{value:g}"))
        else:
            out.append((name, str(value)))
    if request.extra_json:
        for key, value in _loads_object(request.extra_json).items():
            values = value if isinstance(value, list) else [value]
            out.extend((key, str(item)) for item in values)
    return out


def _loads_object(text: str) -> dict[str, Any]:
    value = orjson.loads(text)
    return value if isinstance(value, dict) else {}


def decode_speech_request(body: object) -> ep.StreamSpeechRequest:
    """A speech body."""
    body = as_dict(body, "body")
    out = ep.StreamSpeechRequest(model=_model(body))
    for key in ("input", "voice"):
        if key not in body:
            raise InvalidRequestError(f"{key}: required", code="missing_required_parameter", param=key)
    _read_fields(body, out, ("model",))
    return out


def encode_speech_request(request: ep.StreamSpeechRequest, model: str) -> dict[str, Any]:
    """The upstream body of a speech request."""
    return _write_fields(request, {"model": model, "input": request.input, "voice": request.voice})


# ---------------------------------------------------------------------------------------------- moderations


def decode_moderation_request(body: object) -> ep.CreateModerationRequest:
    """A moderation body; `input` is a string, an array of strings, or an array of multi-modal parts."""
    body = as_dict(body, "body")
    out = ep.CreateModerationRequest(model=_model(body, DEFAULT_MODERATION_MODEL))
    raw = body.get("input")
    if isinstance(raw, str):
        out.input.append(raw)
        out.single_input = True
    elif isinstance(raw, list) and raw and all(isinstance(x, dict) for x in raw):
        for i, part in enumerate(raw):
            as_str(part.get("type"), f"input[{i}].type")
        out.input_parts_json = json_text(raw, "input")
    elif raw is None:
        raise InvalidRequestError("input: required", code="missing_required_parameter", param="input")
    else:
        items = as_list(raw, "input", allow_empty=False)
        out.input.extend(as_str(x, f"input[{i}]") for i, x in enumerate(items))
    _read_fields(body, out, ("model", "input"))
    return out


def encode_moderation_request(request: ep.CreateModerationRequest, model: str) -> dict[str, Any]:
    """The upstream body of a moderation."""
    raw: Any
    if request.input_parts_json:
        raw = orjson.loads(request.input_parts_json)
    else:
        raw = request.input[0] if request.single_input and request.input else list(request.input)
    return merge_extra({"model": model, "input": raw}, request.extra_json)


# ---------------------------------------------------------------------------------------------- rerank


def decode_rerank_request(body: object) -> ep.RerankRequest:
    """A rerank body: `documents` as strings or `{"text": …}` objects."""
    body = as_dict(body, "body")
    out = ep.RerankRequest(model=_model(body))
    if "query" not in body:
        raise InvalidRequestError("query: required", code="missing_required_parameter", param="query")
    for i, doc in enumerate(as_list(body.get("documents"), "documents")):
        if isinstance(doc, dict):
            out.documents.append(as_str(doc.get("text"), f"documents[{i}].text"))
        elif isinstance(doc, str):
            out.documents.append(doc)
        else:
            raise bad(f"documents[{i}]", f"expected a string or an object with text, got {type_name(doc)}")
    _read_fields(body, out, ("model", "documents"))
    return out


def encode_rerank_request(request: ep.RerankRequest, model: str) -> dict[str, Any]:
    """The upstream body of a rerank."""
    return _write_fields(request, {"model": model, "query": request.query, "documents": list(request.documents)})
