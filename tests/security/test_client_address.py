"""The client's address a split front door passes (`tollgate-client-address`) is believed only from the networks
named in `listen.front_doors`: any other gRPC caller who sets it is described to the auth server by its own address.
A real engine gRPC server, a recording auth server, a direct gRPC client that forges the address, and a split front
door calling from a network it names."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest

from gateway.assemble import assemble
from gateway.config import parse_config
from gateway.engine.remote import RemoteEngine
from gateway.engine.server import start_engine_server
from gateway.frontdoor.app import create_app, start_http_server
from gateway.grpc_server import GrpcServer, start_grpc_server
from tests.auth.test_authenticator import ScriptedAuth
from tollgate.auth.v1 import auth_pb2, auth_pb2_grpc
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc

AUTH_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
FORGED = "203.0.113.9"


@pytest.fixture
async def auth() -> AsyncIterator[tuple[ScriptedAuth, GrpcServer]]:
    servicer = ScriptedAuth()
    server = await start_grpc_server(
        "127.0.0.1:0", [(AUTH_SERVICE, lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, s))]
    )
    yield servicer, server
    await server.stop(0)


def config_text(auth_port: int, front_doors: str) -> str:
    return f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0", front_doors: {front_doors}}}
auth: {{server: "127.0.0.1:{auth_port}"}}
backends: [{{name: demo, provider: mock}}]
models: [{{name: demo, targets: [{{backend: demo}}]}}]
"""


async def seen_address(auth: tuple[ScriptedAuth, GrpcServer], front_doors: str, *, split: bool = False) -> str:
    """The client address the auth server is told about a call whose caller claims to come from FORGED (a direct
    gRPC client), or (`split`) about an HTTP call through a split front door."""
    servicer, server = auth
    servicer.seen.clear()
    config = parse_config(config_text(server.port, front_doors), {})
    assembly = assemble(config)
    await assembly.start()
    engine = await start_engine_server(assembly.engine, "127.0.0.1:0", front_doors=config.listen.front_doors)
    try:
        if split:
            remote = RemoteEngine.for_config(f"127.0.0.1:{engine.port}", config)
            http = await start_http_server(create_app(remote, config.server), "127.0.0.1:0", config.server)
            try:
                body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(
                        f"http://127.0.0.1:{http.port}/v1/chat/completions",
                        json=body,
                        headers={"Authorization": "Bearer tgk_k1_secret"},
                    ) as response,
                ):
                    assert response.status == 200
            finally:
                await http.stop()
                await remote.close()
        else:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{engine.port}") as channel:
                params = pb.ChatCompletionParams(
                    model="demo", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="x")]
                )
                await pb_grpc.GatewayServiceStub(channel).CreateChatCompletion(
                    pb.CreateChatCompletionRequest(params=params),
                    metadata=(("authorization", "Bearer tgk_k1_secret"), ("tollgate-client-address", FORGED)),
                )
    finally:
        await engine.stop(0)
        await assembly.close()
    (request,) = servicer.seen
    return request.client_address


async def test_a_callers_claimed_address_is_ignored_outside_the_front_doors_networks(
    auth: tuple[ScriptedAuth, GrpcServer],
) -> None:
    seen = await seen_address(auth, "[10.0.0.0/8]")
    assert seen.startswith("ipv4:127.0.0.1:"), "the caller's own address, not the one it claimed"


async def test_a_front_doors_address_is_believed(auth: tuple[ScriptedAuth, GrpcServer]) -> None:
    assert await seen_address(auth, "[127.0.0.0/8]") == FORGED
    assert await seen_address(auth, "[]") == FORGED, "none named: anyone's (keep the port internal, or use mTLS)"
    # A split front door calling from a network named: the HTTP client's address reaches the auth server.
    assert await seen_address(auth, "[127.0.0.1]", split=True) == "127.0.0.1"
