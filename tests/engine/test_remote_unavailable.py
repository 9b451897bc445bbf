"""A front door whose engine is down answers 503 and reports not ready; it never hangs or crashes."""

from __future__ import annotations

import socket

import pytest

from gateway.call import CallContext
from gateway.engine.remote import RemoteEngine
from gateway.errors import ServiceUnavailableError
from tollgate.gateway.v1 import gateway_pb2 as pb


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_engine_down() -> None:
    remote = RemoteEngine(f"127.0.0.1:{closed_port()}")
    try:
        assert await remote.ready() is False
        params = pb.ChatCompletionParams(model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="x")])
        with pytest.raises(ServiceUnavailableError) as info:
            await remote.create_chat_completion(params, CallContext("req_1"))
        assert info.value.http_status == 503
        assert info.value.message == "The routing engine is unavailable"
        with pytest.raises(ServiceUnavailableError):
            await anext(remote.stream_chat_completion(params, CallContext("req_2")))
    finally:
        await remote.close()
