"""The served echo: a `WireServer` with the test servicer, and a grpc.aio channel to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from gateway.wire_server import WireServer
from tests.wire.echo import Echo, handlers


@pytest.fixture
async def served() -> AsyncIterator[tuple[WireServer, Echo, grpc.aio.Channel]]:
    echo = Echo()
    server = WireServer()
    server.add_generic_rpc_handlers((handlers(echo),))
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)])
    yield server, echo, channel
    echo.release.set()
    await channel.close(None)
    await server.stop(0)
