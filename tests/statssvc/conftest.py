"""Fixtures for the stats server's tests: a store, and the real server on loopback with a client stub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from statssvc.server import StatsServer, start_stats_server
from statssvc.store import UsageStore
from tests.statssvc.usage_helpers import HOUR, T0, FakeClock
from tollgate.stats.v1 import stats_pb2_grpc as pb_grpc


@pytest.fixture
def clock() -> FakeClock:
    """A day after T0: records at T0 are in the past, so an unset end_time includes them."""
    return FakeClock(T0 + 24 * HOUR)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's database lives (its directory is created by the server, not here)."""
    return tmp_path / "data" / "usage.db"


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[UsageStore]:
    """An open store on a fresh file."""
    s = await UsageStore.open(tmp_path / "usage.db", clock=clock)
    yield s
    await s.close()


@pytest.fixture
async def stats_server(db_path: Path, clock: FakeClock) -> AsyncIterator[StatsServer]:
    """The stats server on 127.0.0.1, any free port."""
    server = await start_stats_server(db_path, "127.0.0.1:0", clock=clock)
    yield server
    await server.stop(0)


@pytest.fixture
async def channel(stats_server: StatsServer) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to `stats_server`."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stats_server.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.StatsServiceAsyncStub:
    """A generated StatsService client on `channel`."""
    return pb_grpc.StatsServiceStub(channel)
