"""How usage records travel to a `StatsService`: the Report method, its request built from serialized records,
the channel's options, and which statuses are worth a retry."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from gateway.config.model import StatsConfig
from tollgate.stats.v1 import stats_pb2

REPORT_METHOD = f"/{stats_pb2.DESCRIPTOR.services_by_name['StatsService'].full_name}/Report"
MAX_BATCH_BYTES = 1 << 20  # well under gRPC's default 4 MiB message limit
_DETAILS_MAX = 200

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)


def channel_options(config: StatsConfig) -> list[tuple[str, int]]:
    """Reconnect on our own retry cadence, not grpc's (which backs off to 2 minutes), so recovery is seen promptly."""
    backoff_ms = max(100, int(config.retry_max * 1000))
    return [
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.enable_retries", 0),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", backoff_ms),
    ]


def encode_report_request(payloads: Iterable[bytes]) -> bytes:
    """A serialized ReportRequest of serialized UsageRecords: each one is field 1, length-delimited."""
    parts: list[bytes] = []
    for payload in payloads:
        size = len(payload)
        if size < 0x80:
            parts.append(bytes((0x0A, size)))
        elif size < 0x4000:
            parts.append(bytes((0x0A, (size & 0x7F) | 0x80, size >> 7)))
        else:
            parts.append(b"\x0a" + _varint(size))
        parts.append(payload)
    return b"".join(parts)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def as_is(request: bytes) -> bytes:
    """The request serializer for a request that is already bytes."""
    return request


def details(error: grpc.aio.AioRpcError) -> str:
    """An error's details, bounded for a log line."""
    return (error.details() or "")[:_DETAILS_MAX]
