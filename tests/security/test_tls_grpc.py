"""TLS and mutual TLS on every gRPC hop, with certificates made at run time: the engine's port, the split front
door's channel to it, the auth and stats servers and the gateway as their client; rotation without a restart."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc.keyfile import KeyFile, KeyRecord, save_key_file
from authsvc.keys import generate_key
from authsvc.server import start_auth_server
from gateway.assemble import assemble
from gateway.call import CallContext
from gateway.config import GatewayConfig, Secret, parse_config
from gateway.config.tls import ClientTLS, ServerTLS
from gateway.engine.core import EngineCore
from gateway.engine.remote import RemoteEngine
from gateway.engine.server import start_engine_server
from gateway.errors import ServiceUnavailableError
from gateway.grpc_server import GrpcServer
from gateway.testing.fake_openai import FakeOpenAI
from gateway.tls import RenewingChannel, open_channel
from statssvc.server import start_stats_server
from tests.conftest import config_for
from tests.security.pki import Pki
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc

PARAMS = pb.ChatCompletionParams(model="demo", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hi")])


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def other_pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "other", "other-ca")


def tls_yaml(name: str, tls: ServerTLS | ClientTLS) -> str:
    fields = ", ".join(f'{k}: "{v}"' for k, v in vars_of(tls).items() if v)
    return f"{name}: {{{fields}}}"


def vars_of(tls: ServerTLS | ClientTLS) -> dict[str, str]:
    return {name: getattr(tls, name) for name in tls.__slots__}


async def health(address: str, tls: ClientTLS | None) -> grpc.StatusCode:
    """How a fresh channel's health check ends: OK, or the status of the failed handshake."""
    channel = open_channel(address, tls)
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    finally:
        await channel.close(None)
    return grpc.StatusCode.OK


async def engine_with(server_tls: ServerTLS, upstream: FakeOpenAI) -> AsyncIterator[tuple[EngineCore, GrpcServer]]:
    config = parse_config(config_for(upstream.base_url, extra=f"tls: {{{tls_yaml('grpc', server_tls)}}}"), os.environ)
    engine = assemble(config).engine
    await engine.start()
    server = await start_engine_server(engine, "127.0.0.1:0", tls=config.tls.grpc)
    try:
        yield engine, server
    finally:
        await server.stop(0)
        await engine.close()


async def test_engine_port_speaks_tls_only(pki: Pki, upstream: FakeOpenAI) -> None:
    async for _, server in engine_with(pki.server_tls(), upstream):
        address = f"127.0.0.1:{server.port}"
        assert await health(address, pki.client_tls(with_cert=False)) == grpc.StatusCode.OK
        assert await health(address, ClientTLS(server_name="localhost")) == grpc.StatusCode.UNAVAILABLE  # no CA
        assert await health(address, None) == grpc.StatusCode.UNAVAILABLE  # plaintext
        async with open_channel(address, pki.client_tls(with_cert=False)) as channel:
            reply = await pb_grpc.GatewayServiceStub(channel).CreateChatCompletion(
                pb.CreateChatCompletionRequest(params=PARAMS), timeout=5
            )
        assert reply.choices[0].message.content


async def test_mutual_tls_refuses_clients_without_a_certificate(pki: Pki, other_pki: Pki, upstream: FakeOpenAI) -> None:
    async for _, server in engine_with(pki.server_tls(mutual=True), upstream):
        address = f"127.0.0.1:{server.port}"
        assert await health(address, pki.client_tls()) == grpc.StatusCode.OK
        assert await health(address, pki.client_tls(with_cert=False)) == grpc.StatusCode.UNAVAILABLE
        stranger = other_pki.client_tls("stranger")  # a certificate, from a CA the server does not trust
        assert await health(address, ClientTLS(pki.ca_file.as_posix(), stranger.cert, stranger.key, "localhost")) == (
            grpc.StatusCode.UNAVAILABLE
        )


