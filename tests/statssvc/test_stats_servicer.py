"""What the stats server refuses: a bad batch whole (nothing stored), a bad query, and its own failures, over gRPC."""

from __future__ import annotations

import math

import grpc
import pytest

from statssvc.server import StatsServer
from tests.statssvc.usage_helpers import HOUR, T0, record, window
from tollgate.stats.v1 import stats_pb2 as pb
from tollgate.stats.v1 import stats_pb2_grpc as pb_grpc


def _without_start() -> pb.UsageRecord:
    r = record("r")
    r.ClearField("start_time")
    return r


def _negative_latency() -> pb.UsageRecord:
    r = record("r")
    r.latency.FromMilliseconds(-5)
    return r


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (record(""), "records[1].request_id: must not be empty"),
        (record("x" * 201), "records[1].request_id: longer than 200 characters"),
        (record("r", input_tokens=-1), "records[1].input_tokens: must not be negative (got -1)"),
        (record("r", output_tokens=-2), "records[1].output_tokens: must not be negative"),
        (record("r", cached_tokens=-3), "records[1].cached_tokens: must not be negative"),
        (record("r", reasoning_tokens=-4), "records[1].reasoning_tokens: must not be negative"),
        (record("r", cost_usd=math.nan), "records[1].cost_usd: must be a finite number"),
        (record("r", cost_usd=-0.5), "records[1].cost_usd: must be a finite number"),
        (_without_start(), "records[1].start_time: must be set"),
        (_negative_latency(), "records[1].latency: must not be negative"),
    ],
)
async def test_a_bad_record_refuses_the_whole_batch(
    stub: pb_grpc.StatsServiceAsyncStub, stats_server: StatsServer, bad: pb.UsageRecord, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Report(pb.ReportRequest(records=[record("good"), bad, record("good-too")]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(message)
    assert (await stub.QueryUsage(window())).totals.requests == 0
    servicer = stats_server.servicer
    assert (servicer.reports, servicer.records_accepted, servicer.records_duplicate) == (0, 0, 0)


async def test_a_request_id_of_200_characters_is_fine(stub: pb_grpc.StatsServiceAsyncStub) -> None:
    answer = await stub.Report(pb.ReportRequest(records=[record("x" * 200)]))
    assert answer.accepted == 1


def _bucketed(width_s: float, start: float | None = None, end: float | None = None) -> pb.QueryUsageRequest:
    q = window(start, end)
    q.bucket.FromMicroseconds(round(width_s * 1_000_000))
    return q


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (window(T0 + HOUR, T0), "end_time: must not be before start_time"),
        (window(group_by=[pb.GROUP_BY_UNSPECIFIED]), "group_by[0]: 0 is not a dimension"),
        (window(group_by=[pb.GROUP_BY_USER, 42]), "group_by[1]: 42 is not a dimension"),
        (window(group_by=[pb.GROUP_BY_USER, pb.GROUP_BY_USER]), "group_by[1]: GROUP_BY_USER is given twice"),
        (_bucketed(0.5, T0, T0 + HOUR), "bucket: must be at least 1s"),
        (_bucketed(-60, T0, T0 + HOUR), "bucket: must not be negative"),
        (_bucketed(1, T0, T0 + 2 * 24 * HOUR), "bucket: 1s over this window makes 172800 buckets, more than 100000"),
    ],
)
async def test_a_bad_query_is_refused(
    stub: pb_grpc.StatsServiceAsyncStub, query: pb.QueryUsageRequest, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.QueryUsage(query)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(message)


async def test_with_no_start_the_oldest_record_bounds_the_buckets(stub: pb_grpc.StatsServiceAsyncStub) -> None:
    query = _bucketed(1)
    await stub.QueryUsage(query)  # an empty store: no bucket at all
    await stub.Report(pb.ReportRequest(records=[record("recent", at=T0 + 23 * HOUR)]))
    await stub.QueryUsage(query)  # an hour of 1s buckets
    await stub.Report(pb.ReportRequest(records=[record("old", at=T0 - 30 * 24 * HOUR)]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.QueryUsage(query)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "widen the bucket or narrow the window" in (caught.value.details() or "")


async def test_a_failure_is_internal_and_says_nothing_of_itself(
    stub: pb_grpc.StatsServiceAsyncStub, stats_server: StatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    await stats_server.store.close()  # every store call now raises RuntimeError("the usage store is closed")
    for call in (stub.Report(pb.ReportRequest(records=[record("a")])), stub.QueryUsage(window())):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert caught.value.details() == "internal error in the stats server"
    assert "the usage store is closed" in caplog.text  # the traceback is in the log instead
