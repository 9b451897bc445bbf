"""The gateway with the real auth and stats servers on loopback, driven by the openai SDK, in both modes.

Every denial path; decisions cached; one usage record per request however it ends; and records surviving a stats
server outage and a gateway restart, each counted exactly once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from authsvc.keyfile import KeyFile, KeyRecord, save_key_file
from authsvc.keys import generate_key
from authsvc.server import AuthServer, start_auth_server
from gateway.assemble import assemble
from gateway.call import CallContext
from gateway.config import Secret, parse_config
from gateway.grpc_server import start_grpc_server
from gateway.testing.fake_openai import FakeOpenAI, Fault
from statssvc.server import StatsServer, start_stats_server
from tests.auth.test_authenticator import ScriptedAuth
from tests.conftest import RunningGateway, StartGateway, config_for
from tollgate.auth.v1 import auth_pb2, auth_pb2_grpc
from tollgate.gateway.v1 import gateway_pb2 as pb

AUTH_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
MESSAGES: Any = [{"role": "user", "content": "Say hello."}]
PAST = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass
class Stack:
    """The auth and stats servers a test's gateway uses, and the keys in the auth server's file."""

    auth: AuthServer
    stats: StatsServer
    keys: dict[str, str]
    db: Path
    spool: Path

    def config(self, upstream: FakeOpenAI) -> str:
        text = config_for(upstream.base_url).replace(
            "auth: none",
            f"""auth: {{server: "127.0.0.1:{self.auth.port}", timeout: 500ms, cache_ttl: 60s}}
stats: {{server: "127.0.0.1:{self.stats.port}", flush_interval: 20ms, retry_max: 200ms, timeout: 1s,
        spool_dir: "{self.spool}"}}
prices: {{gpt-4o-mini: {{input: 0.15, output: 0.6}}}}""",
        )
        return text

    def rows(self) -> list[dict[str, Any]]:
        """Every stored usage row, read straight from the stats server's SQLite file."""
        with sqlite3.connect(self.db) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute("SELECT * FROM usage ORDER BY start_time")]


def _key(user: str, **fields: Any) -> tuple[str, KeyRecord]:
    key = generate_key()
    return key.raw, KeyRecord(id=key.id, hash=key.hash, user=user, created=PAST, **fields)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    made = {
        "alice": _key("alice", team="ml", models=("gpt-4o*", "text-embedding-*", "demo")),
        "bob": _key("bob", models=("demo",)),
        "carol": _key("carol", revoked=PAST),
        "dave": _key("dave", expires=PAST),
    }
    keys_path = tmp_path / "keys.yaml"
    save_key_file(keys_path, KeyFile(tuple(record for _, record in made.values())))
    auth = await start_auth_server(keys_path, "127.0.0.1:0", cache_ttl=60.0)
    db = tmp_path / "usage.db"
    stats = await start_stats_server(db, "127.0.0.1:0")
    running = Stack(auth, stats, {name: raw for name, (raw, _) in made.items()}, db, tmp_path / "spool")
    yield running
    await running.stats.stop(0)  # tests may have replaced it with a restarted one
    await running.auth.stop(0)


@pytest.fixture
async def secured(start_gateway: StartGateway, upstream: FakeOpenAI, stack: Stack) -> RunningGateway:
    return await start_gateway(stack.config(upstream))


def client(gateway: RunningGateway, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)


