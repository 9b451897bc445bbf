"""What gRPC puts on HTTP/2 (PROTOCOL-HTTP2), for both ends of tollgate's own gRPC connections (`gateway.http2`): a
message is its compressed flag and length, then its bytes (`MAX_MESSAGE` at most taken); metadata is the header
fields that are neither pseudo-headers nor gRPC's own, a `-bin` key's value in base64; a call that ends otherwise
than OK is, to its caller, the `grpc.aio.AioRpcError` a grpc.aio call would have raised.
"""

from __future__ import annotations

import base64
import struct

import grpc

MESSAGE_PREFIX = struct.Struct(">BI")  # a gRPC message's compressed flag and length
MAX_MESSAGE = 64 << 20  # the largest gRPC message taken (grpc.aio's max_receive_message_length, as tollgate sets it)
Metadata = tuple[tuple[str, str | bytes], ...]  # HTTP/2 metadata: a `-bin` key's value is bytes


def grpc_message(data: bytes) -> bytes:
    """`data` as a gRPC message on the wire: uncompressed, its length before it."""
    return MESSAGE_PREFIX.pack(0, len(data)) + data


def whole_messages(buffer: bytearray, limit: int) -> tuple[list[tuple[int, bytes]], int]:
    """The whole gRPC messages at the start of `buffer` (compressed flag, bytes), taken out of it, and the length the
    next announces when that is over `limit` (else 0); what is left in `buffer` is a message not yet whole."""
    messages: list[tuple[int, bytes]] = []
    at, size = 0, len(buffer)
    too_long = 0
    while size - at >= 5:
        compressed, length = MESSAGE_PREFIX.unpack_from(buffer, at)
        if length > limit:
            too_long = length
            break
        if size - at - 5 < length:
            break
        messages.append((compressed, bytes(buffer[at + 5 : at + 5 + length])))
        at += 5 + length
    del buffer[:at]
    return messages, too_long


_RESERVED = {
    b"content-type",
    b"te",
    b"grpc-status",
    b"grpc-message",
    b"grpc-encoding",
    b"grpc-accept-encoding",
    b"grpc-timeout",
}


def metadata_of(fields: list[tuple[bytes, bytes]]) -> Metadata:
    """The gRPC metadata in a header block: every field but the pseudo-headers and gRPC's own; `-bin` values decoded
    (ValueError for bad base64)."""
    pairs: list[tuple[str, str | bytes]] = []
    for name, value in fields:
        if name.startswith(b":") or name in _RESERVED:
            continue
        key = name.decode("ascii", "replace")
        if key.endswith("-bin"):
            pairs.append((key, base64.b64decode(value + b"=" * (-len(value) % 4))))
        else:
            pairs.append((key, value.decode("utf-8", "replace")))
    return tuple(pairs)


def rpc_error(
    code: grpc.StatusCode, details: str, initial: Metadata = (), trailing: Metadata = ()
) -> grpc.aio.AioRpcError:
    """The error a grpc.aio call ending so would raise."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(*initial), grpc.aio.Metadata(*trailing), details, "")
