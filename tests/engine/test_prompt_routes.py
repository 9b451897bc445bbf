"""Semantic route rules in the engine, against fake OpenAI servers: the rule and the choice in the usage record and
the metrics, access applied to the model chosen, the examples embedded once at start, and every failure (a slow or
failing embedding, examples not embedded yet) counted and sent to the default."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from gateway.auth.principal import ModelAccess, Principal
from gateway.call import CallContext
from gateway.config import parse_config
from gateway.engine.core import EngineCore, EngineParts
from gateway.engine.routes import Caller
from gateway.errors import PermissionDeniedError
from gateway.providers.registry import build_providers
from gateway.telemetry.routing_metrics import RoutingMetrics
from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.usage_sink import RecordingSink
from tollgate.gateway.v1 import gateway_pb2 as pb

CONFIG = """
backends:
  - {{name: up, provider: openai, base_url: "{chat}"}}
  - {{name: emb, provider: openai, base_url: "{embed}", read_timeout: 2s}}
routes:
  - name: by-topic
    match: {{model: auto}}
    semantic:
      embedding_model: embed
      threshold: 0.6
      timeout: 300ms
      choices:
        - {{to: coder, examples: ["write a python function", "fix this python stack trace"]}}
        - {{to: writer, examples: ["write a poem about the sea"]}}
      default: chat
models:
  - {{name: chat, targets: [{{backend: up, model: chat-up}}]}}
  - {{name: coder, targets: [{{backend: up, model: coder-up}}]}}
  - {{name: writer, targets: [{{backend: up, model: writer-up}}]}}
  - {{name: embed, targets: [{{backend: emb, model: text-embedding-3-small}}]}}
"""

CODE = "please fix this python stack trace"


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeOpenAI]]:
    async with FakeOpenAI(chunks=3) as chat, FakeOpenAI() as embed:
        embed.word_embeddings = True
        yield chat, embed


@pytest.fixture
async def engine(
    fakes: tuple[FakeOpenAI, FakeOpenAI],
) -> AsyncIterator[tuple[EngineCore, RecordingSink, RoutingMetrics]]:
    config = parse_config(CONFIG.format(chat=fakes[0].base_url, embed=fakes[1].base_url), os.environ)
    sink = RecordingSink()
    metrics = RoutingMetrics(CollectorRegistry())
    core = EngineCore(config, EngineParts(build_providers(config), usage=sink, decisions=metrics))
    await core.start()
    yield core, sink, metrics
    await core.close()


def ask(text: str) -> pb.ChatCompletionParams:
    return pb.ChatCompletionParams(model="auto", messages=[pb.ChatMessage(role=pb.ROLE_USER, content=text)])


def count(metrics: RoutingMetrics, name: str, **labels: str) -> float:
    metric = metrics.decisions if name == "decisions" else metrics.decision_failures
    return float(metric.labels(**labels)._value.get())


async def test_the_record_and_the_metric_name_the_rule_and_the_choice(
    engine: tuple[EngineCore, RecordingSink, RoutingMetrics],
) -> None:
    core, sink, metrics = engine
    reply = await core.create_chat_completion(ask(CODE), CallContext(request_id="req_1"))
    assert reply.model == "coder-up"
    reply = await core.create_chat_completion(ask("what is the capital of france"), CallContext(request_id="req_2"))
    assert reply.model == "chat-up"
    assert [r.labels["tollgate.route_rule"] for r in sink.records] == ["by-topic>coder", "by-topic>default"]
    assert count(metrics, "decisions", rule="by-topic", choice="coder") == 1
    assert count(metrics, "decisions", rule="by-topic", choice="default") == 1


async def test_access_applies_to_the_model_chosen(engine: tuple[EngineCore, RecordingSink, RoutingMetrics]) -> None:
    core, _, _ = engine
    no_coder = Principal(key_id="k", access=ModelAccess(("*",), ("coder",)))
    caller = Caller(principal=no_coder)
    # The choice the caller may not use is not a candidate: the prompt goes to the default.
    routes = core._router.routes
    assert await routes.decide(ask(CODE), caller, "req") == ("chat", "by-topic>default")
    only_auto = Principal(key_id="k", access=ModelAccess(("auto", "coder"), ()))
    caller = Caller(principal=only_auto)
    assert await routes.decide(ask(CODE), caller, "req") == ("coder", "by-topic>coder")
    # Not allowed to use the default either: the rule had a model for this prompt, only not one for this caller,
    # and "auto" is no model: a 403, not a 404.
    with pytest.raises(PermissionDeniedError) as denied:
        await routes.decide(ask("what is the capital of france"), caller, "req")
    assert denied.value.code == "model_not_allowed"


async def test_a_slow_or_failing_embedding_falls_back_counted(
    engine: tuple[EngineCore, RecordingSink, RoutingMetrics], fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    core, _, metrics = engine
    fakes[1].latency = 1.0  # past the rule's 300 ms
    reply = await core.create_chat_completion(ask(CODE), CallContext(request_id="req_1"))
    assert reply.model == "chat-up"
    assert count(metrics, "failures", rule="by-topic", reason="timeout") == 1
    fakes[1].latency = 0.0
    fakes[1].add_fault(Fault(status=500, path="/v1/embeddings"))
    reply = await core.create_chat_completion(ask(CODE), CallContext(request_id="req_2"))
    assert reply.model == "chat-up"
    assert count(metrics, "failures", rule="by-topic", reason="embedding_failed") == 1
    reply = await core.create_chat_completion(ask(CODE), CallContext(request_id="req_3"))
    assert reply.model == "coder-up"


async def test_examples_not_embedded_at_start_are_tried_again(fakes: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    config = parse_config(CONFIG.format(chat=fakes[0].base_url, embed=fakes[1].base_url), os.environ)
    core = EngineCore(config, EngineParts(build_providers(config)))
    fakes[1].add_fault(Fault(status=400, error_type="invalid_request_error", path="/v1/embeddings"))
    try:
        await core.start()  # the embedding server refuses: the engine starts anyway
        first = await core.create_chat_completion(ask(CODE), CallContext(request_id="req_1"))
        assert first.model == "chat-up"  # not ready: the default, and another try in the background
        for _ in range(50):
            reply = await core.create_chat_completion(ask(CODE), CallContext(request_id="req_2"))
            if reply.model == "coder-up":
                break
        assert reply.model == "coder-up"
    finally:
        await core.close()
