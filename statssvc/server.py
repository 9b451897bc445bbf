"""The stats server: `StatsService`, `grpc.health.v1` and reflection on one port, over one SQLite file."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.config.tls import ServerTLS
from gateway.grpc_server import GrpcServer, start_grpc_server
from statssvc.servicer import StatsServicer
from statssvc.store import Clock, UsageStore
from tollgate.stats.v1 import stats_pb2 as pb
from tollgate.stats.v1 import stats_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StatsService"].full_name


class StatsServer:
    """A running stats server; `stop` drains calls, then closes the store."""

    def __init__(self, grpc_server: GrpcServer, servicer: StatsServicer, store: UsageStore) -> None:
        self.grpc_server = grpc_server
        self.servicer = servicer
        self.store = store

    @property
    def port(self) -> int:
        """The port it listens on (the chosen one when the address said port 0)."""
        return self.grpc_server.port

    async def stop(self, grace: float) -> None:
        """Health NOT_SERVING, let in-flight calls finish for up to `grace` seconds, then close the database."""
        try:
            await self.grpc_server.stop(grace)
        finally:
            await self.store.close()


async def start_stats_server(
    db_path: str | Path, address: str, *, clock: Clock = time.time, tls: ServerTLS | None = None
) -> StatsServer:
    """Open (or create) the database at `db_path` and serve it on `address` (`host:port`, port 0 for any)."""
    if str(db_path) != ":memory:":
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    store = await UsageStore.open(db_path, clock=clock)
    servicer = StatsServicer(store, clock=clock)
    try:
        grpc_server = await start_grpc_server(
            address,
            [(SERVICE_NAME, lambda server: pb_grpc.add_StatsServiceServicer_to_server(servicer, server))],
            tls=tls,
        )
    except BaseException:
        await store.close()
        raise
    return StatsServer(grpc_server, servicer, store)
