"""Routing on the prompt through the whole gateway, in both modes: a semantic rule sends prompts to the choice whose
examples they are most like, else to its default; prompt matchers (estimated tokens, features); an embedding server
that stops mid-run sends requests to the default, never fails them.

The fake embedding server's word embeddings (feature hashing of the words) make similarity predictable: cosine =
shared words / sqrt(words of one * words of the other). Each model's target has its own provider model name, which the
fake upstream echoes as the answer's `model`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import UPSTREAM_KEY, StartGateway
from tests.e2e.test_cache import sdk

ROUTES = """
routes:
  - name: by-topic
    match: {model: auto}
    semantic:
      embedding_model: embed
      threshold: 0.6
      timeout: 2s
      choices:
        - {to: coder, examples: ["write a python function", "fix this python stack trace"]}
        - {to: writer, examples: ["write a poem about the sea"]}
      default: chat
  - {name: long, to: big, match: {model: smart, prompt_tokens: {min: 2000}}}
  - {name: tooly, to: tool-model, match: {model: smart, features: [tools]}}
"""


def routed_config(upstream: FakeOpenAI, embedder: FakeOpenAI) -> str:
    models = "\n".join(
        f"  - {{name: {name}, targets: [{{backend: primary, model: {name}-upstream}}]}}"
        for name in ("chat", "coder", "writer", "big", "tool-model", "smart")
    )
    return f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: none
backends:
  - {{name: primary, provider: openai, base_url: "{upstream.base_url}", api_key: {UPSTREAM_KEY}, connect_timeout: 1s}}
  - {{name: embedder, provider: openai, base_url: "{embedder.base_url}", api_key: {UPSTREAM_KEY}, connect_timeout: 1s}}
{ROUTES}
models:
{models}
  - {{name: embed, targets: [{{backend: embedder, model: text-embedding-3-small}}]}}
"""


@pytest.fixture
async def embedder() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=UPSTREAM_KEY) as fake:
        fake.word_embeddings = True
        yield fake


async def served_by(client: openai.AsyncOpenAI, text: str, model: str = "auto", **kwargs: Any) -> str:
    reply = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kwargs)
    return reply.model.removesuffix("-upstream")


async def streamed_by(client: openai.AsyncOpenAI, text: str) -> str:
    stream = await client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": text}], stream=True
    )
    models = {chunk.model async for chunk in stream}
    (model,) = models
    return model.removesuffix("-upstream")


def embedding_calls(embedder: FakeOpenAI) -> list[Any]:
    return [r.json for r in embedder.requests if r.path == "/v1/embeddings"]


async def test_prompts_go_to_their_choice_or_the_default(
    start_gateway: StartGateway, upstream: FakeOpenAI, embedder: FakeOpenAI
) -> None:
    client = sdk(await start_gateway(routed_config(upstream, embedder)))
    # The three examples were embedded once, at start, in one batch.
    (batch,) = embedding_calls(embedder)
    assert len(batch["input"]) == 3
    assert await served_by(client, "please fix this python stack trace") == "coder"  # 0.91 to an example
    assert await served_by(client, "write a python function that adds two numbers") == "coder"  # 0.71
    assert await served_by(client, "write a poem about the blue sea") == "writer"  # 0.93
    assert await streamed_by(client, "write a poem about the blue sea") == "writer"
    assert await served_by(client, "what is the capital of france") == "chat"  # nothing ≥ 0.6: the default
    # One embedding per request, of the last user message alone.
    assert [call["input"] for call in embedding_calls(embedder)[1:]] == [
        ["please fix this python stack trace"],
        ["write a python function that adds two numbers"],
        ["write a poem about the blue sea"],
        ["write a poem about the blue sea"],
        ["what is the capital of france"],
    ]


async def test_prompt_matchers(start_gateway: StartGateway, upstream: FakeOpenAI, embedder: FakeOpenAI) -> None:
    client = sdk(await start_gateway(routed_config(upstream, embedder)))
    assert await served_by(client, "hello", model="smart") == "smart"
    assert await served_by(client, "word " * 2100, model="smart") == "big"  # ~2,600 tokens by the estimate
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    assert await served_by(client, "hello", model="smart", tools=[tool]) == "tool-model"
    # Embeddings never match a rule that reads the prompt.
    reply = await client.embeddings.create(model="embed", input="hello")
    assert len(reply.data) == 1


async def test_embedding_server_stopped_mid_run(
    start_gateway: StartGateway, upstream: FakeOpenAI, embedder: FakeOpenAI
) -> None:
    client = sdk(await start_gateway(routed_config(upstream, embedder)))
    assert await served_by(client, "please fix this python stack trace") == "coder"
    await embedder.stop()
    # The embedding fails: the default serves, nobody sees an error.
    assert await served_by(client, "please fix this python stack trace") == "chat"
    assert await streamed_by(client, "write a poem about the blue sea") == "chat"