async def eventually(condition: Any, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110  # records arrive on the reporter's schedule: polling is the point
            await asyncio.sleep(0.02)


async def test_every_denial_has_its_status(secured: RunningGateway, stack: Stack) -> None:
    cases: list[tuple[str, type[openai.APIStatusError], str]] = [
        ("sk-not-a-tollgate-key", openai.AuthenticationError, "Invalid API key"),
        (stack.keys["alice"][:-2] + "xx", openai.AuthenticationError, "Invalid API key"),
        (stack.keys["carol"], openai.AuthenticationError, "revoked"),
        (stack.keys["dave"], openai.AuthenticationError, "expired"),
        (stack.keys["bob"], openai.PermissionDeniedError, "may not use the model 'gpt-4o-mini'"),
    ]
    for key, error, message in cases:
        with pytest.raises(error) as caught:
            await client(secured, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert message in caught.value.message, key
    answer = await client(secured, stack.keys["alice"]).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert answer.choices[0].message.content
    async with (
        aiohttp.ClientSession() as session,
        session.post(secured.base_url + "/chat/completions", json={"model": "demo", "messages": MESSAGES}) as resp,
    ):
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "missing_api_key"


async def test_models_lists_only_what_the_key_may_use(secured: RunningGateway, stack: Stack) -> None:
    alice = [m.id async for m in client(secured, stack.keys["alice"]).models.list()]
    bob = [m.id async for m in client(secured, stack.keys["bob"]).models.list()]
    assert alice == ["gpt-4o-mini", "text-embedding-3-small", "demo"]
    assert bob == ["demo"]
    with pytest.raises(openai.AuthenticationError):
        await client(secured, "sk-wrong").models.list()


async def test_retrieve_a_model_the_key_may_not_use_is_not_found(secured: RunningGateway, stack: Stack) -> None:
    bob = client(secured, stack.keys["bob"])
    assert (await bob.models.retrieve("demo")).id == "demo"
    with pytest.raises(openai.NotFoundError) as caught:  # as unknown as a model that does not exist: nothing leaks
        await bob.models.retrieve("gpt-4o-mini")
    assert caught.value.body == {
        "message": "The model 'gpt-4o-mini' does not exist",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


async def test_decisions_are_cached(secured: RunningGateway, stack: Stack) -> None:
    alice = client(secured, stack.keys["alice"])
    await asyncio.gather(*(alice.chat.completions.create(model="demo", messages=MESSAGES) for _ in range(20)))
    for model in ("gpt-4o-mini", "demo"):
        await alice.chat.completions.create(model=model, messages=MESSAGES)
    assert stack.auth.servicer.checks == 1


async def test_auth_server_down_fails_closed_but_cached_keys_keep_working(
    secured: RunningGateway, stack: Stack
) -> None:
    await client(secured, stack.keys["alice"]).chat.completions.create(model="demo", messages=MESSAGES)
    await stack.auth.stop(0)
    with pytest.raises(openai.InternalServerError) as caught:
        await client(secured, stack.keys["bob"]).chat.completions.create(model="demo", messages=MESSAGES)
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "auth_unavailable"  # type: ignore[index]
    assert caught.value.response.headers["Retry-After"] == "1"  # every 503 says when to come back
    # A decision already cached is still good until its TTL runs out.
    await client(secured, stack.keys["alice"]).chat.completions.create(model="demo", messages=MESSAGES)


async def test_one_record_per_request_however_it_ends(
    secured: RunningGateway, stack: Stack, upstream: FakeOpenAI
) -> None:
    alice = client(secured, stack.keys["alice"])
    ids = {name: f"req_{name}_{secured.mode}" for name in ("plain", "stream", "usage", "embed", "failed", "cut")}

    await alice.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-request-id": ids["plain"]}
    )
    async for _ in await alice.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers={"x-request-id": ids["stream"]}
    ):
        pass
    async for _ in await alice.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-request-id": ids["usage"]},
    ):
        pass
    await alice.embeddings.create(
        model="text-embedding-3-small", input="hello", extra_headers={"x-request-id": ids["embed"]}
    )
    upstream.add_fault(Fault(status=500))
    with pytest.raises(openai.APIStatusError):
        await alice.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-request-id": ids["failed"]}
        )
    upstream.chunks, upstream.chunk_delay = 200, 0.02
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            secured.base_url + "/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
            headers={"Authorization": f"Bearer {stack.keys['alice']}", "x-request-id": ids["cut"]},
        )
        await resp.content.readline()
        resp.close()  # the client goes away mid-stream

    await eventually(lambda: len(stack.rows()) == len(ids))
    # Records are keyed on the gateway's own ids; the client's `x-request-id` rides along for correlation.
    rows = {orjson.loads(row["labels"])["client_request_id"]: row for row in stack.rows()}
    assert set(rows) == set(ids.values())
    assert all(row["request_id"].startswith("req_") for row in rows.values())
    for row in rows.values():
        assert (row["user"], row["team"], row["requested_model"] or "") != ("", "", "")
        assert row["key_id"] and row["key_id"] in stack.keys["alice"]
        assert stack.keys["alice"] not in str(row)
    plain, stream, usage, embed, failed, cut = (rows[ids[name]] for name in ids)
    for row in (plain, stream, usage):
        assert (row["outcome"], row["http_status"], row["usage_estimated"]) == ("OUTCOME_COMPLETED", 200, 0)
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0
        assert row["cost_usd"] == pytest.approx((row["input_tokens"] * 0.15 + row["output_tokens"] * 0.6) / 1e6)
        assert (row["backend"], row["provider"], row["route"]) == ("primary", "openai", "gpt-4o-mini>primary")
    assert (plain["stream"], stream["stream"], plain["ttft_ms"]) == (0, 1, None)
    assert stream["ttft_ms"] is not None and stream["ttft_ms"] <= stream["latency_ms"]
    assert stream["output_tokens"] == usage["output_tokens"]  # usage asked upstream even when the client did not
    assert (embed["operation"], embed["outcome"], embed["input_tokens"] > 0) == (
        "embeddings",
        "OUTCOME_COMPLETED",
        True,
    )
    assert (failed["outcome"], failed["http_status"], failed["error_type"]) == ("OUTCOME_FAILED", 502, "upstream_error")
    assert (cut["outcome"], cut["http_status"], cut["usage_estimated"]) == ("OUTCOME_CANCELLED", 499, 1)
    assert 0 < cut["output_tokens"] < 200


