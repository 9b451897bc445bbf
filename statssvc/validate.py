"""What Report and QueryUsage refuse, as messages naming the bad field (`records[3].input_tokens: ...`).

Pure functions: each returns the first problem found, or None. The servicer turns a message into INVALID_ARGUMENT.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from statssvc.aggregate import GROUP_COLUMNS
from tollgate.stats.v1 import stats_pb2 as pb

MAX_REQUEST_ID = 200  # characters
MIN_BUCKET_US = 1_000_000
MAX_BUCKETS = 100_000  # per group, over the query's window

# google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799
_TOKENS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")


def _timestamp_error(ts: Timestamp) -> str | None:
    if not _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS or not 0 <= ts.nanos < 1_000_000_000:
        return "out of the range of google.protobuf.Timestamp"
    return None


def _duration_error(d: Duration) -> str | None:
    if d.seconds < 0 or d.nanos < 0:
        return "must not be negative"
    if d.nanos >= 1_000_000_000:
        return "out of the range of google.protobuf.Duration"
    return None


def _record_problems(r: pb.UsageRecord) -> Iterator[str]:
    if not r.request_id:
        yield "request_id: must not be empty"
    elif len(r.request_id) > MAX_REQUEST_ID:
        yield f"request_id: longer than {MAX_REQUEST_ID} characters"
    if not r.HasField("start_time"):
        yield "start_time: must be set"
    elif problem := _timestamp_error(r.start_time):
        yield f"start_time: {problem}"
    for name in _TOKENS:
        if (value := getattr(r, name)) < 0:
            yield f"{name}: must not be negative (got {value})"
    if not (math.isfinite(r.cost_usd) and r.cost_usd >= 0):
        yield f"cost_usd: must be a finite number, zero or more (got {r.cost_usd})"
    for name in ("latency", "time_to_first_token"):
        if problem := _duration_error(getattr(r, name)):
            yield f"{name}: {problem}"


def record_error(r: pb.UsageRecord) -> str | None:
    """The first problem with one record, as `field: problem`; None when it can be stored."""
    return next(_record_problems(r), None)


def batch_error(records: Sequence[pb.UsageRecord]) -> str | None:
    """The first problem in a batch, as `records[i].field: problem`; one bad record refuses the whole batch."""
    for i, record in enumerate(records):
        if problem := record_error(record):
            return f"records[{i}].{problem}"
    return None


def _group_by_error(group_by: Sequence[pb.GroupBy.ValueType]) -> str | None:
    seen: set[pb.GroupBy.ValueType] = set()
    for i, dimension in enumerate(group_by):
        if dimension not in GROUP_COLUMNS:
            return f"group_by[{i}]: {dimension} is not a dimension to group by"
        if dimension in seen:
            return f"group_by[{i}]: {pb.GroupBy.Name(dimension)} is given twice"
        seen.add(dimension)
    return None


def bucket_count(start_us: int, end_us: int, width_us: int) -> int:
    """How many epoch-aligned buckets of `width_us` the window [start, end) touches."""
    if end_us <= start_us:
        return 0
    return (end_us - 1) // width_us - start_us // width_us + 1


def _bucket_error(bucket: Duration, start_us: int | None, end_us: int) -> str | None:
    if problem := _duration_error(bucket):
        return f"bucket: {problem}"
    width_us = bucket.ToMicroseconds()
    if width_us < MIN_BUCKET_US:
        return "bucket: must be at least 1s"
    count = 0 if start_us is None else bucket_count(start_us, end_us, width_us)
    if count > MAX_BUCKETS:
        return (
            f"bucket: {width_us / 1e6:g}s over this window makes {count} buckets, more than {MAX_BUCKETS}; "
            "widen the bucket or narrow the window"
        )
    return None


def _query_problems(request: pb.QueryUsageRequest, now_us: int, earliest_us: int | None) -> Iterator[str]:
    if problem := _group_by_error(request.group_by):
        yield problem
    for name in ("start_time", "end_time"):
        if request.HasField(name) and (problem := _timestamp_error(getattr(request, name))):
            yield f"{name}: {problem}"
            return  # the window below would be computed from a bad time
    start_us = request.start_time.ToMicroseconds() if request.HasField("start_time") else None
    end_us = request.end_time.ToMicroseconds() if request.HasField("end_time") else now_us
    if start_us is not None and request.HasField("end_time") and end_us < start_us:
        yield "end_time: must not be before start_time"
    first_us = start_us if start_us is not None else earliest_us  # with no start, the oldest record stored
    if request.HasField("bucket") and (problem := _bucket_error(request.bucket, first_us, end_us)):
        yield problem


def query_error(request: pb.QueryUsageRequest, now_us: int, earliest_us: int | None) -> str | None:
    """The first problem with a query; `earliest_us` (the oldest record) bounds the buckets when start is unset."""
    return next(_query_problems(request, now_us, earliest_us), None)
