"""Secret canaries: credential-shaped values sent through every field a client controls (headers, ids, the model,
body fields, metadata, the path, gRPC metadata) and set as every configured secret (the upstream key and header, the
admin and metrics tokens, the client's own valid key); then every log line, metric, span, usage record (the real
stats server's database) and error body is searched for them. Zero hits, in one process and split.
"""

from __future__ import annotations

import io
import logging
import random
import sqlite3
import string
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from authsvc.keyfile import KeyFile, KeyRecord, save_key_file
from authsvc.keys import generate_key
from authsvc.server import AuthServer, start_auth_server
from gateway.config import parse_config
from gateway.config.telemetry import LogsConfig, TracingConfig
from gateway.telemetry.build import config_secrets
from gateway.telemetry.logs import configure_logging
from gateway.telemetry.tracing import Tracing
from gateway.testing.fake_openai import FakeOpenAI, Fault
from statssvc.server import StatsServer, start_stats_server
from tests.conftest import MODES
from tests.telemetry.helpers import Instrumented, instrumented
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc

_RNG = random.Random()


def _core() -> str:
    """A random 24-character core, letters and digits of each kind: what is searched for, so a partial leak counts."""
    chars = [_RNG.choice(string.ascii_uppercase), _RNG.choice(string.ascii_lowercase), _RNG.choice(string.digits)]
    chars += _RNG.choices(string.ascii_letters + string.digits, k=21)
    return "".join(chars)


