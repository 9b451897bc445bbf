"""Every tollgate gRPC server answers an undecodable request INVALID_ARGUMENT with a fixed message, logs it at most
once a minute, and never as an ERROR with a traceback: the engine (GatewayService, AdminService), the reference auth
server and the reference stats server, unary and streaming methods alike."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from authsvc.keyfile import KeyFile, save_key_file
from authsvc.server import start_auth_server
from gateway.assemble import assemble
from gateway.config import parse_config
from gateway.engine.server import start_engine_server
from gateway.grpc_guard import UNDECODABLE_MESSAGE
from statssvc.server import start_stats_server

# A length-delimited field 1 that says 5 bytes follow, and 2 do: no protobuf parser accepts it.
JUNK = b"\x0a\x05ab"
CONFIG = """
auth: none
backends: [{name: demo, provider: mock}]
models: [{name: demo, targets: [{backend: demo, model: tollgate-demo}]}]
"""


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[dict[str, int]]:
    engine = assemble(parse_config(CONFIG, os.environ)).engine
    engine_server = await start_engine_server(engine, "127.0.0.1:0")
    keys = tmp_path / "keys.yaml"
    save_key_file(keys, KeyFile(()))
    auth = await start_auth_server(keys, "127.0.0.1:0")
    stats = await start_stats_server(tmp_path / "usage.db", "127.0.0.1:0")
    yield {"engine": engine_server.port, "auth": auth.port, "stats": stats.port}
    await engine_server.stop(0)
    await auth.stop(0)
    await stats.stop(0)
    await engine.close()


METHODS = [
    ("engine", "/tollgate.gateway.v1.GatewayService/CreateChatCompletion", False),
    ("engine", "/tollgate.gateway.v1.GatewayService/StreamChatCompletion", True),
    ("engine", "/tollgate.gateway.v1.GatewayService/ListModels", False),
    ("engine", "/tollgate.gateway.v1.AdminService/ListBackends", False),
    ("auth", "/tollgate.auth.v1.AuthService/Check", False),
    ("stats", "/tollgate.stats.v1.StatsService/Report", False),
    ("stats", "/tollgate.stats.v1.StatsService/QueryUsage", False),
]


@pytest.mark.parametrize(("server", "method", "streaming"), METHODS)
async def test_undecodable_request_is_invalid_argument(
    servers: dict[str, int], server: str, method: str, streaming: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{servers[server]}") as channel:
        for _ in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                if streaming:
                    call = channel.unary_stream(method)(JUNK, timeout=5)
                    async for _ in call:
                        pass
                else:
                    await channel.unary_unary(method)(JUNK, timeout=5)
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert failure.value.details() == UNDECODABLE_MESSAGE
    warnings = [r for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(warnings) == 1  # five requests, one line: at most once a minute
    assert method in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
