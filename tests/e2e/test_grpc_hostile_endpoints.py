"""Hostile messages at the gRPC door's endpoints beside chat: valid protobuf saying wrong things (bytes of a valid
request flipped at random, so enum-free fields get NaN, negative counts, `*_json` that is not JSON, huge strings), and
bytes that are no message at all. Never UNKNOWN or INTERNAL: each is the caller's mistake or is served."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError, Message

from gateway.assemble import assemble
from gateway.config import parse_config
from gateway.engine.server import start_engine_server
from gateway.testing.fake_openai import FakeOpenAI
from tests.e2e.test_endpoints_sdk import endpoints_config
from tollgate.gateway.v1 import endpoints_pb2 as ep

SERVICE = "/tollgate.gateway.v1.GatewayService/"
BUGS = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
STREAMS = ("StreamCompletion", "StreamSpeech")
TEMPLATES: dict[str, Message] = {
    "CreateCompletion": ep.CreateCompletionRequest(
        params=ep.CompletionParams(
            model="instruct", prompt=["hello", "there"], max_tokens=3, temperature=0.5, logprobs=1, stop=["x"]
        )
    ),
    "StreamCompletion": ep.StreamCompletionRequest(
        params=ep.CompletionParams(
            model="instruct", prompt_tokens=[ep.PromptTokens(ids=[1, 2, 3])], include_usage=True, n=2
        )
    ),
    "CreateImage": ep.CreateImageRequest(model="dall-e-3", prompt="a fox", n=2, response_format="url", size="1x1"),
    "CreateTranscription": ep.CreateTranscriptionRequest(
        model="whisper-1", file=b"RIFF" + bytes(40), filename="a.wav", response_format="verbose_json", temperature=0.1
    ),
    "StreamSpeech": ep.StreamSpeechRequest(model="tts-1", input="Hello", voice="alloy", speed=1.5),
    "CreateModeration": ep.CreateModerationRequest(model="omni-moderation-latest", input=["kill", "ok"]),
    "Rerank": ep.RerankRequest(model="reranker", query="a fox", documents=["fox", "dog"], top_n=1),
}


@pytest.fixture
async def engine_address(upstream: FakeOpenAI) -> AsyncIterator[str]:
    engine = assemble(parse_config(endpoints_config(upstream.base_url), {})).engine
    await engine.start()
    server = await start_engine_server(engine, "127.0.0.1:0")
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(0)
        await engine.close()


def mutated(method: str, count: int, seed: int) -> Iterator[bytes]:
    """Bytes of `method`'s template with a few bytes changed, kept only when they still parse."""
    rng = random.Random(seed)
    template = TEMPLATES[method]
    data = template.SerializeToString()
    made = 0
    while made < count:
        changed = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            changed[rng.randrange(len(changed))] = rng.randrange(256)
        try:
            type(template)().ParseFromString(bytes(changed))
        except DecodeError:
            continue
        made += 1
        yield bytes(changed)


async def _code(channel: grpc.aio.Channel, method: str, data: bytes) -> grpc.StatusCode:
    try:
        if method in STREAMS:
            call: Any = channel.unary_stream(SERVICE + method)(data, timeout=10)
            async for _ in call:
                pass
        else:
            await channel.unary_unary(SERVICE + method)(data, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_wrong_messages_are_never_a_server_error(engine_address: str) -> None:
    statuses: Counter[str] = Counter()
    problems: list[str] = []
    gate = asyncio.Semaphore(8)
    async with grpc.aio.insecure_channel(engine_address) as channel:

        async def one(method: str, data: bytes) -> None:
            async with gate:
                code = await _code(channel, method, data)
            statuses[f"{method} {code.name}"] += 1
            if code in BUGS:
                problems.append(f"{method} {data!r:.120}: {code.name}")

        cases = [(m, d) for i, m in enumerate(TEMPLATES) for d in mutated(m, 60, seed=i)]
        cases += [(m, d) for m in TEMPLATES for d in (b"\xff\xff\xff\xff", b"\x0a\x10\x0a", b"\x0a\x02\xff\xfe")]
        await asyncio.gather(*(one(method, data) for method, data in cases))
    assert not problems, "\n".join(problems[:20])
    for method in TEMPLATES:  # each RPC both served and refused, or the mutations exercised nothing
        assert statuses[f"{method} OK"] > 0 and statuses[f"{method} INVALID_ARGUMENT"] > 0, statuses
