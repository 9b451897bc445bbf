"""The auth server for real on 127.0.0.1, called with a generated `AuthServiceStub`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from authsvc.keyfile import KeyFile, save_key_file
from authsvc.server import SERVICE_NAME, AuthServer, start_auth_server
from authsvc.servicer import EXPIRED_KEY, INVALID_KEY, MISSING_KEY, REVOKED_KEY
from tests.authsvc.helpers import TIMEOUT, FakeClock, Keys, check, denial, eventually, new_key
from tollgate.auth.v1 import auth_pb2 as pb
from tollgate.auth.v1 import auth_pb2_grpc as pb_grpc

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


async def test_a_valid_key_gets_the_full_decision(stub: pb_grpc.AuthServiceAsyncStub, keys: Keys) -> None:
    reply = await check(stub, keys.raw["alice"])
    expected = pb.CheckResponse(
        key_id=keys.records["alice"].id,
        user="alice",
        team="ml",
        allowed_models=["gpt-4o*", "openai/**"],
        denied_models=["gpt-4o"],
        limits=pb.Limits(
            requests_per_minute=60,
            tokens_per_minute=100_000,
            concurrent_requests=4,
            budget=pb.Budget(limit_usd=50.0, period=pb.BUDGET_PERIOD_MONTH),
        ),
        labels={"env": "prod", "cost-centre": "cc-42"},
    )
    expected.cache_ttl.FromMilliseconds(12_500)
    expected.expires_at.FromDatetime(datetime(2027, 1, 1, tzinfo=UTC))
    assert reply == expected


async def test_a_bare_key_allows_everything_and_never_expires(stub: pb_grpc.AuthServiceAsyncStub, keys: Keys) -> None:
    reply = await check(stub, keys.raw["bob"])
    assert (reply.key_id, reply.user, reply.team) == (keys.records["bob"].id, "bob", "")
    assert (list(reply.allowed_models), list(reply.denied_models), dict(reply.labels)) == ([], [], {})
    assert reply.limits == pb.Limits()
    assert not reply.limits.HasField("budget")
    assert not reply.HasField("expires_at")
    assert reply.cache_ttl.ToMilliseconds() == 12_500


@pytest.mark.parametrize(
    ("api_key", "message"),
    [
        ("", MISSING_KEY),
        ("sk-proj-not-ours", INVALID_KEY),
        ("tgk_nothex_secret", INVALID_KEY),
        ("unknown-id", INVALID_KEY),
        ("wrong-secret", INVALID_KEY),
        ("expired", EXPIRED_KEY),
        ("revoked", REVOKED_KEY),
    ],
)
async def test_denials(stub: pb_grpc.AuthServiceAsyncStub, keys: Keys, api_key: str, message: str) -> None:
    if api_key == "unknown-id":
        api_key = new_key()[0]
    elif api_key == "wrong-secret":
        api_key = keys.raw["alice"][:-4] + "AAAA"
    elif api_key in keys.raw:
        api_key = keys.raw[api_key]
    assert await denial(stub, api_key) == (UNAUTHENTICATED, message)


def test_the_messages_are_the_documented_ones() -> None:
    assert MISSING_KEY == "Missing API key: send `Authorization: Bearer <key>`"
    assert (INVALID_KEY, EXPIRED_KEY, REVOKED_KEY) == ("Invalid API key", "API key expired", "API key revoked")


async def test_every_check_is_counted(stub: pb_grpc.AuthServiceAsyncStub, keys: Keys, auth_server: AuthServer) -> None:
    await check(stub, keys.raw["alice"])
    await denial(stub, "nope")
    assert auth_server.servicer.checks == 2


async def test_a_key_expires_on_the_servers_clock(
    stub: pb_grpc.AuthServiceAsyncStub, keys: Keys, clock: FakeClock
) -> None:
    await check(stub, keys.raw["alice"])
    clock.current = datetime(2027, 1, 1, tzinfo=UTC)
    assert await denial(stub, keys.raw["alice"]) == (UNAUTHENTICATED, EXPIRED_KEY)


async def test_reload_picks_up_a_new_key_and_a_revocation(
    stub: pb_grpc.AuthServiceAsyncStub, keys: Keys, auth_server: AuthServer, clock: FakeClock
) -> None:
    raw, erin = new_key("erin")
    await denial(stub, raw)
    alice = keys.records["alice"]
    revoked = dataclasses.replace(alice, revoked=clock.now())
    save_key_file(keys.path, keys.file().with_key(erin).replace(revoked))
    await eventually(lambda: auth_server.store.keys.get(erin.id) is not None)
    assert (await check(stub, raw)).user == "erin"
    assert await denial(stub, keys.raw["alice"]) == (UNAUTHENTICATED, REVOKED_KEY)


async def test_a_broken_file_keeps_the_old_keys(
    stub: pb_grpc.AuthServiceAsyncStub, keys: Keys, auth_server: AuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, "tollgate.authsvc"):
        keys.path.write_text("keys:\n  - {id: 3f2a9c0d1e2b4a5c, user: mallory}\n")
        await eventually(lambda: any("refused" in r.getMessage() for r in caplog.records))
    assert "keys[0].hash: required" in caplog.text
    assert (await check(stub, keys.raw["alice"])).user == "alice"
    raw, erin = new_key("erin")
    save_key_file(keys.path, KeyFile((erin,)))  # fixed: the next poll takes it
    await eventually(lambda: auth_server.store.keys == KeyFile((erin,)))
    assert (await check(stub, raw)).user == "erin"
    assert await denial(stub, keys.raw["alice"]) == (UNAUTHENTICATED, INVALID_KEY)


async def test_a_removed_file_keeps_the_old_keys(
    stub: pb_grpc.AuthServiceAsyncStub, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "tollgate.authsvc"):
        os.unlink(keys.path)
        await eventually(lambda: "is gone" in caplog.text)
    assert (await check(stub, keys.raw["alice"])).user == "alice"


async def test_reload_now_rereads_even_an_unchanged_file(auth_server: AuthServer) -> None:
    assert await auth_server.reload()


async def test_the_raw_key_never_reaches_the_log(
    stub: pb_grpc.AuthServiceAsyncStub, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    alice = keys.raw["alice"]
    wrong = alice[:-4] + "AAAA"
    with caplog.at_level(logging.DEBUG):
        await check(stub, alice)
        for api_key in (wrong, keys.raw["expired"], keys.raw["revoked"], "sk-secret-of-another-service", ""):
            await denial(stub, api_key)
    secrets = [k.split("_", 2)[2] for k in (alice, wrong, keys.raw["expired"], keys.raw["revoked"])]
    for secret in [*secrets, "sk-secret-of-another-service"]:
        assert secret not in caplog.text
    assert f"denied key {keys.records['revoked'].id}: revoked" in caplog.text
    assert "denied a malformed key: invalid" in caplog.text


async def test_health_and_reflection(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT
    )
    names = [s.name async for reply in call for s in reply.list_services_response.service]
    assert SERVICE_NAME == "tollgate.auth.v1.AuthService"
    assert SERVICE_NAME in names
    assert "grpc.health.v1.Health" in names


async def test_start_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await start_auth_server(tmp_path / "nope.yaml", "127.0.0.1:0")


async def test_stop_ends_reloading(keys: Keys) -> None:
    server = await start_auth_server(keys.path, "127.0.0.1:0", reload_interval=0.01)
    await server.stop(0)
    save_key_file(keys.path, KeyFile((new_key("erin")[1],)))
    await asyncio.sleep(0.1)  # ten reload intervals
    assert server.store.keys == keys.file()


async def test_expires_at_is_the_keys_expiry_even_when_soon(keys: Keys, clock: FakeClock) -> None:
    soon = clock.now() + timedelta(seconds=3)
    raw, record = new_key("erin", expires=soon)
    save_key_file(keys.path, KeyFile((record,)))
    server = await start_auth_server(keys.path, "127.0.0.1:0", cache_ttl=30, now=clock.now)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            reply = await check(pb_grpc.AuthServiceStub(channel), raw)
    finally:
        await server.stop(0)
    assert reply.expires_at.ToDatetime(tzinfo=UTC) == soon
    assert reply.cache_ttl.ToSeconds() == 30
