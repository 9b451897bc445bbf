"""An embedding reply as a plain vector: what the semantic cache compares. Kept apart from the semantic cache so that
a gateway without one never imports numpy."""

from __future__ import annotations

import base64
import struct

from tollgate.gateway.v1 import gateway_pb2 as pb


def vector_of(reply: pb.CreateEmbeddingsResponse) -> list[float]:
    """The first embedding of a reply, as floats (decoded when the provider sent base64: little-endian float32)."""
    if not reply.data:
        raise ValueError("the embedding reply has no data")
    first = reply.data[0]
    if first.values:
        return list(first.values)
    raw = base64.b64decode(first.base64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw[: len(raw) // 4 * 4]))
