"""The reference classifier server: as a real `tollgate routersvc` process (health, reflection-listed service,
Classify), and behind a gateway's `classifier:` rule, with the same fallback when it is down or late."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.call import CallContext
from gateway.config import ConfigError, parse_config
from gateway.engine.core import EngineCore, EngineParts
from gateway.providers.registry import build_providers
from gateway.testing.fake_openai import FakeOpenAI
from routersvc.examples import parse_examples
from routersvc.server import EmbeddingSource, RouterServer, start_router_server
from tests.usage_sink import RecordingSink
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.router.v1 import router_pb2, router_pb2_grpc

EXAMPLES = """
threshold: 0.6
choices:
  strong: ["fix this python stack trace", "write a python function"]
  weak: ["write a poem about the sea"]
"""


@pytest.fixture
async def embeddings() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        fake.word_embeddings = True
        yield fake


@pytest.fixture
async def router(embeddings: FakeOpenAI) -> AsyncIterator[RouterServer]:
    source = EmbeddingSource(embeddings.base_url, "text-embedding-3-small")
    server = await start_router_server(parse_examples(EXAMPLES), source, "127.0.0.1:0")
    yield server
    await server.stop(0)


async def classify(address: str, text: str, choices: tuple[str, ...] = ()) -> router_pb2.ClassifyResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        return await stub.Classify(router_pb2.ClassifyRequest(rule="r", text=text, choices=choices), timeout=5)


async def test_the_cli_serves_health_and_classify(embeddings: FakeOpenAI, tmp_path: Path) -> None:
    examples = tmp_path / "examples.yaml"
    examples.write_text(EXAMPLES)
    args = ["--examples", str(examples), "--embeddings-url", embeddings.base_url]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "routersvc",
        *args,
        "--embedding-model",
        "e",
        "--listen",
        "127.0.0.1:0",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TOLLGATE_LOG_LEVEL": "INFO"},
    )
    try:
        assert process.stderr is not None
        port = None
        while port is None:
            line = (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
            assert line, "routersvc exited"
            found = re.search(r"router listening on [\d.]+:(\d+)", line)
            port = int(found.group(1)) if found else None
        address = f"127.0.0.1:{port}"
        async with grpc.aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service="tollgate.router.v1.RouterService"))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        answer = await classify(address, "please fix this python stack trace")
        assert answer.choice == "strong" and answer.score > 0.9
        assert (await classify(address, "what is the capital of france")).choice == ""
        # Only the request's choices may be picked.
        assert (await classify(address, "please fix this python stack trace", ("weak",))).choice == ""
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0


def test_a_bad_examples_file_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"choices.weak\[0\]: expected a non-blank string"):
        parse_examples("choices: {weak: ['  ']}")
    with pytest.raises(ConfigError, match="threshold"):
        parse_examples("threshold: 2\nchoices: {a: [x]}")


CONFIG = """
backends:
  - {{name: up, provider: openai, base_url: "{chat}"}}
routes:
  - name: strong-weak
    match: {{model: auto}}
    classifier: {{server: "{router}", timeout: 500ms, choices: [strong, weak], default: weak}}
models:
  - {{name: strong, targets: [{{backend: up, model: strong-up}}]}}
  - {{name: weak, targets: [{{backend: up, model: weak-up}}]}}
"""


def ask(text: str) -> pb.ChatCompletionParams:
    return pb.ChatCompletionParams(model="auto", messages=[pb.ChatMessage(role=pb.ROLE_USER, content=text)])


async def test_a_classifier_rule_routes_and_falls_back(router: RouterServer) -> None:
    async with FakeOpenAI(chunks=2) as chat:
        config = parse_config(CONFIG.format(chat=chat.base_url, router=f"127.0.0.1:{router.port}"), os.environ)
        sink = RecordingSink()
        core = EngineCore(config, EngineParts(build_providers(config), usage=sink))
        await core.start()
        try:
            reply = await core.create_chat_completion(ask("please fix this python stack trace"), CallContext("r1"))
            assert reply.model == "strong-up"
            reply = await core.create_chat_completion(ask("hello"), CallContext("r2"))
            assert (reply.model, sink.records[-1].labels["tollgate.route_rule"]) == ("weak-up", "strong-weak>default")
            await router.stop(0)  # the classifier is gone: the default, not an error
            reply = await core.create_chat_completion(ask("please fix this python stack trace"), CallContext("r3"))
            assert (reply.model, sink.records[-1].labels["tollgate.route_rule"]) == ("weak-up", "strong-weak>default")
        finally:
            await core.close()


def test_a_classifier_rule_validates() -> None:
    bad = CONFIG.format(chat="http://127.0.0.1:1/v1", router="127.0.0.1:1").replace("[strong, weak]", "[strong, nope]")
    with pytest.raises(ConfigError, match=r"routes\[0\].classifier: unknown model 'nope'"):
        parse_config(bad, {})
