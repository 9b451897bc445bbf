"""An embedding reply as plain vectors: what the semantic cache and semantic route rules compare. Kept apart from
the semantic cache so that a gateway without one never imports numpy."""

from __future__ import annotations

import base64
import struct

from tollgate.gateway.v1 import gateway_pb2 as pb


def vector_of(reply: pb.CreateEmbeddingsResponse) -> list[float]:
    """The first embedding of a reply, as floats."""
    if not reply.data:
        raise ValueError("the embedding reply has no data")
    return _floats(reply.data[0])


def vectors_of(reply: pb.CreateEmbeddingsResponse) -> list[list[float]]:
    """Every embedding of a reply, in input order, as floats."""
    return [_floats(item) for item in sorted(reply.data, key=lambda item: item.index)]


def _floats(item: pb.Embedding) -> list[float]:
    # Decoded when the provider sent base64: little-endian float32.
    if item.values:
        return list(item.values)
    raw = base64.b64decode(item.base64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw[: len(raw) // 4 * 4]))
