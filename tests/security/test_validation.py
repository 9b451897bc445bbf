"""`gateway.validation` on messages only a gRPC caller can make; and a guard that every `*_json` field anywhere in a
request message is checked, so a field added to the protos later cannot slip through unchecked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.errors import InvalidRequestError
from gateway.validation import validate_chat, validate_embeddings
from tollgate.gateway.v1 import gateway_pb2 as pb

Path = tuple[FieldDescriptor, ...]


def json_paths(descriptor: Descriptor, seen: tuple[str, ...] = ()) -> Iterator[Path]:
    """Every path from `descriptor` to a string field named `*_json`."""
    for field in descriptor.fields:
        kind = field.message_type
        if kind is not None and not kind.GetOptions().map_entry and kind.full_name not in seen:
            for rest in json_paths(kind, (*seen, kind.full_name)):
                yield (field, *rest)
        elif field.name.endswith("_json") and field.type == FieldDescriptor.TYPE_STRING:
            yield (field,)


def set_path(message: Message, path: Path, text: str) -> None:
    *walk, last = path
    for field in walk:
        if field.is_repeated:
            items = getattr(message, field.name)
            message = items[0] if len(items) else items.add()
        else:
            message = getattr(message, field.name)
            message.SetInParent()
    setattr(message, last.name, text)
    if isinstance(message, pb.ContentPart) and message.WhichOneof("part") is None:
        message.text = "x"  # a part must be something; its extra_json is what is under test


def chat() -> pb.ChatCompletionParams:
    return pb.ChatCompletionParams(model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hi")])


CHAT_PATHS = list(json_paths(pb.ChatCompletionParams.DESCRIPTOR))


def test_the_request_messages_have_json_fields_to_guard() -> None:
    assert len(CHAT_PATHS) >= 12  # params, messages, parts, images, tools, functions, tool calls, schemas…


@pytest.mark.parametrize("path", CHAT_PATHS, ids=lambda path: ".".join(f.name for f in path))
@pytest.mark.parametrize("text", ["not json", "[1]", "null"])
def test_every_json_field_of_a_chat_request_is_checked(path: Path, text: str) -> None:
    params = chat()
    set_path(params, path, '{"ok": true}')
    validate_chat(params)  # an object is fine
    set_path(params, path, text)
    with pytest.raises(InvalidRequestError) as caught:
        validate_chat(params)
    assert caught.value.param is not None and caught.value.param.endswith(path[-1].name)


@pytest.mark.parametrize("path", list(json_paths(pb.CreateEmbeddingsRequest.DESCRIPTOR)), ids=str)
def test_every_json_field_of_an_embeddings_request_is_checked(path: Path) -> None:
    request = pb.CreateEmbeddingsRequest(model="m", input=["x"])
    set_path(request, path, "not json")
    with pytest.raises(InvalidRequestError):
        validate_embeddings(request)


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (pb.ChatMessage(role=pb.ROLE_UNSPECIFIED, content="x"), "messages[0].role"),
        (pb.ChatMessage(role=99, content="x"), "messages[0].role"),  # type: ignore[arg-type]
        (pb.ChatMessage(role=pb.ROLE_USER, content_parts=[pb.ContentPart()]), "messages[0].content[0]"),
        (pb.ChatMessage(role=pb.ROLE_USER), "messages[0].content"),
    ],
)
def test_what_only_grpc_can_send(message: pb.ChatMessage, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        validate_chat(pb.ChatCompletionParams(model="m", messages=[message]))
    assert caught.value.param == param