async def test_a_reused_client_request_id_cannot_merge_two_requests_usage(
    secured: RunningGateway, stack: Stack
) -> None:
    """The stats server deduplicates on request_id: were it the client's, a client could have its usage dropped."""
    alice = client(secured, stack.keys["alice"])
    answered = [
        await alice.chat.completions.with_raw_response.create(
            model="demo", messages=MESSAGES, extra_headers={"x-request-id": "same-id-every-time"}
        )
        for _ in range(3)
    ]
    gateway_ids = {raw.headers["x-request-id"] for raw in answered}
    assert len(gateway_ids) == 3
    await eventually(lambda: len(stack.rows()) == 3)
    rows = stack.rows()
    assert {row["request_id"] for row in rows} == gateway_ids
    assert {orjson.loads(row["labels"])["client_request_id"] for row in rows} == {"same-id-every-time"}


async def _send(gateway: RunningGateway, key: str, count: int, prefix: str) -> None:
    """`count` non-streaming requests, 20 at a time, each with its own request id."""
    limit = asyncio.Semaphore(20)
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            async with limit:
                headers = {"Authorization": f"Bearer {key}", "x-request-id": f"{prefix}-{i}"}
                body = {"model": "demo", "messages": MESSAGES}
                async with session.post(gateway.base_url + "/chat/completions", json=body, headers=headers) as resp:
                    assert resp.status == 200, await resp.text()

        await asyncio.gather(*(one(i) for i in range(count)))


async def test_a_stats_outage_of_1000_requests_loses_nothing(secured: RunningGateway, stack: Stack) -> None:
    port, db = stack.stats.port, stack.db
    await stack.stats.stop(0)
    await _send(secured, stack.keys["alice"], 1000, f"outage-{secured.mode}")
    stack.stats = await start_stats_server(db, f"127.0.0.1:{port}")
    await eventually(lambda: len(stack.rows()) >= 1000, within=30)
    await asyncio.sleep(0.3)  # any late duplicate delivery would land now
    rows = stack.rows()
    assert len(rows) == 1000
    assert len({row["request_id"] for row in rows}) == 1000
    assert stack.stats.servicer.records_accepted == 1000


async def test_a_restart_with_a_spooled_backlog_loses_nothing(upstream: FakeOpenAI, stack: Stack) -> None:
    """Stats down, gateway stopped: its records go to the spool; the next gateway delivers them."""
    port, db = stack.stats.port, stack.db
    await stack.stats.stop(0)
    config = parse_config(stack.config(upstream), {})
    first = assemble(config).engine
    await first.start()
    params = pb.ChatCompletionParams(model="demo", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hi")])
    for i in range(300):
        ctx = CallContext(request_id=f"spooled-{i}", api_key=Secret(stack.keys["alice"]))
        await first.create_chat_completion(params, ctx)
    await first.close()  # stats still down: everything pending goes to the spool
    assert any(stack.spool.iterdir())

    stack.stats = await start_stats_server(db, f"127.0.0.1:{port}")
    second = assemble(config).engine
    await second.start()
    try:
        await eventually(lambda: len(stack.rows()) >= 300, within=30)
    finally:
        await second.close()
    rows = stack.rows()
    assert sorted(row["request_id"] for row in rows) == sorted(f"spooled-{i}" for i in range(300))


async def test_the_auth_server_sees_the_client_and_the_configured_headers_in_both_modes(
    start_gateway: StartGateway, upstream: FakeOpenAI
) -> None:
    servicer = ScriptedAuth()
    server = await start_grpc_server(
        "127.0.0.1:0", [(AUTH_SERVICE, lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, s))]
    )
    try:
        config = config_for(upstream.base_url).replace(
            "auth: none", f'auth: {{server: "127.0.0.1:{server.port}", headers: [X-Team, x-tenant]}}'
        )
        gateway = await start_gateway(config)
        sdk = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="tgk_k1_secret", max_retries=0)
        await sdk.chat.completions.create(
            model="demo", messages=MESSAGES, extra_headers={"x-team": "ml", "x-other": "not forwarded"}
        )
    finally:
        await server.stop(0)
    (seen,) = servicer.seen
    assert seen.api_key == "tgk_k1_secret"
    assert dict(seen.headers) == {"x-team": "ml"}
    assert seen.client_address == "127.0.0.1"  # the HTTP client's, not the front door's, in split mode too
    assert (seen.model, seen.operation) == ("demo", auth_pb2.OPERATION_CHAT)
    assert seen.request_id.startswith("req_")


async def test_a_key_with_bytes_no_key_has_is_a_401_not_a_500(secured: RunningGateway) -> None:
    host, port = secured.http_url.removeprefix("http://").split(":")
    body = b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}]}'
    for key in (b"sk-\xff\xfe", "sk-\u00e9".encode()):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + b"Authorization: Bearer "
            + key
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n"
            + b"Connection: close\r\n\r\n"
            + body
        )
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b"Invalid API key" in answer
