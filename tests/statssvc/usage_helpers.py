"""Helpers for the stats server's tests: usage records built in one line, and a clock that stands still."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from tollgate.stats.v1 import stats_pb2 as pb

T0 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()  # midnight, so hour buckets start on it
HOUR = 3600.0


class FakeClock:
    """Seconds since the epoch, moved only by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(request_id: str, at: float = T0, **fields: object) -> pb.UsageRecord:
    """A completed chat record started at `at` (epoch seconds), with `fields` set on top."""
    r = pb.UsageRecord(
        request_id=request_id,
        operation="chat",
        requested_model="gpt-4o-mini",
        backend="openai",
        provider="openai",
        provider_model="gpt-4o-mini-2024-07-18",
        outcome=pb.OUTCOME_COMPLETED,
        http_status=200,
        attempts=1,
    )
    r.start_time.FromMicroseconds(round(at * 1_000_000))
    r.latency.FromMilliseconds(120)
    for name, value in fields.items():
        if name == "labels":
            r.labels.update(value)  # type: ignore[call-overload]  # a dict in the tests
        else:
            setattr(r, name, value)
    return r


def window(start: float | None = None, end: float | None = None, **fields: object) -> pb.QueryUsageRequest:
    """A QueryUsageRequest over [start, end) (epoch seconds), with `fields` set on top."""
    q = pb.QueryUsageRequest(**fields)  # type: ignore[arg-type]  # keyword fields of the message
    if start is not None:
        q.start_time.FromMicroseconds(round(start * 1_000_000))
    if end is not None:
        q.end_time.FromMicroseconds(round(end * 1_000_000))
    return q


def seconds(ts: Timestamp) -> float:
    """A Timestamp as epoch seconds."""
    return ts.ToMicroseconds() / 1e6
