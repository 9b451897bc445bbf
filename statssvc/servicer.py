"""`StatsServicer`: tollgate.stats.v1.StatsService over grpc.aio, in front of a `UsageStore`.

A bad request is refused whole with INVALID_ARGUMENT naming the field; anything unexpected is logged with its
traceback and answered INTERNAL with a generic message, since grpc.aio would otherwise send the exception's text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Any, NoReturn, TypeVar

import grpc

from statssvc.store import Clock, UsageStore
from statssvc.validate import batch_error, query_error
from tollgate.stats.v1 import stats_pb2 as pb
from tollgate.stats.v1 import stats_pb2_grpc as pb_grpc

log = logging.getLogger("tollgate.stats")
T = TypeVar("T")

Context = grpc.aio.ServicerContext[Any, Any]


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


async def _guarded(context: Context, method: str, call: Awaitable[T]) -> T:
    """Await one call's work: its own aborts pass through, anything else is logged and answered INTERNAL."""
    try:
        return await call
    except grpc.aio.AbortError:
        raise  # a refusal the method chose (INVALID_ARGUMENT), already on its way to the client
    except Exception:
        log.exception("%s failed", method)
        await _abort(context, grpc.StatusCode.INTERNAL, "internal error in the stats server")


class StatsServicer(pb_grpc.StatsServiceServicer):
    """Stores Report batches in `store` and answers QueryUsage from it; counts what it stored."""

    def __init__(self, store: UsageStore, *, clock: Clock = time.time) -> None:
        self._store = store
        self._clock = clock
        self.reports = 0  # Report calls answered OK
        self.records_accepted = 0
        self.records_duplicate = 0

    async def Report(self, request: pb.ReportRequest, context: Context) -> pb.ReportResponse:  # the proto's name
        """Validate the whole batch, then store it in one transaction (idempotent on request_id)."""
        return await _guarded(context, "Report", self._report(request, context))

    async def QueryUsage(self, request: pb.QueryUsageRequest, context: Context) -> pb.QueryUsageResponse:
        """Validate the query (window, dimensions, bucket count), then sum it."""
        return await _guarded(context, "QueryUsage", self._query_usage(request, context))

    async def _report(self, request: pb.ReportRequest, context: Context) -> pb.ReportResponse:
        if problem := batch_error(request.records):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem)
        accepted, duplicates = await self._store.insert(request.records)
        self.reports += 1
        self.records_accepted += accepted
        self.records_duplicate += duplicates
        log.debug("report: %d accepted, %d duplicates", accepted, duplicates)
        return pb.ReportResponse(accepted=accepted, duplicates=duplicates)

    async def _query_usage(self, request: pb.QueryUsageRequest, context: Context) -> pb.QueryUsageResponse:
        # Only a bucketed query with no start needs the oldest record, to bound how many buckets it makes.
        unbounded = request.HasField("bucket") and not request.HasField("start_time")
        earliest = await self._store.earliest() if unbounded else None
        if problem := query_error(request, int(self._clock() * 1_000_000), earliest):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem)
        return await self._store.query(request)
