"""Faults a fake HTTP provider cannot produce, through the real front door and servicer: a scripted provider."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator

import aiohttp
import orjson
import pytest

from gateway.config import BackendConfig, parse_config
from gateway.engine.core import EngineCore, EngineParts
from gateway.engine.remote import RemoteEngine
from gateway.engine.server import start_engine_server
from gateway.frontdoor.app import create_app, start_http_server
from tollgate.gateway.v1 import gateway_pb2 as pb

CONFIG = """
listen: {http: "127.0.0.1:0", grpc: "127.0.0.1:0"}
backends: [{name: scripted, provider: mock}]
models: [{name: m, targets: [{backend: scripted}]}]
"""
SECRET = "sk-leaked-in-an-exception"


class ScriptedProvider:
    """Yields the scripted chunks, then raises what it was told to."""

    def __init__(self, chunks: list[pb.StreamChatCompletionResponse], error: Exception | None) -> None:
        self.backend = BackendConfig(name="scripted", provider="scripted")
        self.chunks, self.error = chunks, error

    async def stream(
        self, model: str, params: pb.ChatCompletionParams
    ) -> AsyncGenerator[pb.StreamChatCompletionResponse, None]:
        for chunk in self.chunks:
            yield chunk
        if self.error is not None:
            raise self.error

    async def complete(self, model: str, params: pb.ChatCompletionParams) -> pb.CreateChatCompletionResponse:
        raise RuntimeError(SECRET)

    async def embed(self, model: str, request: pb.CreateEmbeddingsRequest) -> pb.CreateEmbeddingsResponse:
        raise NotImplementedError

    async def close(self) -> None:
        pass


def content(text: str) -> pb.StreamChatCompletionResponse:
    return pb.StreamChatCompletionResponse(id="c", model="m", choices=[pb.ChunkChoice(delta=pb.Delta(content=text))])


def usage_only() -> pb.StreamChatCompletionResponse:
    return pb.StreamChatCompletionResponse(id="c", model="m", usage=pb.Usage(prompt_tokens=1, total_tokens=1))


@pytest.fixture(params=["one-process", "split"])
async def serve(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    servers: list[object] = []

    async def start(provider: ScriptedProvider) -> str:
        config = parse_config(CONFIG, os.environ)
        engine = EngineCore(config, EngineParts({"scripted": provider}))
        grpc_server = await start_engine_server(engine, "127.0.0.1:0")
        front = RemoteEngine(f"127.0.0.1:{grpc_server.port}") if request.param == "split" else engine
        http = await start_http_server(create_app(front, config.server), "127.0.0.1:0", config.server)
        servers.extend([grpc_server, http, front])
        return f"http://127.0.0.1:{http.port}/v1/chat/completions"

    yield start
    for server in reversed(servers):
        if isinstance(server, RemoteEngine):
            await server.close()
        elif hasattr(server, "runner"):
            await server.stop()  # type: ignore[attr-defined]
        elif hasattr(server, "server"):
            await server.stop(0)  # type: ignore[attr-defined]


async def post(url: str, stream: bool) -> tuple[int, bytes]:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": stream}
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        return resp.status, await resp.read()


async def test_a_bug_mid_stream_is_an_in_band_error(serve) -> None:  # type: ignore[no-untyped-def]
    url = await serve(ScriptedProvider([content("a"), content("b")], RuntimeError(SECRET)))
    status, body = await post(url, stream=True)
    assert status == 200
    events = [line[6:] for line in body.split(b"\n\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    error = orjson.loads(events[-2])["error"]
    assert error["type"] == "server_error"
    assert SECRET not in body.decode()
    assert len(events) == 4  # two chunks, the error, [DONE]


async def test_a_bug_in_a_whole_completion_never_leaks(serve) -> None:  # type: ignore[no-untyped-def]
    url = await serve(ScriptedProvider([], None))
    status, body = await post(url, stream=False)
    assert status == 500
    assert SECRET not in body.decode()
    assert orjson.loads(body)["error"]["message"].startswith("Internal error")


async def test_a_stream_with_no_choices_is_a_bad_gateway(serve) -> None:  # type: ignore[no-untyped-def]
    url = await serve(ScriptedProvider([usage_only()], None))
    status, body = await post(url, stream=True)
    assert status == 502, body
    assert "streamed no choices" in orjson.loads(body)["error"]["message"]
