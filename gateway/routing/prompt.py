"""What route rules read of a chat request: its text (the last user message, or the conversation) and the
features it uses (tools, images, audio, a JSON schema)."""

from __future__ import annotations

from tollgate.gateway.v1 import gateway_pb2 as pb

_USER = pb.ROLE_USER


def _message_text(message: pb.ChatMessage) -> str:
    if message.content_parts:
        return "\n".join(part.text for part in message.content_parts if part.HasField("text"))
    return message.content


def prompt_text(params: pb.ChatCompletionParams, which: str) -> str:
    """The last user message (`last_user`), or every message's text in order (`conversation`); "" when none."""
    if which == "conversation":
        return "\n".join(text for text in (_message_text(m) for m in params.messages) if text)
    for message in reversed(params.messages):
        if message.role == _USER:
            return _message_text(message)
    return ""


def _parts(params: pb.ChatCompletionParams, kind: str) -> bool:
    return any(part.WhichOneof("part") == kind for message in params.messages for part in message.content_parts)


def uses(params: pb.ChatCompletionParams, feature: str) -> bool:
    """Whether the request uses `feature` (one of gateway.config.routing.PROMPT_FEATURES)."""
    if feature == "tools":
        return len(params.tools) > 0
    if feature == "images":
        return _parts(params, "image_url")
    if feature == "audio":
        return _parts(params, "input_audio") or "audio" in params.modalities
    return params.response_format.type == "json_schema"  # "json_schema"
