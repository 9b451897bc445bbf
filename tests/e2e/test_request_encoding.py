"""Compressed request bodies: decoded by the front door itself (gateway.frontdoor.body), so a body that is not what
its Content-Encoding says, a truncated one, one over the body limit once decompressed, or an encoding the gateway
does not take each get the front door's own 4xx, never a 500, a plain-text 400 or a logged traceback."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import RunningGateway

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


def _shape_problem(path: str, status: int, payload: Any) -> str | None:
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return f"no error object: {payload!r}"
    if path == MESSAGES and payload.get("type") != "error":
        return f"not an Anthropic error body: {payload!r}"
    return None


def _compressed(body: bytes, encoding: str) -> bytes:
    return gzip.compress(body) if encoding == "gzip" else zlib.compress(body)


async def _post(gateway: RunningGateway, path: str, body: bytes, encoding: str) -> tuple[int, Any]:
    headers = {"content-type": "application/json", "content-encoding": encoding}
    async with (
        aiohttp.ClientSession() as session,
        session.post(gateway.http_url + path, data=body, headers=headers) as resp,
    ):
        return resp.status, orjson.loads(await resp.read())


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("path", [CHAT, MESSAGES])
async def test_a_body_that_is_not_what_its_content_encoding_says_is_a_4xx(
    gateway: RunningGateway, path: str, encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    valid = json.dumps(
        {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    status, payload = await _post(gateway, path, _compressed(valid, encoding), encoding)
    assert status == 200, payload  # a real compressed body still works
    bomb = _compressed(b" " * (2 * 1024 * 1024) + valid, encoding)  # 2 MiB once decompressed, 64 KiB allowed
    cases = [
        (valid, encoding, 400, "is not valid"),
        (_compressed(valid, encoding)[:-12], encoding, 400, "truncated"),
        (bomb, encoding, 413, "once decompressed"),
        (valid, "br", 415, "only gzip and deflate"),
    ]
    for body, sent_as, status, words in cases:
        got, payload = await _post(gateway, path, body, sent_as)
        assert (got, _shape_problem(path, got, payload)) == (status, None), payload
        assert words in payload["error"]["message"]
    # The server's loggers only: a client an earlier test left to the garbage collector may log on its own.
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith(("tollgate", "aiohttp"))]
