"""Structured logs: one access line per request with its fields, audit lines, and no secret or PII anywhere after
requests that carry keys and PII, in one process and split."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from gateway.config import parse_config
from gateway.config.telemetry import LogsConfig
from gateway.engine.remote import RemoteEngine
from gateway.frontdoor.app import create_app, start_http_server
from gateway.telemetry.build import config_secrets
from gateway.telemetry.logs import AccessLineHandler, configure_logging
from gateway.telemetry.observer import Telemetry
from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import MODES, UPSTREAM_KEY, config_for
from tests.telemetry.helpers import instrumented

CLIENT_KEY = "sk-client-1234567890abcdef"
OTHER_KEY = "tg-other-key-0987654321"
EMAIL, PHONE, CARD = "jane.doe@example.com", "+1 415 555 0100", "4111 1111 1111 1111"
SECRETS = (CLIENT_KEY, OTHER_KEY, UPSTREAM_KEY, EMAIL, PHONE, CARD, "4111111111111111")
MESSAGES: Any = [{"role": "user", "content": f"I am {EMAIL}, call {PHONE}, card {CARD}."}]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("tollgate.access").setLevel(logging.NOTSET)


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    for handler in logging.getLogger("tollgate.access").handlers:
        handler.flush()  # access lines are written together, a few milliseconds after the first
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("mode", MODES)
async def test_no_secret_reaches_the_log(mode: str, upstream: FakeOpenAI, restore_logging: None) -> None:
    text = config_for(upstream.base_url, extra="telemetry: {audit: {enabled: true, max_bytes: 4KiB}}")
    out = io.StringIO()
    configure_logging(LogsConfig(format="json"), "INFO", config_secrets(parse_config(text, {})), out)
    async with instrumented(mode, text) as gw:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0)
        answer = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        stream = await client.chat.completions.create(model="demo", messages=MESSAGES, stream=True)
        async for _ in stream:
            pass
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{gw.base_url}/chat/completions",
                json={"model": "gpt-4o-mini", "messages": MESSAGES},
                headers={"x-api-key": OTHER_KEY},
            ) as response,
        ):
            assert response.status == 200
        # Code that logs what it should not: the key, in a message and in a traceback.
        logging.getLogger("tollgate.test").warning("upstream key is %s; client sent %s", UPSTREAM_KEY, CLIENT_KEY)
        try:
            raise RuntimeError(f"failed with Authorization: Bearer {CLIENT_KEY} for {EMAIL}")
        except RuntimeError:
            logging.getLogger("tollgate.test").exception("boom")
    lines = _lines(out)  # flushes the pending access lines first
    output = out.getvalue()
    for secret in SECRETS:
        assert secret not in output, secret
    access = [line for line in lines if line["logger"] == "tollgate.access"]
    assert len(access) == 3
    first = access[0]
    assert first["request_id"] == answer.id or first["request_id"].startswith("req_")
    assert first["model"] == "gpt-4o-mini"
    assert first["backend"] == "primary"
    assert first["status"] == 200
    assert answer.usage is not None
    assert first["input_tokens"] == answer.usage.prompt_tokens
    assert first["output_tokens"] == answer.usage.completion_tokens
    assert first["attempts"] == 1
    assert first["cache"] is None  # the model does not cache
    assert first["latency_ms"] > 0
    assert first["ttft_ms"] is None
    assert access[1]["stream"] is True
    assert access[1]["ttft_ms"] > 0
    audits = [line for line in lines if line["logger"] == "tollgate.audit"]
    assert len(audits) == 3
    assert "****" in audits[0]["request_body"]
    assert audits[0]["request_headers"]["Authorization"] == "Bearer ****"
    assert audits[2]["request_headers"]["x-api-key"] == "****"
    assert audits[1]["response_body"] == "(stream)"


def test_text_on_a_terminal_json_otherwise(restore_logging: None) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    configure_logging(LogsConfig(), "INFO", (), tty)
    logging.getLogger("tollgate.test").info("hello %s", EMAIL, extra={"request_id": "req_1"})
    assert tty.getvalue().rstrip().endswith("INFO tollgate.test: hello **** request_id=req_1")
    piped = io.StringIO()
    configure_logging(LogsConfig(), "INFO", (), piped)
    logging.getLogger("tollgate.test").info("hello", extra={"request_id": "req_2"})
    line = orjson.loads(piped.getvalue())
    assert (line["level"], line["logger"], line["msg"], line["request_id"]) == (
        "INFO",
        "tollgate.test",
        "hello",
        "req_2",
    )


async def test_access_log_off(upstream: FakeOpenAI, restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging(LogsConfig(format="json", access_log=False), "INFO", (), out)
    async with instrumented("one-process", config_for(upstream.base_url)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        await client.chat.completions.create(model="demo", messages=MESSAGES)
    assert not [line for line in _lines(out) if line["logger"] == "tollgate.access"]


async def test_audit_survives_a_body_too_large_and_odd_bytes(upstream: FakeOpenAI, restore_logging: None) -> None:
    text = config_for(upstream.base_url, extra="telemetry: {audit: {enabled: true, max_bytes: 64}}")
    out = io.StringIO()
    configure_logging(LogsConfig(format="json"), "INFO", (), out)
    async with instrumented("one-process", text) as gw, aiohttp.ClientSession() as session:
        url = f"{gw.base_url}/chat/completions"
        async with session.post(url, data=b"x" * (65 * 1024), headers={"Content-Type": "application/json"}) as r:
            assert r.status == 413
        async with session.post(url, data=b'{"model": "demo", "messages": "\xff\xfe"}') as r:
            assert r.status == 400
    audits = [line for line in _lines(out) if line["logger"] == "tollgate.audit"]
    assert audits[0]["status"] == 413
    assert audits[0]["request_body"] in ("", "(not read)")  # the oversized body is never read whole
    assert audits[1]["status"] == 400
    assert audits[1]["request_body"].startswith('{"model": "demo"')


def test_a_line_that_cannot_be_json_is_still_one_line(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging(LogsConfig(format="json"), "INFO", (), out)
    logging.getLogger("tollgate.test").warning("odd", extra={"header": "bad \udcff byte", "email": EMAIL})
    (line,) = _lines(out)
    assert line["msg"] == "'odd'"
    assert EMAIL not in out.getvalue()


@pytest.mark.parametrize("mode", MODES)
async def test_what_the_front_door_answers_alone_gets_a_line(
    mode: str, upstream: FakeOpenAI, restore_logging: None
) -> None:
    out = io.StringIO()
    configure_logging(LogsConfig(format="json"), "INFO", (), out)
    async with instrumented(mode, config_for(upstream.base_url)) as gw, aiohttp.ClientSession() as session:
        async with session.post(
            f"{gw.base_url}/chat/completions", data=b"{nope", headers={"x-request-id": "mine"}
        ) as r:
            assert r.status == 400
        async with session.get(f"{gw.http_url}/v2/unknown") as r:
            assert r.status == 404
        async with session.get(f"{gw.base_url}/models") as r:
            assert r.status == 200
        bad = {"model": "demo", "messages": MESSAGES, "temperature": 5}  # refused by the engine before metering
        async with session.post(f"{gw.base_url}/chat/completions", json=bad) as r:
            assert r.status == 400
        for probe in ("/healthz", "/metrics"):
            async with session.get(gw.http_url + probe) as r:
                assert r.status == 200
        async with session.post(f"{gw.base_url}/chat/completions", json={"model": "demo", "messages": MESSAGES}) as r:
            assert r.status == 200
    access = [line for line in _lines(out) if line["logger"] == "tollgate.access"]
    http = [(a["route"], a["status"], a["error_type"]) for a in access if a["msg"] == "http"]
    engine_took_it = [a for a in access if a["msg"] == "request"]
    assert [a["model"] for a in engine_took_it] == ["demo"]  # one line per request: the engine's, with its usage
    assert http[:2] == [("/v1/chat/completions", 400, "invalid_json"), ("/{tail}", 404, "unknown_url")]
    # Calls the engine answers without metering them (list_models, a validation refusal) get the front door's line,
    # in one process and split alike (across the hop, the engine says whether it metered the call).
    assert http[2:] == [("/v1/models", 200, ""), ("/v1/chat/completions", 400, "invalid_parameter")]
    assert next(a for a in access if a["msg"] == "http")["client_request_id"] == "mine"


async def test_an_engine_that_is_down_gets_a_line(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging(LogsConfig(format="json"), "INFO", (), out)
    config = parse_config(config_for("http://127.0.0.1:9"), {})
    remote = RemoteEngine("127.0.0.1:1")
    server = await start_http_server(create_app(remote, config.server, Telemetry(config)), "127.0.0.1:0", config.server)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{server.port}/v1/chat/completions", json={"model": "demo", "messages": MESSAGES}
            ) as r,
        ):
            assert r.status == 503
    finally:
        await server.stop()
        await remote.close()
    (line,) = [line for line in _lines(out) if line["logger"] == "tollgate.access"]
    assert (line["msg"], line["status"], line["route"]) == ("http", 503, "/v1/chat/completions")


async def test_access_lines_are_masked_and_written_together_soon_after(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging(LogsConfig(format="json"), "INFO", ["sk-configured-secret-value"], out)
    (handler,) = logging.getLogger("tollgate.access").handlers
    assert isinstance(handler, AccessLineHandler)
    for own_id in ("sk-configured-secret-value", EMAIL):
        handler.write("request", {"model": f"ask {EMAIL}", "client_request_id": own_id, "status": 200})
    assert out.getvalue() == ""  # pending: one write for both, a moment later
    await asyncio.sleep(AccessLineHandler.FLUSH_SECONDS * 4)
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [line["status"] for line in lines] == [200, 200]
    assert all(line["logger"] == "tollgate.access" and line["msg"] == "request" for line in lines)
    assert EMAIL not in out.getvalue() and "sk-configured-secret-value" not in out.getvalue()
    assert lines[0]["model"] == lines[1]["model"] == "ask ****"


def test_without_an_event_loop_access_lines_are_written_at_once(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging(LogsConfig(format="json"), "INFO", (), out)
    (handler,) = logging.getLogger("tollgate.access").handlers
    assert isinstance(handler, AccessLineHandler)
    handler.write("request", {"model": "demo", "status": 404})
    assert orjson.loads(out.getvalue())["status"] == 404
