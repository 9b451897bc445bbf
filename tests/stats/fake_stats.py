"""A small in-test StatsService on a real grpc.aio server: idempotent on request_id, told to fail or to be slow."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import grpc

from gateway.grpc_server import GrpcServer, start_grpc_server
from tollgate.stats.v1 import stats_pb2, stats_pb2_grpc

SERVICE_NAME = stats_pb2.DESCRIPTOR.services_by_name["StatsService"].full_name


@dataclass
class FakeStatsService(stats_pb2_grpc.StatsServiceServicer):
    """Stores records by request_id (a dict: idempotent, like the contract asks)."""

    store: dict[str, stats_pb2.UsageRecord] = field(default_factory=dict)
    accepted: int = 0
    duplicates: int = 0
    batches: list[int] = field(default_factory=list)  # the size of every Report call that reached the store
    calls: int = 0
    fail: grpc.StatusCode | None = None  # every call fails with it
    reject_ids: set[str] = field(default_factory=set)  # a batch holding one of these fails with INVALID_ARGUMENT
    delay: float = 0.0  # every call waits this long first

    async def Report(  # the name is the RPC's
        self, request: stats_pb2.ReportRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> stats_pb2.ReportResponse:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            await context.abort(self.fail, "told to fail")
        if any(r.request_id in self.reject_ids for r in request.records):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad record")
        accepted = duplicates = 0
        for record in request.records:
            if record.request_id in self.store:
                duplicates += 1
            else:
                self.store[record.request_id] = record
                accepted += 1
        self.accepted += accepted
        self.duplicates += duplicates
        self.batches.append(len(request.records))
        return stats_pb2.ReportResponse(accepted=accepted, duplicates=duplicates)

    async def QueryUsage(  # the name is the RPC's
        self, request: stats_pb2.QueryUsageRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> stats_pb2.QueryUsageResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the fake")
        raise AssertionError("abort raises")


class FakeStatsServer:
    """A `FakeStatsService` served on 127.0.0.1, stopped and started again on the same port at will."""

    def __init__(self, port: int = 0) -> None:
        self.service = FakeStatsService()
        self.port = port
        self._server: GrpcServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        def add(server: grpc.aio.Server) -> None:
            stats_pb2_grpc.add_StatsServiceServicer_to_server(self.service, server)

        self._server = await start_grpc_server(self.address, [(SERVICE_NAME, add)])
        self.port = self._server.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None


def free_port() -> int:
    """A port nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
