"""The admin API: `GET /admin/backends` on the front door (both modes) and `AdminService.ListBackends` over gRPC,
refused without the configured token, and refused to everyone when no token is configured."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import grpc
import openai
import pytest

from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.conftest import UPSTREAM_KEY, RunningGateway, StartGateway
from tollgate.gateway.v1 import admin_pb2, admin_pb2_grpc

TOKEN = "admin-token-0123456789"
CONFIG = """
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
{admin}
routing: {{health: {{consecutive_failures: 2, ejection_base: 30s}}}}
backends:
  - {{name: a, provider: openai, base_url: "{first}", api_key: {key}}}
  - {{name: b, provider: openai, base_url: "{second}", api_key: {key}}}
models:
  - {{name: m, targets: [{{backend: a, model: gpt-4o-mini, weight: 1000000}}, {{backend: b, model: gpt-4o-mini}}]}}
  - {{name: n, targets: [{{backend: a, model: gpt-4o-mini}}]}}
"""


@pytest.fixture
async def second() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=UPSTREAM_KEY) as fake:
        yield fake


async def start(start_gateway: StartGateway, first: FakeOpenAI, second: FakeOpenAI, admin: str) -> RunningGateway:
    return await start_gateway(
        CONFIG.format(admin=admin, first=first.base_url, second=second.base_url, key=UPSTREAM_KEY)
    )


async def get_backends(gateway: RunningGateway, token: str | None) -> tuple[int, dict]:  # type: ignore[type-arg]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(gateway.http_url + "/admin/backends", headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def test_without_a_configured_token_nobody_gets_in(
    start_gateway: StartGateway, upstream: FakeOpenAI, second: FakeOpenAI
) -> None:
    gateway = await start(start_gateway, upstream, second, "")
    for token in (None, "anything", TOKEN):
        status, body = await get_backends(gateway, token)
        assert status == 403 and body["error"]["code"] == "admin_disabled"


async def test_a_wrong_or_missing_token_is_a_401(
    start_gateway: StartGateway, upstream: FakeOpenAI, second: FakeOpenAI
) -> None:
    gateway = await start(start_gateway, upstream, second, f"admin: {{token: {TOKEN}}}")
    for token in (None, "sk-client", TOKEN + "x"):
        status, body = await get_backends(gateway, token)
        assert status == 401 and body["error"]["code"] == "invalid_admin_token"


async def test_the_report_shows_an_ejected_target(
    start_gateway: StartGateway, upstream: FakeOpenAI, second: FakeOpenAI
) -> None:
    gateway = await start(start_gateway, upstream, second, f"admin: {{token: {TOKEN}}}")
    status, body = await get_backends(gateway, TOKEN)
    assert status == 200
    assert [(t["backend"], t["state"], t["served_models"]) for t in body["data"]] == [
        ("a", "closed", ["m", "n"]),
        ("b", "closed", ["m"]),
    ]
    upstream.add_fault(Fault(status=500, times=2))
    api = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0)
    for _ in range(3):
        await api.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    _, body = await get_backends(gateway, TOKEN)
    a, b = body["data"]
    assert (a["state"], a["available"], a["ejections"], a["consecutive_failures"]) == ("open", False, 1, 0)
    assert 29 < a["retry_in_seconds"] <= 30
    assert a["last_error"].startswith("upstream_error: backend 'a' answered 500")
    assert (b["state"], b["window_requests"], b["window_failures"]) == ("closed", 3, 0)
    assert b["latency_ms"] > 0

    # The same report over gRPC, straight from the engine.
    async with grpc.aio.insecure_channel(gateway.grpc_address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        reply = await stub.ListBackends(
            admin_pb2.ListBackendsRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),)
        )
        assert [(t.backend, t.state) for t in reply.targets] == [("a", "open"), ("b", "closed")]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListBackends(admin_pb2.ListBackendsRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_engine_served_without_a_reloader_refuses_reload(
    start_gateway: StartGateway, upstream: FakeOpenAI, second: FakeOpenAI
) -> None:
    # The test harness serves a bare EngineCore (no config file behind it); `tollgate` always has a reloader
    # (tests/e2e/test_reload.py).
    gateway = await start(start_gateway, upstream, second, f"admin: {{token: {TOKEN}}}")
    async with grpc.aio.insecure_channel(gateway.grpc_address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Reload(admin_pb2.ReloadRequest(), metadata=[("authorization", f"Bearer {TOKEN}")])
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "no configuration to reload" in (info.value.details() or "")
