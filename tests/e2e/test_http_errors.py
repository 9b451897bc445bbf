"""Every failure reaches the client as an OpenAI-shaped error with the right status, in both modes."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from multidict import CIMultiDict

from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.conftest import RunningGateway, StartGateway, config_for

MESSAGES = [{"role": "user", "content": "hello"}]


def client(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, timeout=10)


async def post(
    gateway: RunningGateway, body: bytes, path: str = "/v1/chat/completions"
) -> tuple[int, Any, CIMultiDict[str]]:
    async with aiohttp.ClientSession() as session, session.post(gateway.http_url + path, data=body) as resp:
        return resp.status, orjson.loads(await resp.read()), CIMultiDict(resp.headers)


async def test_unknown_model(gateway: RunningGateway) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await client(gateway).chat.completions.create(model="nope", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert "nope" in info.value.message


async def test_bad_parameter(gateway: RunningGateway) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client(gateway).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=5)  # type: ignore[arg-type]
    assert info.value.body["param"] == "temperature"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_parameter"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "missing_model"),
        (b'{"model": "gpt-4o-mini", "messages": "hi"}', 400, "invalid_parameter"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "n": 1e400}', 400, "invalid_json"),
        (b"\xff\xfe\x00garbage", 400, "invalid_json"),
        (b"[" * 5000 + b"]" * 5000, 400, "invalid_json"),
        (
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "' + b"x" * 70_000 + b'"}]}',
            413,
            "request_too_large",
        ),
    ],
    ids=["malformed", "empty", "array", "no-model", "messages-string", "huge-number", "not-utf8", "deep", "too-large"],
)
async def test_bad_bodies(gateway: RunningGateway, body: bytes, status: int, code: str) -> None:
    got, answer, headers = await post(gateway, body)
    assert got == status
    assert answer["error"]["code"] == code
    assert answer["error"]["type"] == "invalid_request_error"
    assert headers["x-request-id"]


async def test_hostile_bodies_never_5xx(gateway: RunningGateway) -> None:
    """Mutated requests through the whole server: every answer is a 2xx or a 4xx with an OpenAI error body."""
    rng = random.Random(7)
    base = {"model": "demo", "messages": [{"role": "user", "content": "x"}], "temperature": 0.5, "stop": ["a"]}
    values: list[object] = [None, True, -1, 2**70, 1.5, "", "x", [], {}, [None], {"a": []}]
    async with aiohttp.ClientSession() as session:
        for _ in range(150):
            body: dict[str, object] = orjson.loads(orjson.dumps(base))
            for _ in range(rng.randint(1, 3)):
                key = rng.choice([*body.keys(), "tools", "tool_choice", "n", "max_tokens", "response_format"])
                body[key] = rng.choice(values)
            async with session.post(gateway.http_url + "/v1/chat/completions", data=json.dumps(body)) as resp:
                answer = orjson.loads(await resp.read())
                assert resp.status < 500, (body, answer)
                assert resp.status == 200 or set(answer["error"]) == {"message", "type", "param", "code"}


async def test_request_id_is_always_the_gateways_own(gateway: RunningGateway) -> None:
    # A caller's id cannot be the key usage is deduplicated on; it is kept on the usage record instead.
    async with aiohttp.ClientSession() as session:
        ids = []
        for _ in range(2):
            async with session.post(
                gateway.base_url + "/chat/completions",
                json={"model": "demo", "messages": MESSAGES},
                headers={"x-request-id": "my-trace-1"},
            ) as resp:
                assert resp.status == 200
                ids.append(resp.headers["x-request-id"])
        assert ids[0] != ids[1]
        assert all(i.startswith("req_") for i in ids)
        async with session.get(gateway.http_url + "/no/such/path") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "unknown_url"


async def test_upstream_429_keeps_retry_after(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    upstream.add_fault(Fault(status=429, error_type="requests", code="rate_limit_exceeded", retry_after="7"))
    with pytest.raises(openai.RateLimitError) as info:
        await client(gateway).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        (Fault(status=500), openai.InternalServerError, 502),
        (Fault(status=503), openai.InternalServerError, 503),
        (Fault(reset=True), openai.InternalServerError, 502),
        (Fault(status=401, code="invalid_api_key"), openai.InternalServerError, 502),
    ],
    ids=["500", "503", "reset", "upstream-key-refused"],
)
async def test_upstream_failures(
    gateway: RunningGateway, upstream: FakeOpenAI, fault: Fault, error: type[openai.APIStatusError], status: int
) -> None:
    upstream.add_fault(fault)
    with pytest.raises(error) as info:
        await client(gateway).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.status_code == status


async def test_upstream_rejects_request(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    upstream.add_fault(
        Fault(
            status=400, error_type="invalid_request_error", message="context too long", code="context_length_exceeded"
        )
    )
    with pytest.raises(openai.BadRequestError) as info:
        await client(gateway).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert "context too long" in info.value.message


async def test_upstream_hang_times_out(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    gateway = await start_gateway(config_for(upstream.base_url, read_timeout="300ms"))
    upstream.add_fault(Fault(hang=3))
    with pytest.raises(openai.APIStatusError) as info:
        await client(gateway).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.status_code == 504


async def test_stall_after_first_byte_is_an_in_band_error(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    gateway = await start_gateway(config_for(upstream.base_url, read_timeout="300ms"))
    upstream.add_fault(Fault(stall_after_chunks=3))
    stream = await client(gateway).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    received: list[str] = []
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert sum(1 for r in received if r) == 3
    assert "did not answer in time" in info.value.message


async def test_client_disconnect_cancels_upstream(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    upstream.chunks, upstream.chunk_delay = 200, 0.02
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            gateway.base_url + "/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
        )
        await resp.content.readline()
        resp.close()  # the client goes away mid-stream
    for _ in range(100):
        if upstream.disconnects:
            break
        await asyncio.sleep(0.02)
    assert upstream.disconnects == 1, "the upstream saw its connection close"
    assert upstream.completed_streams == 0


async def test_upstream_credential_errors_do_not_echo_the_provider(
    gateway: RunningGateway, upstream: FakeOpenAI
) -> None:
    # Providers quote part of the key they refused; that is the gateway's key, and no client may see it.
    upstream.add_fault(Fault(status=401, code="invalid_api_key", message="Incorrect API key provided: sk-upst****cret"))
    with pytest.raises(openai.InternalServerError) as info:
        await client(gateway).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.status_code == 502
    assert "sk-" not in info.value.message
    assert info.value.body["code"] == "upstream_credentials_rejected"  # type: ignore[index]


async def test_health_and_readiness(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as session:
        for path, status in (("/healthz", "ok"), ("/readyz", "ready")):
            async with session.get(gateway.http_url + path) as resp:
                assert resp.status == 200
                assert (await resp.json())["status"] == status
                assert resp.headers["x-request-id"]
