"""HTTPS on the front door, driven by the official openai SDK trusting a CA made at run time: no CA, no connection;
a rotated certificate is served to new connections without a restart; and the real commands, split over mTLS."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from gateway.assemble import assemble
from gateway.config import ServerConfig, parse_config
from gateway.config.tls import ServerTLS
from gateway.frontdoor.app import create_app, start_http_server
from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import config_for
from tests.e2e.test_cli import tollgate
from tests.security.pki import HOST, Pki

REFUSED = "refused"
MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "hello"}]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def other_pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "other", "other-ca")


def sdk(port: int, ca: Path | None, cert: tuple[Path, Path] | None = None) -> openai.AsyncOpenAI:
    """The openai SDK on a fresh connection pool, trusting `ca` (None: the system's roots)."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    http = openai.DefaultAsyncHttpxClient(verify=context)
    return openai.AsyncOpenAI(base_url=f"https://{HOST}:{port}/v1", api_key="k", max_retries=0, http_client=http)


async def answer(port: int, ca: Path | None, cert: tuple[Path, Path] | None = None) -> str:
    """The demo model's answer over HTTPS, or REFUSED when no connection could be made."""
    async with sdk(port, ca, cert) as client:
        try:
            reply = await client.chat.completions.create(model="demo", messages=MESSAGES)  # type: ignore[arg-type]
        except openai.APIConnectionError:
            return REFUSED
    return reply.choices[0].message.content or ""


async def https_gateway(tls: ServerTLS, upstream: FakeOpenAI) -> AsyncIterator[int]:
    engine = assemble(parse_config(config_for(upstream.base_url), os.environ)).engine
    server = await start_http_server(create_app(engine, ServerConfig()), "127.0.0.1:0", ServerConfig(), tls=tls)
    try:
        yield server.port
    finally:
        await server.stop()
        await engine.close()


async def test_openai_sdk_over_https_with_the_test_ca(pki: Pki, upstream: FakeOpenAI) -> None:
    async for port in https_gateway(pki.server_tls(), upstream):
        assert await answer(port, pki.ca_file) not in ("", REFUSED)
        assert await answer(port, None) == REFUSED  # the system's roots do not know the test CA


async def test_rotated_certificate_reaches_new_connections(pki: Pki, other_pki: Pki, upstream: FakeOpenAI) -> None:
    tls = pki.server_tls()
    async for port in https_gateway(tls, upstream):
        assert await answer(port, other_pki.ca_file) == REFUSED
        pki.rotate_to(other_pki, tls)
        assert await answer(port, other_pki.ca_file) not in ("", REFUSED)
        assert await answer(port, pki.ca_file) == REFUSED


async def test_https_with_a_client_ca_refuses_clients_without_a_certificate(pki: Pki, upstream: FakeOpenAI) -> None:
    async for port in https_gateway(pki.server_tls(mutual=True), upstream):
        leaf = pki.leaf("client", "client.tollgate.test")
        assert await answer(port, pki.ca_file, (leaf.cert, leaf.key)) not in ("", REFUSED)
        assert await answer(port, pki.ca_file) == REFUSED


async def test_commands_split_over_mutual_tls_behind_https(pki: Pki, tmp_path: Path, upstream: FakeOpenAI) -> None:
    """`tollgate engine` with mTLS on its port, `tollgate frontdoor` as its certified client, serving HTTPS."""
    server, client = pki.server_tls(mutual=True), pki.client_tls()
    config = tmp_path / "tollgate.yaml"
    config.write_text(
        config_for(
            upstream.base_url,
            extra=f"""tls:
  http: {{cert: "{server.cert}", key: "{server.key}"}}
  grpc: {{cert: "{server.cert}", key: "{server.key}", client_ca: "{server.client_ca}"}}
  engine: {{ca: "{client.ca}", cert: "{client.cert}", key: "{client.key}", server_name: {HOST}}}""",
        )
    )
    async with tollgate("engine", "--config", str(config)) as engine:
        await engine.wait_listening("grpc")
        address = f"127.0.0.1:{engine.ports['grpc']}"
        async with tollgate("frontdoor", "--config", str(config), "--engine", address, "--http", "127.0.0.1:0") as door:
            await door.wait_listening("http")
            assert await answer(door.ports["http"], pki.ca_file) not in ("", REFUSED), door.output()
            assert await door.terminate() == 0
        assert await engine.terminate() == 0