async def test_rotated_certificate_is_served_without_a_restart(pki: Pki, other_pki: Pki, upstream: FakeOpenAI) -> None:
    tls = pki.server_tls()
    async for _, server in engine_with(tls, upstream):
        address = f"127.0.0.1:{server.port}"
        old_ca, new_ca = pki.client_tls(with_cert=False), other_pki.client_tls(with_cert=False)
        assert await health(address, old_ca) == grpc.StatusCode.OK
        assert await health(address, new_ca) == grpc.StatusCode.UNAVAILABLE
        pki.rotate_to(other_pki, tls)  # the same files, now holding a certificate the other CA signed
        assert await health(address, new_ca) == grpc.StatusCode.OK
        assert await health(address, old_ca) == grpc.StatusCode.UNAVAILABLE


async def test_half_written_rotation_keeps_the_old_certificate(pki: Pki, upstream: FakeOpenAI) -> None:
    tls = pki.server_tls()
    async for _, server in engine_with(tls, upstream):
        address = f"127.0.0.1:{server.port}"
        pki.replace_key_only(tls)  # a rotation caught after its key and before its certificate
        assert await health(address, pki.client_tls(with_cert=False)) == grpc.StatusCode.OK


async def test_split_front_door_reaches_the_engine_over_mutual_tls(pki: Pki, upstream: FakeOpenAI) -> None:
    async for engine, server in engine_with(pki.server_tls(mutual=True), upstream):
        client = pki.client_tls()
        text = config_for(upstream.base_url, extra=f"tls: {{{tls_yaml('engine', client)}}}")
        remote = RemoteEngine.for_config(f"127.0.0.1:{server.port}", parse_config(text, os.environ))
        try:
            assert await remote.ready()
            reply = await remote.create_chat_completion(PARAMS, CallContext(request_id="req_split_tls"))
            assert reply.choices[0].message.content
        finally:
            await remote.close()
        assert engine.config.tls.grpc is not None


async def test_split_front_door_exchanges_follow_a_rotated_client_certificate(
    pki: Pki, other_pki: Pki, upstream: FakeOpenAI
) -> None:
    """The exchange's own connection (gateway.engine.exchange_wire) does TLS as the channel does: a certificate the
    engine does not trust is a 503, and the renewed files are read by the next connection, without a restart."""
    async for _, server in engine_with(pki.server_tls(mutual=True), upstream):
        untrusted = other_pki.client_tls("gateway")
        client = ClientTLS(ca=str(pki.ca_file), cert=untrusted.cert, key=untrusted.key, server_name="localhost")
        remote = RemoteEngine(f"127.0.0.1:{server.port}", tls=client)
        try:
            with pytest.raises(ServiceUnavailableError):
                await remote.create_chat_completion(PARAMS, CallContext(request_id="req_untrusted"))
            pki.reissue(client.cert, client.key, "gateway.tollgate.test")
            reply = await remote.create_chat_completion(PARAMS, CallContext(request_id="req_renewed"))
            assert reply.choices[0].message.content
            assert remote.exchanges.counts.received >= 1  # it came over an exchange, not a call of its own
        finally:
            await remote.close()


async def test_client_certificate_rotation_reopens_the_channel(pki: Pki, other_pki: Pki, upstream: FakeOpenAI) -> None:
    """The gateway as a client: its certificate files rotate, and the same channel (and stub) follows them."""
    async for _, server in engine_with(pki.server_tls(mutual=True), upstream):
        client = other_pki.client_tls("gateway")  # signed by a CA the server does not trust: refused
        client = ClientTLS(ca=str(pki.ca_file), cert=client.cert, key=client.key, server_name="localhost")
        channel = open_channel(f"127.0.0.1:{server.port}", client, check_every=0.0)
        assert isinstance(channel, RenewingChannel)
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            pki.reissue(client.cert, client.key, "gateway.tollgate.test")  # cert-manager renews it with the right CA
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert channel.generation == 1
        finally:
            await channel.close(None)


# ---------------------------------------------------------------------------------------------------- auth, stats


