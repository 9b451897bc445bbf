"""The stats server for real on loopback: idempotent Report, QueryUsage, health, reflection, and restarts."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from statssvc.server import SERVICE_NAME, StatsServer, start_stats_server
from tests.statssvc.usage_helpers import T0, FakeClock, record, window
from tollgate.stats.v1 import stats_pb2 as pb
from tollgate.stats.v1 import stats_pb2_grpc as pb_grpc


async def test_a_batch_sent_twice_is_counted_once(
    stub: pb_grpc.StatsServiceAsyncStub, stats_server: StatsServer
) -> None:
    batch = pb.ReportRequest(records=[record("a", cost_usd=0.5), record("b", cost_usd=0.25)])
    first = await stub.Report(batch)
    again = await stub.Report(batch)
    assert (first.accepted, first.duplicates) == (2, 0)
    assert (again.accepted, again.duplicates) == (0, 2)
    servicer = stats_server.servicer
    assert (servicer.reports, servicer.records_accepted, servicer.records_duplicate) == (2, 2, 2)
    totals = (await stub.QueryUsage(window())).totals
    assert totals.requests == 2 and totals.cost_usd == pytest.approx(0.75)


async def test_query_usage_groups_and_filters(stub: pb_grpc.StatsServiceAsyncStub) -> None:
    records = [
        record("1", user="alice", requested_model="gpt-4o", cost_usd=1.0, input_tokens=10),
        record("2", user="alice", cost_usd=0.1, input_tokens=20),
        record("3", user="bob", cost_usd=0.2, outcome=pb.OUTCOME_FAILED),
    ]
    await stub.Report(pb.ReportRequest(records=records))
    answer = await stub.QueryUsage(window(T0, T0 + 60, group_by=[pb.GROUP_BY_USER, pb.GROUP_BY_MODEL]))
    assert [(list(g.keys), g.totals.requests) for g in answer.groups] == [
        (["alice", "gpt-4o"], 1),
        (["bob", "gpt-4o-mini"], 1),
        (["alice", "gpt-4o-mini"], 1),
    ]
    assert (answer.totals.requests, answer.totals.errors, answer.totals.input_tokens) == (3, 1, 30)
    only_alice = await stub.QueryUsage(window(user="alice"))
    assert only_alice.totals.requests == 2


async def test_health_is_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(channel: grpc.aio.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = [s.name async for answer in call for s in answer.list_services_response.service]
    assert SERVICE_NAME == "tollgate.stats.v1.StatsService"
    assert SERVICE_NAME in names


async def test_records_survive_a_restart(db_path: Path, clock: FakeClock) -> None:
    assert not db_path.parent.exists()  # the server creates the directory
    for round_ in range(2):
        server = await start_stats_server(db_path, "127.0.0.1:0", clock=clock)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = pb_grpc.StatsServiceStub(channel)
                answer = await stub.Report(pb.ReportRequest(records=[record("a"), record(f"round-{round_}")]))
                assert (answer.accepted, answer.duplicates) == ((2, 0) if round_ == 0 else (1, 1))
                assert (await stub.QueryUsage(window())).totals.requests == 2 + round_
        finally:
            await server.stop(1.0)


async def test_stop_closes_the_store(stats_server: StatsServer) -> None:
    await stats_server.stop(0)
    with pytest.raises(RuntimeError, match="closed"):
        await stats_server.store.query(window())