class Canaries:
    """Fresh canaries for one run: client-sent values in each credential shape, and the configured secrets."""

    def __init__(self) -> None:
        self.cores: list[str] = []
        self.tollgate = self.made(lambda c: f"tgk_{_RNG.getrandbits(64):016x}_{c}")
        self.openai = self.made(lambda c: f"sk-proj-{c}")
        self.anthropic = self.made(lambda c: f"sk-ant-api03-{c}")
        self.bearer = self.made(lambda c: c + _core())  # a long random token with no known prefix
        self.jwt = self.made(lambda c: f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.{c}")
        # Configured secrets: any text at all (they are masked as the literal values they are).
        self.upstream_key = self.made(lambda c: f"upstream-{c}")
        self.upstream_header = self.made(lambda c: f"hdr-{c}")
        self.admin_token = self.made(lambda c: f"admin-{c}")
        self.metrics_token = self.made(lambda c: f"metrics-{c}")

    def made(self, shape: Any) -> str:
        core = _core()
        self.cores.append(core)
        return str(shape(core))

    def client(self) -> Iterator[str]:
        """Each client-sent canary in turn, round and round."""
        while True:
            yield from (self.tollgate, self.openai, self.anthropic, self.bearer, self.jwt)

    def found_in(self, text: str) -> list[str]:
        return [core for core in self.cores if core in text]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root, access = logging.getLogger(), logging.getLogger("tollgate.access")
    handlers, level, access_handlers = list(root.handlers), root.level, list(access.handlers)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for handler in list(access.handlers):
        access.removeHandler(handler)
    for handler in access_handlers:
        access.addHandler(handler)
    access.setLevel(logging.NOTSET)
    access.propagate = True


class Servers:
    def __init__(self, auth: AuthServer, stats: StatsServer, db: Path, key: str) -> None:
        self.auth, self.stats, self.db, self.key = auth, stats, db, key

    def usage_dump(self) -> str:
        with sqlite3.connect(self.db) as db:
            return "\n".join(repr(row) for row in db.execute("SELECT * FROM usage"))


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    key = generate_key()
    keys = tmp_path / "keys.yaml"
    save_key_file(
        keys,
        KeyFile(
            (KeyRecord(id=key.id, hash=key.hash, user="alice", models=("gpt-4o-mini", "demo", "text-embedding-*")),)
        ),
    )
    auth = await start_auth_server(keys, "127.0.0.1:0")
    stats = await start_stats_server(tmp_path / "usage.db", "127.0.0.1:0")
    yield Servers(auth, stats, tmp_path / "usage.db", key.raw)
    await auth.stop(0)
    await stats.stop(0)


def config_text(upstream: FakeOpenAI, servers: Servers, canaries: Canaries, spool: Path) -> str:
    return f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: {{server: "127.0.0.1:{servers.auth.port}", timeout: 2s, headers: [x-custom, user-agent]}}
stats: {{server: "127.0.0.1:{servers.stats.port}", flush_interval: 20ms, retry_max: 200ms, spool_dir: "{spool}"}}
admin: {{token: {canaries.admin_token}}}
telemetry: {{metrics: {{token: {canaries.metrics_token}}}, logs: {{format: json}}, audit: {{enabled: true}}}}
backends:
  - {{name: primary, provider: openai, base_url: "{upstream.base_url}", api_key: {canaries.upstream_key},
      headers: {{x-upstream-auth: {canaries.upstream_header}}}, read_timeout: 5s}}
  - {{name: demo, provider: mock}}
models:
  - {{name: gpt-4o-mini, targets: [{{backend: primary, model: gpt-4o-mini}}], fallback: [demo]}}
  - {{name: demo, targets: [{{backend: demo}}]}}
  - {{name: text-embedding-3-small, targets: [{{backend: primary}}]}}
"""


class Traffic:
    """Sends the canaries through every client-controlled field, keeping every error body it is answered with."""

    def __init__(self, gw: Instrumented, servers: Servers, canaries: Canaries) -> None:
        self.gw, self.key, self.canaries = gw, servers.key, canaries
        self.next = canaries.client()
        self.bodies: list[str] = []

    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.key}",
            "x-request-id": next(self.next),
            "x-custom": next(self.next),
            "user-agent": next(self.next),
        }

    async def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.gw.http_url + path, json=body, headers=headers or self.headers()) as response,
        ):
            text = await response.text()
            if response.status >= 400 or "error" in text:
                self.bodies.append(text)
            return response.status

    async def http(self) -> None:
        c = self.canaries
        chat = {
            "model": "gpt-4o-mini",
            "user": next(self.next),
            "metadata": {"note": next(self.next), "other": next(self.next)},
            "messages": [{"role": "user", "content": f"my key is {next(self.next)}", "name": "n"}],
            "stop": [next(self.next)],
        }
        assert await self.post("/v1/chat/completions", chat) == 200
        assert await self.post("/v1/chat/completions", {**chat, "stream": True}) == 200
        assert await self.post("/v1/chat/completions", {**chat, "model": "m" * 100_000}) == 400  # never stored
        for model in (c.tollgate, c.openai, c.anthropic, c.bearer, c.jwt):  # a key sent as the model
            assert await self.post("/v1/chat/completions", {**chat, "model": model}) == 400
        wrong = [
            {**chat, "response_format": {"type": next(self.next)}},
            {**chat, "tool_choice": next(self.next)},
            {**chat, "messages": [{"role": next(self.next), "content": "hi"}]},
            {**chat, "temperature": 5, "user": next(self.next)},
            {**chat, "metadata": {next(self.next)[:60]: 1}},
        ]
        for body in wrong:
            assert await self.post("/v1/chat/completions", body) == 400
        for key_header in ({"Authorization": f"Bearer {c.tollgate}"}, {"x-api-key": c.openai}):
            headers = {k: v for k, v in self.headers().items() if k != "Authorization"}
            assert await self.post("/v1/chat/completions", chat, {**headers, **key_header}) == 401
        assert (
            await self.post("/v1/embeddings", {"model": "text-embedding-3-small", "input": "x", "user": c.jwt}) == 200
        )
        anthropic = {"model": c.anthropic, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        assert await self.post("/v1/messages", anthropic) == 400
        async with aiohttp.ClientSession() as session:
            for path, token in ((f"/v1/{c.bearer}", self.key), ("/admin/backends", c.tollgate), ("/metrics", c.jwt)):
                async with session.get(self.gw.http_url + path, headers={"Authorization": f"Bearer {token}"}) as r:
                    self.bodies.append(await r.text())
                    assert r.status in (401, 403, 404)

    async def sdk(self) -> None:
        client = openai.AsyncOpenAI(base_url=self.gw.base_url, api_key=self.key, max_retries=0)
        async with client:
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(
                    model=self.canaries.openai,
                    messages=[{"role": "user", "content": "hi"}],
                    extra_headers={"x-request-id": next(self.next)},
                )
            self.bodies.append(str(caught.value.body))
            reply = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], user=next(self.next)
            )
            assert reply.choices  # served by the fallback after the injected upstream failure

    async def grpc(self) -> None:
        async with grpc.aio.insecure_channel(self.gw.grpc_address) as channel:
            stub = pb_grpc.GatewayServiceStub(channel)
            metadata = (
                ("authorization", f"Bearer {self.key}"),
                ("x-request-id", next(self.next)),
                ("x-custom", next(self.next)),
                ("tollgate-client-address", next(self.next)),
            )
            params = pb.ChatCompletionParams(
                model="gpt-4o-mini",
                user=next(self.next),
                messages=[pb.ChatMessage(role=pb.ROLE_USER, content=next(self.next))],
            )
            params.metadata["note"] = next(self.next)
            await stub.CreateChatCompletion(pb.CreateChatCompletionRequest(params=params), metadata=metadata)
            for model in (self.canaries.tollgate, self.canaries.bearer):
                params.model = model
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.CreateChatCompletion(pb.CreateChatCompletionRequest(params=params), metadata=metadata)
                self.bodies.append(f"{caught.value.details()} {caught.value.trailing_metadata()}")
            bad_key = (("authorization", f"Bearer {self.canaries.anthropic}"),)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListModels(pb.ListModelsRequest(), metadata=bad_key)
            self.bodies.append(f"{caught.value.details()} {caught.value.trailing_metadata()}")


@pytest.mark.parametrize("mode", MODES)
async def test_no_canary_reaches_a_log_a_metric_a_span_a_record_or_an_error(
    mode: str, servers: Servers, tmp_path: Path, restore_logging: None
) -> None:
    canaries = Canaries()
    exporter = InMemorySpanExporter()
    tracing = TracingConfig(otlp_endpoint="http://127.0.0.1:4317")
    async with FakeOpenAI(api_key=canaries.upstream_key) as upstream:
        config = parse_config(config_text(upstream, servers, canaries, tmp_path / "spool"), {})
        logs = io.StringIO()
        configure_logging(LogsConfig(format="json", access_log=True), "DEBUG", config_secrets(config), logs)
        upstream.add_fault(Fault(status=500, message=f"upstream says {canaries.openai}"))
        async with instrumented(
            mode,
            config_text(upstream, servers, canaries, tmp_path / "spool"),
            engine_tracing=Tracing(tracing, exporter, batch=False),
            front_tracing=Tracing(tracing, exporter, batch=False),
        ) as gw:
            traffic = Traffic(gw, servers, canaries)
            await traffic.sdk()
            await traffic.http()
            await traffic.grpc()
            async with (
                aiohttp.ClientSession() as session,
                session.get(gw.metrics_url, headers={"Authorization": f"Bearer {canaries.metrics_token}"}) as r,
            ):
                assert r.status == 200
                metrics = await r.text()
        # The engine is closed now: its usage records are delivered.
        for handler in logging.getLogger("tollgate.access").handlers:
            handler.flush()
    usage = servers.usage_dump()
    spans = "\n".join(
        f"{s.name} {dict(s.attributes or {})} {s.events} {s.status}" for s in exporter.get_finished_spans()
    )
    assert usage.count("alice") >= 4, usage  # the served calls were recorded…
    assert "tollgate_requests_total" in metrics  # …and counted
    assert len(logs.getvalue().splitlines()) > 20
    assert max(len(row) for row in usage.splitlines()) < 4000  # no 100 KB model name
    assert "****" in logs.getvalue() and "****" in usage  # the canaries were there, masked (x-request-id, say)
    leaks = {
        "logs": canaries.found_in(logs.getvalue()),
        "metrics": canaries.found_in(metrics),
        "spans": canaries.found_in(spans),
        "usage": canaries.found_in(usage),
        "error bodies": canaries.found_in("\n".join(traffic.bodies)),
    }
    assert leaks == {name: [] for name in leaks}, _context(leaks, logs.getvalue() + spans)
    key_secret = servers.key.split("_", 2)[2]  # tgk_<id>_<secret>; the secret may hold `_` itself
    for name, text in (("logs", logs.getvalue()), ("usage", usage), ("spans", spans), ("metrics", metrics)):
        assert key_secret not in text, name  # the client's own valid key


def _context(leaks: dict[str, list[str]], logs: str) -> str:
    lines = [
        line[:400] for line in logs.splitlines() if any(core in line for found in leaks.values() for core in found)
    ]
    return f"{leaks}\n" + "\n".join(lines[:10])
