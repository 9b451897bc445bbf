"""Fixtures for the auth server's tests: a fake clock, a key file with one key of each kind, the real server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from authsvc.keyfile import save_key_file
from authsvc.server import AuthServer, start_auth_server
from tests.authsvc.helpers import START, FakeClock, Keys, full_record_fields, new_key
from tollgate.auth.v1 import auth_pb2_grpc as pb_grpc


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    """A key file with a full key (alice), a bare one (bob), an expired one and a revoked one."""
    made = {
        "alice": new_key("alice", **full_record_fields()),
        "bob": new_key("bob"),
        "expired": new_key("carol", expires=START - timedelta(days=1)),
        "revoked": new_key("dave", revoked=START - timedelta(hours=1)),
    }
    path = tmp_path / "keys.yaml"
    result = Keys(path, {n: raw for n, (raw, _) in made.items()}, {n: rec for n, (_, rec) in made.items()})
    save_key_file(path, result.file())
    return result


@pytest.fixture
async def auth_server(keys: Keys, clock: FakeClock) -> AsyncIterator[AuthServer]:
    """The auth server on 127.0.0.1, any free port, re-reading its key file every 20 ms."""
    server = await start_auth_server(keys.path, "127.0.0.1:0", cache_ttl=12.5, reload_interval=0.02, now=clock.now)
    yield server
    await server.stop(0)


@pytest.fixture
async def channel(auth_server: AuthServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{auth_server.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.AuthServiceAsyncStub:
    """A generated AuthService client."""
    return pb_grpc.AuthServiceStub(channel)
