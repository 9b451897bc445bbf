"""The OpenAI chat roles by name, and back: shared by the request and response codecs in both directions."""

from __future__ import annotations

from tollgate.gateway.v1 import gateway_pb2 as pb

ROLES: dict[str, pb.Role.ValueType] = {
    "system": pb.ROLE_SYSTEM,
    "user": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
    "tool": pb.ROLE_TOOL,
    "developer": pb.ROLE_DEVELOPER,
    "function": pb.ROLE_FUNCTION,
}
ROLE_NAMES: dict[int, str] = {v: k for k, v in ROLES.items()}