def gateway_config(upstream: FakeOpenAI, auth: str, stats: str, spool: Path) -> GatewayConfig:
    text = config_for(upstream.base_url).replace(
        "auth: none",
        f"""auth: {{server: "127.0.0.1:{auth}", timeout: 2s}}
stats: {{server: "127.0.0.1:{stats}", flush_interval: 20ms, retry_max: 200ms, spool_dir: "{spool}"}}""",
    )
    return parse_config(text, os.environ)


def with_tls(config: GatewayConfig, tls: ClientTLS) -> GatewayConfig:
    assert config.auth is not None and config.stats is not None
    return replace(config, auth=replace(config.auth, tls=tls), stats=replace(config.stats, tls=tls))


async def test_gateway_uses_auth_and_stats_over_mutual_tls(pki: Pki, upstream: FakeOpenAI, tmp_path: Path) -> None:
    key = generate_key()
    keys = tmp_path / "keys.yaml"
    save_key_file(keys, KeyFile((KeyRecord(id=key.id, hash=key.hash, user="alice", models=("demo",)),)))
    server_tls = pki.server_tls(mutual=True)
    auth = await start_auth_server(keys, "127.0.0.1:0", tls=server_tls)
    stats = await start_stats_server(tmp_path / "usage.db", "127.0.0.1:0", tls=server_tls)
    base = gateway_config(upstream, str(auth.port), str(stats.port), tmp_path / "spool")
    try:
        engine = assemble(with_tls(base, pki.client_tls())).engine
        await engine.start()
        reply = await engine.create_chat_completion(PARAMS, CallContext(request_id="req_tls", api_key=Secret(key.raw)))
        assert reply.choices[0].message.content
        await engine.close()  # delivers the usage record
        with sqlite3.connect(tmp_path / "usage.db") as db:
            assert db.execute("SELECT key_id FROM usage").fetchall() == [(key.id,)]

        # Without a client certificate the auth server refuses the handshake: the gateway fails closed.
        anonymous = assemble(with_tls(base, pki.client_tls(with_cert=False))).engine
        with pytest.raises(ServiceUnavailableError):
            await anonymous.create_chat_completion(PARAMS, CallContext(request_id="r2", api_key=Secret(key.raw)))
        await anonymous.close()
    finally:
        await auth.stop(0)
        await stats.stop(0)


async def test_statssvc_command_serves_mutual_tls(pki: Pki, tmp_path: Path) -> None:
    server_tls = pki.server_tls("stats", mutual=True)
    flags = ["--tls-cert", server_tls.cert, "--tls-key", server_tls.key, "--tls-client-ca", server_tls.client_ca]
    address = f"127.0.0.1:{free_port()}"
    command = ["-m", "gateway.cli", "statssvc", "--db", str(tmp_path / "u.db"), "--listen", address, *flags]
    process = await asyncio.create_subprocess_exec(sys.executable, *command, stdout=subprocess.DEVNULL)
    try:
        async with asyncio.timeout(15):
            # Polled: the server says nothing when it is ready but answers health checks.
            while await health(address, pki.client_tls()) != grpc.StatusCode.OK:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert await health(address, pki.client_tls(with_cert=False)) == grpc.StatusCode.UNAVAILABLE
        # `tollgate stats usage` as a client of it, with and without its certificate.
        client = pki.client_tls("operator")
        query = ["-m", "gateway.cli", "stats", "usage", "--server", address, "--json", "--tls-ca", client.ca]
        named = [*query, "--tls-server-name", "localhost"]
        assert await exit_code([*named, "--tls-cert", client.cert, "--tls-key", client.key]) == 0
        assert await exit_code(named) == 1  # refused: no client certificate
    finally:
        process.terminate()
        await process.wait()


async def exit_code(args: list[str]) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return await asyncio.wait_for(process.wait(), 30)


def test_authsvc_command_refuses_half_a_tls_pair(pki: Pki, tmp_path: Path) -> None:
    leaf = pki.leaf("auth")
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "authsvc", "--keys", str(tmp_path / "k.yaml"), "--tls-cert", leaf.cert],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "--tls-cert and --tls-key go together" in done.stderr


def free_port() -> int:
    """A free port on loopback, released so that a server can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
